"""An independent implementation of the bundle's resize rule (bundle.json "image.resize"), in numpy.

The convolution resample of Pillow's libImaging/Resample.c as the rule states it: bicubic (a = -0.5),
support 2 scaled by the downscale factor, coefficients normalised per output pixel and kept in fixed
point with 22 fractional bits, sums started at 2^21 and shifted right by 22, clipped to 0..255 after each
pass; the width first, then the height. Tests compare mitp's preprocessing with it, so a change of
Pillow's internals cannot silently change what mitp (and a port of the rule) computes.
"""

from __future__ import annotations

import math

import numpy as np

PRECISION_BITS = 22


def bicubic(x: float, a: float = -0.5) -> float:
    x = abs(x)
    if x < 1:
        return ((a + 2) * x - (a + 3)) * x * x + 1
    if x < 2:
        return (((x - 5) * x + 8) * x - 4) * a
    return 0.0


def coefficients(in_size: int, out_size: int) -> list[tuple[int, np.ndarray]]:
    """(first input index, fixed-point weights) per output index."""
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = 2.0 * filterscale
    rows = []
    for out in range(out_size):
        center = (out + 0.5) * scale
        first = max(int(center - support + 0.5), 0)
        count = min(int(center + support + 0.5), in_size) - first
        weights = [bicubic((x + first - center + 0.5) / filterscale) for x in range(count)]
        total = sum(weights)
        weights = [w / total if total != 0 else w for w in weights]
        fixed = [int(w * (1 << PRECISION_BITS) + (0.5 if w >= 0 else -0.5)) for w in weights]
        rows.append((first, np.array(fixed, dtype=np.int64)))
    return rows


def resample_axis(pixels: np.ndarray, out_size: int, axis: int) -> np.ndarray:
    """One pass along `axis` of a uint8 (H, W, C) array."""
    source = np.moveaxis(pixels, axis, 0).astype(np.int64)
    result = np.empty((out_size, *source.shape[1:]), dtype=np.uint8)
    for out, (first, weights) in enumerate(coefficients(source.shape[0], out_size)):
        total = (1 << (PRECISION_BITS - 1)) + np.tensordot(weights, source[first:first + len(weights)], axes=1)
        result[out] = np.clip(total >> PRECISION_BITS, 0, 255)
    return np.moveaxis(result, 0, axis)


def resize(pixels: np.ndarray, width: int, height: int) -> np.ndarray:
    if width != pixels.shape[1]:
        pixels = resample_axis(pixels, width, axis=1)
    if height != pixels.shape[0]:
        pixels = resample_axis(pixels, height, axis=0)
    return pixels


def clip_crop(pixels: np.ndarray, size: int) -> np.ndarray:
    """The contract's resize (shorter side to `size`) and centre crop of a uint8 (H, W, 3) image."""
    height, width = pixels.shape[:2]
    new_w, new_h = (size, math.floor(size * height / width)) if width <= height else (math.floor(size * width / height), size)
    resized = resize(pixels, new_w, new_h)
    left, top = (new_w - size) // 2, (new_h - size) // 2
    return resized[top:top + size, left:left + size]
