"""How fast images reach the model: the JPEG path (decode, CLIP resize and crop) against the image cache
(a row of a memory-mapped uint8 array), per core and through the whole DataLoader, on this machine.

The images are photo-like 512 x 384 JPEGs made here (smooth light, textures, edges and noise, quality 90:
40-90 KB each, like web photos), so nothing is downloaded. Each figure is the median of --repeats passes
over the images in a shuffled order, after one warm-up pass (the cache is then in the page cache, as it is
during training after the first epoch).

    python benchmarks/loader.py --images 400 --workers 0,1,2
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter


def photo(rng: np.random.Generator, width: int = 512, height: int = 384) -> Image.Image:
    """A photo-like image: a smooth lit background, shapes with edges, texture and sensor noise."""
    low = rng.uniform(0, 255, (6, 8, 3)).astype(np.uint8)
    image = Image.fromarray(low).resize((width, height), Image.Resampling.BICUBIC).filter(ImageFilter.GaussianBlur(8))
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(4, 10))):
        x, y = rng.integers(0, width), rng.integers(0, height)
        w, h = rng.integers(20, 200, 2)
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)([x, y, x + w, y + h], fill=colour)
    pixels = np.asarray(image.filter(ImageFilter.GaussianBlur(1.2)), dtype=np.float32)
    texture = rng.normal(0, 10, (height // 4, width // 4, 1)).repeat(4, 0).repeat(4, 1)
    pixels = pixels + texture + rng.normal(0, 4, pixels.shape)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def median_rate(fn, count: int, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return count / statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=400)
    parser.add_argument("--size", type=int, default=224, help="crop size (224: CLIP ViT-B and ViT-L)")
    parser.add_argument("--workers", default="0,1,2", help="DataLoader worker counts to time")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import torch
    from torch.utils.data import DataLoader

    from mitp.data.cache import ImageCache, write_cache
    from mitp.data.dataset import PairDataset
    from mitp.runtime.preprocess import clip_crop, load_image

    torch.set_num_threads(1)
    folder = Path(tempfile.mkdtemp(prefix="mitp-loader-"))
    rng = np.random.default_rng(0)
    paths = []
    for i in range(args.images):
        paths.append(folder / f"{i:05d}.jpg")
        photo(rng).save(paths[-1], quality=90)
    sizes = [p.stat().st_size / 1024 for p in paths]
    cache_folder = folder / "cache"
    started = time.perf_counter()
    write_cache(cache_folder, folder, paths, args.size, workers=1)
    build_seconds = time.perf_counter() - started
    cache = ImageCache(cache_folder)
    order = np.random.default_rng(1).permutation(len(paths))

    def jpeg_pass():
        for i in order:
            clip_crop(load_image(paths[i]), args.size)

    def cache_pass():
        for i in order:
            torch.from_numpy(np.array(cache.pixels[cache.index[paths[i].name]]))

    print(f"# mitp loader: {args.images} photo-like 512x384 JPEGs (mean {statistics.fmean(sizes):.0f} KB), crop {args.size}")
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, numpy {np.__version__}\n")
    jpeg = median_rate(jpeg_pass, len(paths), args.repeats)
    cached = median_rate(cache_pass, len(paths), args.repeats)
    print("| path | images/s on one core | ratio |")
    print("|---|---|---|")
    print(f"| JPEG: decode, resize, crop | {jpeg:,.0f} | 1.0x |")
    print(f"| image cache: one memory-mapped row | {cached:,.0f} | {cached / jpeg:.1f}x |")
    print(f"\nBuilding the cache took {build_seconds:.2f} s on one thread ({len(paths) / build_seconds:.0f} images/s): "
          f"{(cache_folder / 'pixels.npy').stat().st_size / 2**20:.1f} MiB\n")

    ids, mask = np.zeros((len(paths), 77), np.int64), np.ones((len(paths), 77), np.int64)
    labels = np.zeros(len(paths), np.int64)
    datasets = {
        "JPEG": PairDataset(["a", "b"], "single-label", ids, mask, labels, image_paths=paths, image_size=args.size),
        "cache": PairDataset(["a", "b"], "single-label", ids, mask, labels, image_paths=paths, image_size=args.size,
                             cache=cache, cache_rows=np.array([cache.index[p.name] for p in paths])),
    }
    print(f"| DataLoader (batch {args.batch}, shuffled) | " + " | ".join(f"{w} workers" for w in args.workers.split(",")) + " |")
    print("|---|" + "---|" * len(args.workers.split(",")))
    for name, dataset in datasets.items():
        rates = []
        for workers in map(int, args.workers.split(",")):
            loader = DataLoader(dataset, batch_size=args.batch, shuffle=True, num_workers=workers, persistent_workers=workers > 0)

            def loader_pass(loader=loader):
                for _ in loader:
                    pass

            rates.append(median_rate(loader_pass, len(paths), args.repeats))
        print(f"| {name} | " + " | ".join(f"{r:,.0f} samples/s" for r in rates) + " |")


if __name__ == "__main__":
    main()
