"""Fetch the raw data sets: resumable HTTP downloads, checksums, safe extraction, manual placement.

Files arrive through mitp.files.fetch (resumable, checked before their final rename). An archive is extracted into a hidden temporary folder that is renamed when extraction has finished, so a
killed extraction is simply redone; `.extracted-<file>` then records that file as unpacked. A data set is
ready only when every one of its files is unpacked, its completion record (`.mitp-download.json`, written
last) lists them, and its layout holds every path the preparation reads. The offline twins are
"downloaded" by generating them.
"""

from __future__ import annotations

import base64
import errno
import gzip
import http.client
import json
import os
import shutil
import tarfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..files.atomic import atomic_write_json
from ..files.fetch import CHUNK, DownloadError, TransientDownloadError, archive_problem, fetch
from ..errors import MitpError
from ..files.outputs import build_output, claim, mark, marker_kind


@dataclass(frozen=True)
class Source:
    url: str
    filename: str
    sha256: str | None = None


KAGGLE_FOOD101 = "https://www.kaggle.com/api/v1/datasets/download/gianmarco96/upmcfood101"
ALLENNLP_SNLIVE = "https://storage.googleapis.com/allennlp-public-data/snli-ve"
SOURCES: dict[str, list[Source]] = {
    "mmimdb": [
        Source(
            "https://archive.org/download/mmimdb/mmimdb.tar.gz",
            "mmimdb.tar.gz",
            sha256="7facb412f84e8e707cf5c15bb58e4cf3ac12d33e6e944e1bdefebada1259a253",
        )
    ],
    "snlive": [
        *(Source(f"{ALLENNLP_SNLIVE}/snli_ve_{s}.jsonl.gz", f"snli_ve_{s}.jsonl.gz") for s in ("train", "dev", "test")),
        Source(f"{ALLENNLP_SNLIVE}/flickr30k_images.tar.gz", "flickr30k_images.tar.gz"),
    ],
}
# A file inside each raw layout that proves the data set is in place (searched a few levels down).
MARKERS = {
    "food101": "texts/train_titles.csv",
    "mmimdb": "mmimdb/split.json",
    "snlive": "snli_ve_train.jsonl",
}
# Every path (under the layout's root) that preparation reads: a layout missing one is not complete.
REQUIRED = {
    "food101": ("texts/train_titles.csv", "texts/test_titles.csv", "images/train", "images/test"),
    "mmimdb": ("mmimdb/split.json", "mmimdb/dataset"),
    "snlive": ("snli_ve_train.jsonl", "snli_ve_dev.jsonl", "snli_ve_test.jsonl", "flickr30k_images"),
}
RECORD = ".mitp-download.json"  # written last: the data set's files, each fetched whole and unpacked
TWIN_RECORD = ".complete"  # a twin's: its name and seed
MANUAL_FOOD101 = (
    "UPMC-Food101 needs Kaggle credentials (KAGGLE_USERNAME and KAGGLE_KEY, or ~/.kaggle/kaggle.json), "
    "or a manual download: get https://www.kaggle.com/datasets/gianmarco96/upmcfood101, unpack it into {raw} "
    "so that {raw}/images/train/<class>/*.jpg and {raw}/texts/train_titles.csv exist, then run this again."
)


def find_layout_root(raw: Path, marker: str, depth: int = 3) -> Path | None:
    """The folder under `raw` (itself or up to `depth` levels down) that holds `marker` (file or folder).
    Hidden folders (a killed unpack's `.extracting-*`) are never searched."""
    frontier = [raw]
    for _ in range(depth + 1):
        for folder in frontier:
            if (folder / marker).exists():
                return folder
        frontier = [
            child for folder in frontier if folder.is_dir() for child in sorted(folder.iterdir())
            if child.is_dir() and not child.name.startswith(".")
        ]
    return None


def layout_problem(name: str, raw: Path) -> str | None:
    """Why `raw` does not hold data set `name` (an upstream name) ready to prepare, or None when it does:
    a download of mitp's not finished (a file missing from its record, a `.part` left), or a path the
    preparation reads missing from the layout."""
    raw = Path(raw)
    if marker_kind(raw) == "raw" and not (raw / RECORD).is_file() and not (raw / TWIN_RECORD).is_file():
        parts = sorted(p.name for p in (raw / "downloads").glob("*.part")) if (raw / "downloads").is_dir() else []
        unfinished = f" ({', '.join(parts)} not finished)" if parts else ""
        return f"the download of {name} into {raw} is not complete{unfinished}: run `mitp data download {name}` again"
    root = find_layout_root(raw, MARKERS[name])
    if root is None:
        return f"{raw} does not hold the {name} layout (no {MARKERS[name]})"
    missing = [path for path in REQUIRED[name] if find_layout_root(root, path, depth=2) is None]
    if missing:
        return f"the {name} layout in {root} lacks {', '.join(missing)}"
    return None


def download_dataset(name: str, raw: Path, progress: Callable | None = None, seed: int = 0) -> Path:
    """Put data set `name` in its upstream layout under `raw`; returns the layout's root folder."""
    from .twins import TWINS, make_twin

    raw = Path(raw)
    if name in TWINS:
        stamp = f"generated {name} seed {seed}\n"  # a twin of another name or seed is generated anew
        complete = raw / ".complete"
        if marker_kind(raw) != "raw" or not complete.is_file() or complete.read_text() != stamp:
            with build_output(raw, "raw", option="--raw") as tmp:
                make_twin(name, tmp, seed=seed)
                (tmp / ".complete").write_text(stamp)
        return raw
    if name not in MARKERS:
        raise DownloadError(f"unknown data set {name!r}; allowed: {', '.join([*MARKERS, *TWINS])}")
    problem = layout_problem(name, raw)
    if problem is None:
        return find_layout_root(raw, MARKERS[name]) or raw  # complete (downloaded, or unpacked by hand): nothing written
    if raw.is_dir() and any(raw.iterdir()) and marker_kind(raw) != "raw":
        raise DownloadError(f"{problem}; complete it by hand, or give an empty --raw folder for mitp to download into")
    claim(raw, "raw", option="--raw")
    raw.mkdir(parents=True, exist_ok=True)
    mark(raw, "raw")
    (raw / RECORD).unlink(missing_ok=True)  # rewritten once every file is in
    if name == "food101":
        sources, headers = [Source(KAGGLE_FOOD101, "upmcfood101.zip")], _kaggle_headers(raw)
    else:
        sources, headers = SOURCES[name], {}
    files = {}
    for source in sources:
        archive = raw / "downloads" / source.filename
        if not (raw / f".extracted-{source.filename}").is_file():  # fetched whole and unpacked already: skipped
            archive = fetch(source.url, archive, source.sha256, headers, progress)
            extract(archive, raw)  # every upstream file is an archive or a gzip
        files[source.filename] = {"url": source.url, "bytes": archive.stat().st_size if archive.is_file() else None, "sha256": source.sha256, "unpacked": True}
    atomic_write_json(raw / RECORD, {"dataset": name, "files": files})
    problem = layout_problem(name, raw)
    if problem is not None:
        raise DownloadError(f"downloaded every file of {name}, but {problem}: the upstream layout changed?")
    return find_layout_root(raw, MARKERS[name]) or raw


def download_dataset_resuming(
    name: str, raw: Path, retries: int, seed: int = 0, progress: Callable | None = None,
    on_retry: Callable[[TransientDownloadError, int], object] | None = None,
) -> Path:
    """`download_dataset`, resuming an interrupted download up to `retries` times (1, 2, 4... s apart, at most
    30 s). Only interruptions are retried: a refusal, a missing credential or an unreachable host is raised
    at once. `on_retry(error, attempt)` hears of each retry (attempt 2 is the first)."""
    for attempt in range(retries):
        try:
            return download_dataset(name, raw, progress=progress, seed=seed)
        except TransientDownloadError as err:
            if on_retry is not None:
                on_retry(err, attempt + 2)
            time.sleep(min(2**attempt, 30))
    return download_dataset(name, raw, progress=progress, seed=seed)  # the last try: its error is the caller's


def _kaggle_headers(raw: Path) -> dict[str, str]:
    user, key = os.environ.get("KAGGLE_USERNAME"), os.environ.get("KAGGLE_KEY")
    config = Path(os.environ.get("KAGGLE_CONFIG_DIR", Path.home() / ".kaggle")) / "kaggle.json"
    if not (user and key) and config.is_file():
        try:
            credentials = json.loads(config.read_text())
            user, key = credentials["username"], credentials["key"]
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise DownloadError(f"{config} is not a valid Kaggle credentials file: {err}") from err
    if not (user and key):
        raise DownloadError(MANUAL_FOOD101.format(raw=raw))
    token = base64.b64encode(f"{user}:{key}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


class _NotJsonLines(ValueError):
    """A .jsonl that is not JSON lines (an error page, gzipped)."""


def _check_json_lines(path: Path) -> None:
    with open(path, "rb") as f:
        first = next((line for line in f if line.strip()), b"")
    try:
        if not isinstance(json.loads(first), dict):
            raise ValueError("not an object")
    except (ValueError, UnicodeDecodeError) as err:
        raise _NotJsonLines(f"{path.name} is not JSON lines: its first line starts {first[:40]!r}") from err


def _extract_tar(tar: tarfile.TarFile, into: Path) -> None:
    """Unpack with tarfile's "data" filter (absolute paths, links out of the folder and device files refused);
    Pythons before 3.11.4 lack it, and get the same refusals here."""
    if hasattr(tarfile, "data_filter"):
        tar.extractall(into, filter="data")
        return
    for member in tar.getmembers():
        parts = Path(member.name).parts
        target = os.path.normpath(os.path.join(os.path.dirname(member.name), member.linkname)) if member.issym() else member.linkname
        leaves = member.name.startswith("/") or ".." in parts
        leaves |= (member.issym() or member.islnk()) and (target.startswith("/") or ".." in Path(target).parts)
        if leaves or member.isdev():
            raise tarfile.TarError(f"{member.name} would be written outside the archive's folder, or is a device")
    tar.extractall(into)


def extract(archive: Path, into: Path) -> None:
    """Unpack a .tar(.gz)/.zip archive, or gunzip a single .gz file, into `into` (atomically per archive).
    A damaged archive is removed (the rerun fetches it again); one that fails for want of space is kept."""
    marker = into / f".extracted-{archive.name}"
    if marker.is_file():
        return
    tmp = into / f".extracting-{archive.name}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        if tarfile.is_tarfile(archive):
            with tarfile.open(archive) as tar:
                _extract_tar(tar, tmp)
        elif zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                zf.extractall(tmp)
        elif archive.suffix == ".gz":
            with gzip.open(archive, "rb") as src, open(tmp / archive.stem, "wb") as dst:
                shutil.copyfileobj(src, dst, CHUNK)
            if archive.stem.endswith(".jsonl"):
                _check_json_lines(tmp / archive.stem)
        else:
            raise DownloadError(f"{archive}: not a tar, zip or gzip file")
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, gzip.BadGzipFile, _NotJsonLines) as err:
        shutil.rmtree(tmp, ignore_errors=True)
        archive.unlink(missing_ok=True)  # damaged: the next run downloads it again instead of failing here forever
        raise DownloadError(f"cannot extract {archive} ({err}); it was removed: run the command again to download it again") from err
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)  # the archive is whole: kept, so that nothing is fetched again
        if err.errno in (errno.ENOSPC, errno.EDQUOT):
            free = shutil.disk_usage(into).free
            raise DownloadError(
                f"no space left to unpack {archive} ({archive.stat().st_size / 1e9:.1f} GB packed; {free / 1e9:.1f} GB free "
                f"under {into}); the archive was kept: free space (unpacked it needs more than its packed size), then run again"
            ) from err
        raise DownloadError(f"cannot unpack {archive} into {into} ({err}); the archive was kept: fix that, then run again") from err
    for child in tmp.iterdir():
        target = into / child.name
        if target.exists():
            shutil.rmtree(target) if target.is_dir() else target.unlink()
        os.replace(child, target)
    tmp.rmdir()
    marker.write_text("ok\n")
