"""Offline twins of the three data sets, written in their upstream raw layouts.

Every twin image shows a *pattern* (stripes, bars, checks, dots) drawn in neutral grey; every caption
names a *colour*. The answer needs both, so neither modality alone solves a twin:

- demo-food101 (single-label): the class is "<colour>_<pattern>" (16 classes); image-only or
  caption-only accuracy is at most 1/4.
- demo-mmimdb (multi-label): an image shows one or two patterns and a plot names one or two colours;
  the genres are the patterns and colours present (8 labels).
- demo-snlive (3 classes): the hypothesis names a pattern (entailment if the image shows it,
  contradiction if not) or a colour (neutral: a grey image can neither confirm nor deny a colour).
- demo-cue (single-label, Food101 layout): the class is "<colour>_<pattern>" as in demo-food101, but
  which modality carries the colour varies per sample, so the value of the caption does too. A grey image
  with a caption naming the true colour (the caption decides), a coloured image with a caption naming a
  distractor colour (the caption misleads), or a coloured image with a caption naming no colour (the
  caption is noise). Whether the image is grey tells which case a pair is: a per-sample gate on what the
  caption brings can use that, a fixed mix cannot. Built to test the memory strategy, not to favour it.

The twins are written exactly as the real data arrive (Food101 CSVs and class folders, MM-IMDB's
`dataset/<id>.jpeg|json` + `split.json`, SNLI-VE jsonl + Flickr30k folder), so `mitp data prepare`
runs the same code on twins and on real data. The stand-in CLIP (`mitp.model.standin`) is pre-trained on
pairs that show colour *and* pattern in both modalities, so its class-template embeddings differ.
Deterministic from a seed; a few thousand 64 px images take seconds.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

COLOURS = ("red", "green", "blue", "yellow")
PATTERNS = ("stripes", "bars", "checks", "dots")
GREY = "grey"
RGB = {
    "red": (200, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 70, 210),
    "yellow": (220, 200, 40),
    "grey": (128, 128, 128),
}
IMAGE_SIZE = 64  # written size; the stand-in CLIP's preprocessing resizes to its own input size
PERIOD = 32  # pattern period at IMAGE_SIZE: half a period is one patch of the stand-in's 32 px input

# Caption filler per twin, and the words of their class templates: the stand-in tokenizer's vocabulary.
FOOD_WORDS = ("fresh", "homemade", "tasty", "classic", "simple", "easy", "best", "recipe", "plate", "served", "sauce")
MOVIE_WORDS = ("story", "film", "hero", "family", "city", "finds", "must", "after", "world", "life", "secret")
NLI_WORDS = ("picture", "shows", "there", "are", "is", "image", "something", "colour", "pattern", "has")
COMMON_WORDS = ("a", "an", "the", "of", "and", "with", "in", "this", "photo", "type", "food", "poster",
                "movie", "sentence", "are", "image", "entailment", "neutral", "contradiction", ",", ".")
SIZES = {"train": 1600, "val": 320, "test": 400}
SPLIT_SEEDS = {"train": 0, "val": 1, "test": 2}
TWINS = ("demo-food101", "demo-mmimdb", "demo-snlive", "demo-cue")
CUE_CASES = {"caption-decides": 0.4, "caption-misleads": 0.3, "caption-is-noise": 0.3}  # demo-cue's mix


def vocabulary() -> tuple[str, ...]:
    """Every word a twin caption, class template or stand-in pre-training caption can contain."""
    words = [*COMMON_WORDS, *COLOURS, GREY, *PATTERNS, *FOOD_WORDS, *MOVIE_WORDS, *NLI_WORDS]
    return tuple(dict.fromkeys(words))


def render(patterns: list[str], colour: str, rng: np.random.Generator, size: int = IMAGE_SIZE) -> np.ndarray:
    """uint8 (size, size, 3): one pattern fills the image, two split it into left and right halves."""
    y, x = np.mgrid[0:size, 0:size]
    dy, dx = rng.integers(0, 3, 2)  # a small jitter
    image = np.zeros((size, size), dtype=bool)
    bounds = np.linspace(0, size, len(patterns) + 1).astype(int)
    for pattern, start, stop in zip(patterns, bounds[:-1], bounds[1:], strict=True):
        mask = _pattern_mask(pattern, y + dy, x + dx)
        image[:, start:stop] = mask[:, start:stop]
    base = np.array(RGB[colour], dtype=np.float32)
    light = np.where(image[..., None], base * 0.45 + 140, base * 0.55)  # (size, size, 3)
    light += rng.normal(0, 12, light.shape)
    return np.clip(light, 0, 255).astype(np.uint8)


def _pattern_mask(pattern: str, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    half = PERIOD // 2
    if pattern == "stripes":  # horizontal
        return (y // half) % 2 == 0
    if pattern == "bars":  # vertical
        return (x // half) % 2 == 0
    if pattern == "checks":
        return ((y // half) + (x // half)) % 2 == 0
    if pattern == "dots":
        return ((y % PERIOD) < half - 4) & ((x % PERIOD) < half - 4)
    raise ValueError(f"unknown pattern {pattern!r}")


def make_twin(name: str, out: Path, seed: int = 0, sizes: dict[str, int] | None = None) -> dict[str, int]:
    """Write one twin's raw files under `out`; returns the number of pairs per split."""
    writers: dict[str, Callable[[Path, int, dict[str, int]], dict[str, int]]] = {
        "demo-food101": _write_food101,
        "demo-mmimdb": _write_mmimdb,
        "demo-snlive": _write_snlive,
        "demo-cue": _write_cue,
    }
    if name not in writers:
        raise ValueError(f"unknown twin {name!r}; allowed: {', '.join(TWINS)}")
    out.mkdir(parents=True, exist_ok=True)
    return writers[name](out, seed, sizes or SIZES)


def _rng(seed: int, split: str, twin: int) -> np.random.Generator:
    return np.random.default_rng([seed, SPLIT_SEEDS[split], twin])


def _save(image: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path, quality=95)


def _phrase(rng: np.random.Generator, words: tuple[str, ...], key: str) -> str:
    """A caption: the key word(s) among two to four filler words, in a random position."""
    filler = list(rng.choice(words, rng.integers(2, 5)))
    filler.insert(int(rng.integers(0, len(filler) + 1)), key)
    return " ".join(filler)


def _write_food101_layout(
    out: Path, seed: int, sizes: dict[str, int], twin: int, pair: Callable[[np.random.Generator, str, str], tuple[np.ndarray, str]]
) -> dict[str, int]:
    """Food101 layout: images/<split>/<class>/<class>_<n>.jpg, texts/<split>_titles.csv (no header), with the
    class `<colour>_<pattern>` and `pair(rng, colour, pattern)` giving each sample's image and caption.

    The twin's validation pairs are part of train, as upstream: `mitp data prepare` carves val."""
    counts = {}
    for split, size in (("train", sizes["train"] + sizes["val"]), ("test", sizes["test"])):
        rng = _rng(seed, split, twin)
        rows = []
        for n in range(size):
            colour, pattern = COLOURS[rng.integers(4)], PATTERNS[rng.integers(4)]
            label = f"{colour}_{pattern}"
            filename = f"{label}_{n}.jpg"
            image, caption = pair(rng, colour, pattern)
            _save(image, out / "images" / split / label / filename)
            rows.append([filename, caption, label])
        (out / "texts").mkdir(parents=True, exist_ok=True)
        with open(out / "texts" / f"{split}_titles.csv", "w", newline="") as f:
            csv.writer(f).writerows(rows)
        counts[split] = size
    return counts


def _write_food101(out: Path, seed: int, sizes: dict[str, int]) -> dict[str, int]:
    """demo-food101: a grey pattern and a caption naming the colour."""
    return _write_food101_layout(out, seed, sizes, 0, lambda rng, colour, pattern: (render([pattern], GREY, rng), _phrase(rng, FOOD_WORDS, colour)))


def _write_cue(out: Path, seed: int, sizes: dict[str, int]) -> dict[str, int]:
    """demo-cue: each pair's case is drawn from CUE_CASES."""
    cases, weights = list(CUE_CASES), list(CUE_CASES.values())

    def pair(rng: np.random.Generator, colour: str, pattern: str) -> tuple[np.ndarray, str]:
        case = cases[rng.choice(len(cases), p=weights)]
        if case == "caption-decides":
            return render([pattern], GREY, rng), _phrase(rng, FOOD_WORDS, colour)
        if case == "caption-misleads":
            distractor = rng.choice([c for c in COLOURS if c != colour])
            return render([pattern], colour, rng), _phrase(rng, FOOD_WORDS, str(distractor))
        return render([pattern], colour, rng), " ".join(rng.choice(FOOD_WORDS, rng.integers(3, 6)))

    return _write_food101_layout(out, seed, sizes, 3, pair)


def _write_mmimdb(out: Path, seed: int, sizes: dict[str, int]) -> dict[str, int]:
    """MM-IMDB layout: mmimdb/dataset/<id>.jpeg + <id>.json (plot: list, genres), mmimdb/split.json."""
    root = out / "mmimdb"
    split_ids: dict[str, list[str]] = {}
    for split, upstream in (("train", "train"), ("val", "dev"), ("test", "test")):
        rng = _rng(seed, split, 1)
        ids = []
        for n in range(sizes[split]):
            movie_id = f"{SPLIT_SEEDS[split]}{n:06d}"
            patterns = list(rng.choice(PATTERNS, rng.integers(1, 3), replace=False))
            colours = list(rng.choice(COLOURS, rng.integers(1, 3), replace=False))
            _save(render(patterns, GREY, rng), root / "dataset" / f"{movie_id}.jpeg")
            plots = [_phrase(rng, MOVIE_WORDS, " and ".join(colours))]
            plots.append(" ".join(rng.choice(MOVIE_WORDS, 2)))  # a shorter second plot: prepare keeps the longest
            record = {"plot": plots, "genres": [*patterns, *colours], "title": f"movie {movie_id}"}
            (root / "dataset" / f"{movie_id}.json").write_text(json.dumps(record))
            ids.append(movie_id)
        split_ids[upstream] = ids
    (root / "split.json").write_text(json.dumps(split_ids))
    return {split: sizes[split] for split in ("train", "val", "test")}


def _write_snlive(out: Path, seed: int, sizes: dict[str, int]) -> dict[str, int]:
    """SNLI-VE layout: snli_ve_<split>.jsonl (Flickr30K_ID, sentence2, gold_label) + flickr30k_images/<id>.jpg."""
    images = out / "flickr30k_images"
    for split, upstream in (("train", "train"), ("val", "dev"), ("test", "test")):
        rng = _rng(seed, split, 2)
        lines = []
        for n in range(sizes[split]):
            image_id = f"{SPLIT_SEEDS[split]}{n:06d}"
            pattern = PATTERNS[rng.integers(4)]
            _save(render([pattern], GREY, rng), images / f"{image_id}.jpg")
            label = ("entailment", "neutral", "contradiction")[rng.integers(3)]
            if label == "neutral":
                claim = COLOURS[rng.integers(4)]
            elif label == "entailment":
                claim = pattern
            else:
                claim = rng.choice([p for p in PATTERNS if p != pattern])
            record = {
                "Flickr30K_ID": image_id,
                "sentence1": "a grey picture",
                "sentence2": _phrase(rng, NLI_WORDS, str(claim)),
                "gold_label": label,
            }
            lines.append(json.dumps(record))
        (out / f"snli_ve_{upstream}.jsonl").write_text("\n".join(lines) + "\n")
    return {split: sizes[split] for split in ("train", "val", "test")}
