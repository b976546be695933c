"""CLIP image preprocessing in numpy and Pillow only (shared by training and the ONNX predict path).

Resize the shorter side to `size` (bicubic), centre-crop `size` x `size`, scale to [0, 1] and normalise
with CLIP's mean and std: the same steps as transformers' CLIPImageProcessor.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class ImageError(ValueError):
    """An image file is missing, unreadable or not an image."""


def load_image(path: str | Path) -> Image.Image:
    """Open and fully decode an image as RGB, or raise ImageError saying what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"image not found: {path}")
    try:
        with Image.open(path) as img:
            img.load()
            return img.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise ImageError(f"cannot decode image {path}: {err}") from err


def preprocess_image(
    image: Image.Image, size: int, mean: tuple[float, ...] = CLIP_MEAN, std: tuple[float, ...] = CLIP_STD
) -> np.ndarray:
    """PIL image -> float32 array (3, size, size), CLIP-normalised."""
    width, height = image.size
    if width <= height:  # shorter side -> size, longer side scaled and truncated (as transformers does)
        new_w, new_h = size, int(size * height / width)
    else:
        new_w, new_h = int(size * width / height), size
    image = image.resize((new_w, new_h), Image.Resampling.BICUBIC)
    left, top = (new_w - size) // 2, (new_h - size) // 2
    image = image.crop((left, top, left + size, top + size))
    pixels = np.asarray(image, dtype=np.float32) / 255.0  # (H, W, 3)
    pixels = (pixels - np.array(mean, dtype=np.float32)) / np.array(std, dtype=np.float32)
    return pixels.transpose(2, 0, 1).copy()  # (3, H, W)
