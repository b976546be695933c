"""An in-process synthetic image-caption task whose label needs both modalities.

Each sample has an image factor (a colour, visible only in the image) and a text factor (a word,
present only in the caption). Single-label: the class is the pair (colour, word), so either modality
alone reaches at most 1 / n of the accuracy. Multi-label: the labels are {colour, word}. Generated
deterministically from a seed in well under a second; used by tests, smoke runs and benchmarks.
"""

from __future__ import annotations

from typing import Any

import numpy as np

COLOURS = ("red", "green", "blue", "yellow", "purple", "orange")
WORDS = ("alpha", "beta", "gamma", "delta", "epsilon", "zeta")
FILLER = ("the", "photo", "shows", "some", "very", "plain", "old", "new", "small", "large", "caption", "reads")
# Mean pixel of each colour, in CLIP-normalised units.
PALETTE = np.array(
    [[1.5, -1.0, -1.0], [-1.0, 1.5, -1.0], [-1.0, -1.0, 1.5], [1.5, 1.5, -1.0], [1.0, -1.0, 1.5], [1.5, 0.3, -1.0]],
    dtype=np.float32,
)
SPLIT_SEEDS = {"train": 0, "val": 1, "test": 2}


def synthetic_classes(task: str, n_colours: int, n_words: int) -> list[str]:
    if task == "multi-label":
        return [*COLOURS[:n_colours], *WORDS[:n_words]]
    return [f"{c} {w}" for c in COLOURS[:n_colours] for w in WORDS[:n_words]]


def make_synthetic_split(
    split: str,
    task: str,
    size: int,
    image_size: int,
    n_colours: int = 4,
    n_words: int = 4,
    noise: float = 0.8,
    seed: int = 0,
) -> dict[str, Any]:
    """Images (N, 3, H, W) float32, captions (N,) and labels: int (N,) or multi-hot float (N, K)."""
    if not 1 <= n_colours <= len(COLOURS) or not 1 <= n_words <= len(WORDS):
        raise ValueError(f"synthetic task supports 1..{len(COLOURS)} colours and 1..{len(WORDS)} words")
    rng = np.random.default_rng(seed * 1000 + SPLIT_SEEDS[split])
    colour = rng.integers(0, n_colours, size)  # (N,)
    word = rng.integers(0, n_words, size)  # (N,)
    images = rng.normal(0.0, noise, (size, 3, image_size, image_size)).astype(np.float32)
    images += PALETTE[colour][:, :, None, None]  # colour tint: (N, 3, 1, 1)
    captions = [
        " ".join([*rng.choice(FILLER, 2), WORDS[w], *rng.choice(FILLER, 2)]) for w in word
    ]
    if task == "multi-label":
        labels = np.zeros((size, n_colours + n_words), dtype=np.float32)
        labels[np.arange(size), colour] = 1.0
        labels[np.arange(size), n_colours + word] = 1.0
    else:
        labels = (colour * n_words + word).astype(np.int64)
    return {"images": images, "captions": captions, "labels": labels}
