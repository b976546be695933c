"""The image cache: every distinct image of a prepared data set, decoded once and stored as its uint8 CLIP
crop, so that training reads rows of one memory-mapped array instead of decoding JPEGs.

    <data_dir>/image-cache/<size>/pixels.npy   uint8 (N, size, size, 3), RGB: `clip_crop` of each image
    <data_dir>/image-cache/<size>/images.json  the image path (as in the parquet files) of each row
    <data_dir>/image-cache/<size>/cache.json   size, rows, bytes, and the image rule's version

Images shared by many pairs (SNLI-VE: ~31k Flickr30k images for ~565k pairs) have one row. The crop is
exactly what the JPEG path computes (the same function), so the two paths give identical pixels; a cache
made under another image rule (RULE_VERSION) or size is not used. `mitp data prepare --cache-size` fills it
in the pass that checks every image anyway; `mitp data cache` adds one to a prepared folder.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from ..files.atomic import atomic_write_json, build_directory
from ..errors import MitpError
from ..files.outputs import add_entries
from ..runtime.preprocess import MAX_PIXELS, RULE_VERSION, ImageError, clip_crop, decoded_rgb, opened_image

CACHE_DIR = "image-cache"
PIXELS, IMAGES, INFO = "pixels.npy", "images.json", "cache.json"


class CacheError(MitpError, ValueError):
    """An image cannot be cached, or a cache is unusable; the message says which."""


def cache_dir(data_dir: Path, size: int) -> Path:
    return Path(data_dir) / CACHE_DIR / str(size)


PIXELS_IN_FLIGHT = 2 * MAX_PIXELS  # decoded at once, across all workers: a decode peaks near 16 bytes a pixel (~2.9 GB)


class PixelBudget:
    """At most `capacity` pixels being decoded at once, however many workers: eight threads on eight
    images at the pixel limit would need about 11 GB; within the budget they wait their turn."""

    def __init__(self, capacity: int):
        self.capacity, self.used = capacity, 0
        self._changed = threading.Condition()

    @contextmanager
    def hold(self, pixels: int) -> Iterator[None]:
        pixels = min(max(pixels, 0), self.capacity)
        with self._changed:
            self._changed.wait_for(lambda: self.used + pixels <= self.capacity)
            self.used += pixels
        try:
            yield
        finally:
            with self._changed:
                self.used -= pixels
                self._changed.notify_all()


def decode_all(
    paths: list[Path], size: int | None, workers: int, progress: Callable | None = None, pixels: np.ndarray | None = None
) -> dict[Path, ImageError]:
    """Decode every image once in threads (Pillow releases the GIL); with `pixels` (N, size, size, 3), also
    store row i's crop. Returns the images that could not be used, with why."""
    budget = PixelBudget(PIXELS_IN_FLIGHT)

    def work(index_path: tuple[int, Path]) -> tuple[Path, ImageError | None]:
        index, path = index_path
        try:
            with opened_image(path) as opened, budget.hold(opened.width * opened.height):  # one open: header, then decode
                image = decoded_rgb(opened)
                if pixels is not None and size is not None:
                    pixels[index] = clip_crop(image, size)
                del image
        except ImageError as err:
            return path, err
        return path, None

    problems: dict[Path, ImageError] = {}
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for done, (path, problem) in enumerate(pool.map(work, enumerate(paths)), start=1):
            if problem is not None:
                problems[path] = problem
            if progress:
                progress(done, len(paths))
    return problems


def write_cache(folder: Path, data_dir: Path, images: Iterable[Path], size: int, workers: int, progress: Callable | None = None) -> tuple[dict, dict[Path, ImageError]]:
    """Build the cache of `images` (absolute paths under `data_dir`) in `folder` (a fresh folder); returns
    its summary and the images that could not be cached (their rows are dropped from images.json)."""
    paths = sorted(set(images))
    folder.mkdir(parents=True, exist_ok=True)
    sized = np.lib.format.open_memmap(folder / PIXELS, mode="w+", dtype=np.uint8, shape=(len(paths), size, size, 3))
    del sized  # the header written and the file sized (sparse) ...
    reserve(folder / PIXELS)  # ... its blocks allocated now, or a message, before anything is mapped
    pixels = np.load(folder / PIXELS, mmap_mode="r+")  # (N, S, S, 3) uint8
    problems = decode_all(paths, size, workers, progress, pixels)
    pixels.flush()
    del pixels
    names = [os.path.relpath(path, data_dir) if path not in problems else None for path in paths]
    (folder / IMAGES).write_text(json.dumps(names))
    summary = {
        "size": size,
        "rule_version": RULE_VERSION,
        "rows": len(paths),
        "images": len(paths) - len(problems),
        "bytes_on_disk": (folder / PIXELS).stat().st_size,
    }
    atomic_write_json(folder / INFO, summary)
    return summary, problems


def reserve(path: Path) -> None:
    """Allocate the memory-mapped file's blocks now: writing into a sparse map on a full disk is a SIGBUS
    that kills the process, while a failed allocation is an error with a message (and the build's folder
    is removed)."""
    needed = path.stat().st_size
    free = shutil.disk_usage(path.parent).free
    try:
        with open(path, "r+b") as f:
            os.posix_fallocate(f.fileno(), 0, needed)
    except OSError as err:
        if err.errno in (errno.ENOSPC, errno.EDQUOT):
            raise CacheError(
                f"the image cache needs {needed / 2**30:.2f} GiB and {path.parent} has {free / 2**30:.2f} GiB free: "
                f"free space, or prepare without --cache-size (training then decodes JPEGs, slower)"
            ) from err
        if err.errno not in (errno.EOPNOTSUPP, errno.EINVAL):  # a file system that cannot preallocate: write as before
            raise


def build_cache(data_dir: Path, size: int, workers: int = 8, progress: Callable | None = None) -> dict:
    """`mitp data cache`: add (or replace) the cache of one size to a prepared folder."""
    import pyarrow.parquet as pq

    data_dir = Path(data_dir)
    images: set[Path] = set()
    for split in ("train", "val", "test"):
        path = data_dir / f"{split}.parquet"
        if not path.is_file():
            raise CacheError(f"{path} not found: prepare the data set first (mitp data prepare)")
        images.update(data_dir / name for name in pq.read_table(path, columns=["image"]).column("image").to_pylist())
    with build_directory(cache_dir(data_dir, size)) as tmp:
        summary, problems = write_cache(tmp, data_dir, images, size, workers, progress)
        if problems:
            first, err = next(iter(problems.items()))
            raise CacheError(f"{len(problems)} image(s) cannot be decoded, e.g. {first}: {err}; prepare the data set again")
    add_entries(data_dir, [CACHE_DIR])  # part of the prepared folder now: a later prepare may replace it
    return summary


class ImageCache:
    """A cache opened for reading: `rows(names)` maps image paths to rows of the memory-mapped pixels."""

    def __init__(self, folder: Path):
        info = json.loads((folder / INFO).read_text())
        self.size, self.folder = info["size"], folder
        self.pixels = np.load(folder / PIXELS, mmap_mode="r")  # (N, S, S, 3) uint8, read on demand
        self.index = {name: row for row, name in enumerate(json.loads((folder / IMAGES).read_text())) if name is not None}

    @classmethod
    def open(cls, data_dir: Path, size: int) -> ImageCache | None:
        """The data set's cache of this size, or None if there is none usable (the JPEG path is used then)."""
        folder = cache_dir(data_dir, size)
        try:
            info = json.loads((folder / INFO).read_text())
        except (OSError, ValueError):
            return None
        if info.get("size") != size or info.get("rule_version") != RULE_VERSION:
            return None
        return cls(folder)

    def rows(self, names: list[str]) -> np.ndarray | None:
        """Row of each image name, or None if any is missing (the cache is from another preparation)."""
        try:
            return np.array([self.index[name] for name in names], dtype=np.int64)
        except KeyError:
            return None
