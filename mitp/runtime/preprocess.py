"""One image rule for preparation, training, predict and the bundle (docs/decisions.md §9), in numpy and Pillow only.

Decoding (`load_image`):
1. the header is read first: images above Pillow's decompression-bomb limit (MAX_PIXELS) or with an aspect
   ratio whose CLIP resize would need an absurd buffer (MAX_ASPECT_RATIO) are refused before decoding;
2. the EXIF Orientation tag is applied (phone photos arrive rotated otherwise);
3. 16-bit samples become 8-bit by their high byte (v >> 8), as Pillow already does for 16-bit RGB PNGs;
4. transparency (an alpha channel, or a palette / colour key made transparent) is composited on white,
   in integers: out = (c * a + 255 * (255 - a) + 127) // 255;
5. every other mode goes through Pillow's convert("RGB").
CLIP preprocessing (`clip_crop`, then `normalize`): resize the shorter side to `size` with Pillow's
antialiased bicubic, width pass then height pass (the longer side floor(size * long / short)), centre-crop
at floor((new - size) / 2),
then (pixels / 255 - mean) / std in float32, NCHW. `clip_crop` returns the uint8 crop that the image
cache stores; `normalize` can run on the GPU with the same float32 arithmetic.
"""

from __future__ import annotations

import io
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import MitpError

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
MAX_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485  # Pillow's decompression-bomb limit: 89,478,485 pixels
MAX_ASPECT_RATIO = 64  # a 100000 x 1 image would resize to 22.4M x 224 pixels (15 GB) before the crop
SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")
RULE_VERSION = 1  # bump when the rule changes what any image becomes: stored caches and bundles say which they follow
EXIF_ORIENTATION = 0x0112
# Pillow warns above MAX_PIXELS and raises above twice that; mitp refuses both with one message of its own.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


class ImageError(MitpError, ValueError):
    """An image file is missing, unreadable or not an image."""


class ImageTooLarge(ImageError):
    """An image whose decoding or resizing would need unreasonable memory."""


def check_image_size(width: int, height: int, source: str = "image") -> None:
    if width < 1 or height < 1:
        raise ImageError(f"{source} has no pixels ({width} x {height})")
    if width * height > MAX_PIXELS:
        raise ImageTooLarge(f"{source} is too large to decode safely: {width} x {height} pixels (limit {MAX_PIXELS:,})")
    if max(width, height) > MAX_ASPECT_RATIO * min(width, height):
        raise ImageTooLarge(f"{source} is {width} x {height}: an aspect ratio above {MAX_ASPECT_RATIO}:1 is refused")


def load_image(path: str | Path) -> Image.Image:
    """Open, check and fully decode an image as 8-bit RGB by the rule above, or raise ImageError."""
    with opened_image(path) as image:
        return decoded_rgb(image)


@contextmanager
def opened_image(path: str | Path) -> Iterator[Image.Image]:
    """The image at `path` opened and its header checked against the size limits, not yet decoded: a caller
    can size what the decode will cost (mitp.data.cache's pixel budget) from the one open. Failures inside the
    block, decoding included, become ImageError."""
    path = Path(path)
    try:
        found = path.is_file()
    except OSError as err:  # a name too long, a path through a file
        raise ImageError(f"cannot open image {str(path)[:200]}: {err.strerror}") from err
    if not found:
        raise ImageError(f"image not found: {path}")
    with _checked_open(path, f"image {path}") as img:
        yield img


def load_image_bytes(data: bytes, source: str = "image") -> Image.Image:
    """An encoded image file's bytes (a served request's element), checked and decoded as `load_image`."""
    with _checked_open(io.BytesIO(data), source) as image:
        return decoded_rgb(image)


@contextmanager
def _checked_open(file: Path | io.BytesIO, source: str) -> Iterator[Image.Image]:
    """Pillow's open with the header checked against the size limits; every failure an ImageError."""
    try:
        with Image.open(file) as img:
            check_image_size(img.width, img.height, source)
            yield img
    except ImageError:
        raise
    except Image.DecompressionBombError as err:  # Pillow's own refusal, at twice MAX_PIXELS: said as mitp says it
        pixels = re.search(r"\((\d+) pixels\)", str(err))
        size = f"{int(pixels[1]):,} pixels" if pixels else f"over {2 * MAX_PIXELS:,} pixels"
        raise ImageTooLarge(f"{source} is too large to decode safely: {size} (limit {MAX_PIXELS:,})") from err
    except UnidentifiedImageError as err:  # Pillow names the file object, which says nothing to the sender
        raise ImageError(f"cannot decode {source}: not an image file in a format mitp reads") from err
    except (OSError, SyntaxError, ValueError) as err:
        raise ImageError(f"cannot decode {source}: {err}") from err


def decoded_rgb(img: Image.Image) -> Image.Image:
    """An opened image decoded whole, turned by its EXIF orientation, as 8-bit RGB."""
    img.load()
    if img.getexif().get(EXIF_ORIENTATION, 1) != 1:
        return to_rgb(ImageOps.exif_transpose(img))
    return to_rgb(img)


def to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB: 16-bit samples by their high byte, transparency composited on white."""
    if image.mode in SIXTEEN_BIT_MODES:
        samples = np.asarray(image)  # (H, W) uint16 or int32
        return Image.fromarray(_by_rows(samples, 3, lambda band: np.repeat((band.astype(np.int64).clip(0, 65535) >> 8)[..., None], 3, axis=2)))
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
        rgba = np.asarray(image.convert("RGBA"))  # (H, W, 4) uint8

        def composite(band: np.ndarray) -> np.ndarray:
            band = band.astype(np.int32)  # (rows, W, 4)
            alpha = band[..., 3:]
            return (band[..., :3] * alpha + 255 * (255 - alpha) + 127) // 255

        return Image.fromarray(_by_rows(rgba, 3, composite))
    return image if image.mode == "RGB" else image.convert("RGB")


BAND_BYTES = 32 << 20  # the widest integer temporaries of a conversion, per band of rows


def _by_rows(samples: np.ndarray, channels: int, convert) -> np.ndarray:
    """`convert` applied to bands of rows into one uint8 (H, W, channels) array: the integer temporaries
    stay near BAND_BYTES instead of 16-32 bytes per pixel of the whole image (a 9,400 x 9,400 RGBA PNG
    needed 4.2 GB at once)."""
    height, width = samples.shape[:2]
    out = np.empty((height, width, channels), dtype=np.uint8)
    rows = max(1, BAND_BYTES // (width * 8 * max(channels, samples.shape[2] if samples.ndim == 3 else 1)))
    for top in range(0, height, rows):
        out[top : top + rows] = convert(samples[top : top + rows])
    return out


def clip_crop(image: Image.Image, size: int) -> np.ndarray:
    """CLIP's resize (shorter side to `size`, bicubic) and centre crop: uint8 (size, size, 3)."""
    width, height = image.size
    check_image_size(width, height)
    if width <= height:  # shorter side -> size, longer side scaled and truncated (as transformers does)
        new_w, new_h = size, int(size * height / width)
    else:
        new_w, new_h = int(size * width / height), size
    # Width first, then height, as two single-axis passes: the classic two-pass resample. (Pillow 13 picks
    # the pass order of a two-axis resize by a heuristic of its own, which moves pixels by one level.)
    image = image.resize((new_w, height), Image.Resampling.BICUBIC).resize((new_w, new_h), Image.Resampling.BICUBIC)
    left, top = (new_w - size) // 2, (new_h - size) // 2
    return np.array(image.crop((left, top, left + size, top + size)), dtype=np.uint8)  # writable: torch.from_numpy takes it


def normalize(crop: np.ndarray, mean: tuple[float, ...] = CLIP_MEAN, std: tuple[float, ...] = CLIP_STD) -> np.ndarray:
    """uint8 (..., H, W, 3) -> float32 (..., 3, H, W): (x / 255 - mean) / std, every step in float32."""
    scaled = crop.astype(np.float32) / np.float32(255)
    pixels = (scaled - np.asarray(mean, dtype=np.float32)) / np.asarray(std, dtype=np.float32)
    return np.moveaxis(pixels, -1, -3).copy()


def image_rules(size: int, mean: tuple[float, ...] = CLIP_MEAN, std: tuple[float, ...] = CLIP_STD) -> dict[str, object]:
    """This module's rule as structured fields, precise enough to reimplement exactly (bundle contract)."""
    return {
        "size": size,
        "rule_version": RULE_VERSION,
        "decode": {
            "max_pixels": MAX_PIXELS,
            "max_aspect_ratio": MAX_ASPECT_RATIO,
            "refuse": "width * height > max_pixels, or longer side > max_aspect_ratio * shorter side (from the header)",
            "exif_orientation": "apply the EXIF Orientation tag (0x0112) first, as Pillow ImageOps.exif_transpose",
            "sixteen_bit": "16-bit samples become 8-bit by their high byte: v >> 8 (Pillow reads 16-bit RGB PNGs so)",
            "alpha": {
                "applies_to": "an alpha channel, or a palette entry / colour key marked transparent",
                "background": [255, 255, 255],
                "formula": "out = (c * a + 255 * (255 - a) + 127) // 255 per channel, in integers",
            },
            "other_modes": "Pillow convert('RGB') (palette expanded, greyscale replicated, CMYK by Pillow's formula)",
        },
        "resize": {
            "shorter_side_to": size,
            "longer_side": "floor(size * longer / shorter), the division in float64",
            "filter": "bicubic, a = -0.5",
            "implementation": (
                "Pillow's convolution resample (libImaging/Resample.c), one axis at a time: first the width (to "
                "new_width x height), then the height; antialiased (filter support 2 scaled by the downscale factor), "
                "coefficients normalised per output pixel and stored in fixed point with 22 fractional bits "
                "(rounded away from zero), sums started at 2^21, shifted right by 22 and clipped to 0..255 after each pass"
            ),
        },
        "crop": {"width": size, "height": size, "left": "floor((new_width - size) / 2)", "top": "floor((new_height - size) / 2)"},
        "normalize": {
            "scale": 1 / 255,
            "arithmetic": "float32 throughout: ((x / 255) - mean) / std, each operation rounded to float32",
            "mean": list(mean),
            "std": list(std),
        },
        "channel_order": "RGB",
        "layout": "NCHW",
        "dtype": "float32",
    }


def preprocess_image(
    image: Image.Image, size: int, mean: tuple[float, ...] = CLIP_MEAN, std: tuple[float, ...] = CLIP_STD
) -> np.ndarray:
    """PIL image -> float32 array (3, size, size), CLIP-normalised."""
    return normalize(clip_crop(image, size), mean, std)
