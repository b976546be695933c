"""Data sets that feed training and evaluation: one item = (pixels, input_ids, attention_mask, labels).

Two sources share one interface:
- `prepared`: `<data_dir>/{train,val,test}.parquet` (id, image, text, label | labels) + `classes.json`,
  written by `mitp data prepare`. Images come as uint8 CLIP crops (S, S, 3): rows of the data set's image
  cache when it has one of the right size (mitp.data.cache), else decoded and cropped on access. They travel
  to the device as uint8 (a quarter of float32's bytes) and are normalised there by `pixel_values`.
- `synthetic`: the in-process task of `mitp.data.synthetic` (already normalised `pixel_values`), for tests,
  smoke runs and benchmarks.
Captions are tokenized once, up front, to 77 ids.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, default_collate

from .cache import ImageCache, decode_all
from .prepare import SPLITS
from ..config import RunConfig
from ..errors import MitpError
from ..runtime.preprocess import clip_crop, load_image, normalize
from ..runtime.tokenizer import ClipTokenizer
from .synthetic import make_synthetic_split, synthetic_classes
from .tokens import split_tokens



class DataError(MitpError, ValueError):
    """Prepared data are missing or inconsistent; the message says what and where."""


# normalize() of every uint8 value, per channel: (3, 256) float32. Normalising by table lookup gives on any
# device exactly the float32 pixels that mitp.runtime computes, for predict and for the bundle.
NORMALIZE_TABLE = torch.from_numpy(normalize(np.repeat(np.arange(256, dtype=np.uint8)[:, None, None], 3, axis=2))[:, :, 0].copy())


def pixel_values(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The model's (B, 3, S, S) float32 input: normalised on the batch's device from uint8 `pixels`
    (B, S, S, 3), or the synthetic task's `pixel_values` as they are."""
    if "pixel_values" in batch:
        return batch["pixel_values"]
    pixels = batch["pixels"].permute(0, 3, 1, 2).long()  # (B, 3, S, S) values 0..255
    table = NORMALIZE_TABLE.to(pixels.device)  # (3, 256)
    channel = torch.arange(3, device=pixels.device).view(1, 3, 1, 1) * 256
    return table.flatten()[pixels + channel]  # (B, 3, S, S) float32


def collate_pairs(items: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """A batch, with the captions' padding beyond the batch's longest caption cut off: (B, T) with T the
    longest real length, at most 77. Padding is never attended to and pooling reads the EOS inside T, so
    the logits are those of the padded batch (to float rounding), for a fraction of the text tower's work:
    twin captions and SNLI-VE hypotheses hold about a dozen tokens. The per-class head pads the batch back
    by the room its class prompts need (PromptedCLIP._class_sequences), so no caption is cut shorter."""
    batch = default_collate(items)
    length = int(batch["attention_mask"].sum(dim=1).max())  # tokens of the longest caption, SOT and EOS included
    batch["input_ids"], batch["attention_mask"] = batch["input_ids"][:, :length], batch["attention_mask"][:, :length]  # (B, T)
    return batch


class PairDataset(Dataset):
    """Image-caption pairs with tokenized captions and label tensors."""

    def __init__(
        self,
        classes: list[str],
        task: str,
        input_ids: np.ndarray,
        attention_mask: np.ndarray,
        labels: np.ndarray,
        images: np.ndarray | None = None,
        image_paths: list[Path] | None = None,
        image_size: int = 224,
        cache: ImageCache | None = None,
        cache_rows: np.ndarray | None = None,
    ):
        self.classes, self.task, self.image_size = classes, task, image_size
        self.input_ids = torch.from_numpy(input_ids)  # (N, 77) int32 or int64; int64 per item
        self.attention_mask = torch.from_numpy(attention_mask)  # (N, 77) bool or int64; int64 per item
        self.labels = torch.from_numpy(labels)  # (N,) int64 or (N, K) float32
        self.images = None if images is None else torch.from_numpy(images)  # (N, 3, H, W), synthetic
        self.image_paths = image_paths
        self.cache, self.cache_rows = cache, cache_rows  # uint8 crops (rows of a memory-mapped array)
        self.no_cache_reason = ""  # why JPEGs are decoded although the split is prepared (for the log)
        self.token_source = "captions tokenized in memory"  # where the token ids came from (for the log)

    def image_source(self) -> str:
        """Which path feeds this split's images to the model, in words for the log."""
        if self.images is not None:
            return "in-process tensors"
        if self.cache is not None:
            return f"the image cache ({self.image_size} px uint8 crops, memory-mapped)"
        return f"JPEG decoding ({self.no_cache_reason or 'no image cache'})"

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        item = {"input_ids": self.input_ids[index].long(), "attention_mask": self.attention_mask[index].long(), "labels": self.labels[index]}
        if self.images is not None:
            item["pixel_values"] = self.images[index]
        elif self.cache is not None and self.cache_rows is not None:
            item["pixels"] = torch.from_numpy(np.array(self.cache.pixels[self.cache_rows[index]]))  # (S, S, 3) uint8
        elif self.image_paths is not None:
            item["pixels"] = torch.from_numpy(clip_crop(load_image(self.image_paths[index]), self.image_size))
        else:
            raise RuntimeError("a PairDataset needs images, a cache or image paths")
        return item

    def check_images(self, workers: int = 8) -> None:
        """Decode every image once (threads), so that a broken one stops the run now with its path. Cached
        images were decoded when the cache was made."""
        if self.image_paths is None or self.cache is not None:
            return
        problems = [str(err) for err in decode_all(self.image_paths, None, min(workers, os.cpu_count() or 1)).values()]
        if problems:
            more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
            raise DataError(f"{len(problems)} image(s) of this split cannot be used: {'; '.join(problems[:3])}{more}; prepare the data set again")

    def subset(self, indices: np.ndarray) -> PairDataset:
        part = PairDataset(
            self.classes,
            self.task,
            self.input_ids[indices].numpy(),
            self.attention_mask[indices].numpy(),
            self.labels[indices].numpy(),
            images=None if self.images is None else self.images[indices].numpy(),
            image_paths=None if self.image_paths is None else [self.image_paths[i] for i in indices],
            image_size=self.image_size,
            cache=self.cache,
            cache_rows=None if self.cache_rows is None else self.cache_rows[indices],
        )
        part.no_cache_reason, part.token_source = self.no_cache_reason, self.token_source
        return part

    def stratum(self) -> np.ndarray:
        """One stratum id per sample: the label, or the first positive label for multi-label."""
        labels = self.labels.numpy()
        return labels if labels.ndim == 1 else labels.argmax(axis=1)


def build_split(run: RunConfig, split: str, tokenizer: ClipTokenizer, image_size: int) -> PairDataset:
    """Load one split of the run's data set; the train split is cut to `train.fraction` if asked."""
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; allowed: {', '.join(SPLITS)}")
    ds = run.dataset
    if ds.source == "synthetic":
        dataset = _synthetic_split(run, split, tokenizer, image_size)
    else:
        dataset = _prepared_split(Path(ds.data_dir), split, ds.task, tokenizer, image_size)
        if ds.num_classes is not None and len(dataset.classes) != ds.num_classes:
            raise DataError(f"{ds.data_dir}/classes.json lists {len(dataset.classes)} classes, config says {ds.num_classes}")
    if split == "train" and run.train.fraction < 1.0:
        dataset = dataset.subset(stratified_subset(dataset.stratum(), run.train.fraction, run.seed))
    return dataset


def num_classes(run: RunConfig) -> int:
    """How many classes the run's data set has, without loading it where the config says."""
    ds = run.dataset
    if ds.source == "synthetic":
        return len(synthetic_classes(ds.task, ds.synthetic.n_colours, ds.synthetic.n_words))
    return ds.num_classes if ds.num_classes is not None else len(read_classes(Path(ds.data_dir)))


JPEG_SPLIT_WARNING = 10_000  # pairs: decoded from JPEG every epoch, this many starve a GPU (~300 samples/s per core)


def image_path_lines(splits: dict[str, PairDataset], on_gpu: bool) -> list[tuple[bool, str]]:
    """(is a warning, text) per split, saying which path feeds its images; a warning where a large split
    would decode JPEGs for a GPU (a cache of the right size makes the loader keep up)."""
    lines = []
    for name, dataset in splits.items():
        source = dataset.image_source()
        if on_gpu and dataset.cache is None and dataset.images is None and len(dataset) >= JPEG_SPLIT_WARNING:
            lines.append((True, f"{name}: {len(dataset):,} pairs, images by {source}: too slow to keep a GPU busy"))
        else:
            lines.append((False, f"{name}: {len(dataset):,} pairs, images from {source}; {dataset.token_source}"))
    return lines


def stratified_subset(strata: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Seeded indices keeping `fraction` of every stratum (at least one sample each), sorted."""
    rng = np.random.default_rng(seed)
    keep = []
    for value in np.unique(strata):
        members = np.flatnonzero(strata == value)
        count = max(1, round(len(members) * fraction))
        keep.append(rng.choice(members, count, replace=False))
    return np.sort(np.concatenate(keep))


def _synthetic_split(run: RunConfig, split: str, tokenizer: ClipTokenizer, image_size: int) -> PairDataset:
    task = run.dataset.synthetic
    size = getattr(task.sizes, split)
    raw = make_synthetic_split(split, run.dataset.task, size, image_size, task.n_colours, task.n_words, task.noise, seed=run.seed)
    ids, mask = tokenizer(raw["captions"])
    classes = synthetic_classes(run.dataset.task, task.n_colours, task.n_words)
    return PairDataset(classes, run.dataset.task, ids, mask, raw["labels"], images=raw["images"], image_size=image_size)


def read_classes(data_dir: Path) -> list[str]:
    path = data_dir / "classes.json"
    if not path.is_file():
        raise DataError(f"{path} not found: prepare the data set first (mitp data prepare)")
    try:
        classes = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"{path} is not valid JSON ({err}): prepare the data set again (mitp data prepare)") from err
    if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes) or len(set(classes)) != len(classes) or len(classes) < 2:
        raise DataError(f"{path}: expected a JSON list of at least two distinct class names")
    return classes


def data_fingerprint(run: RunConfig) -> str | None:
    """sha256 of the prepared folder's prepare_report.json, which holds each split's pair count and sha256:
    what a run trained on, recorded in its state and result (None for the in-process synthetic task)."""
    if run.dataset.source == "synthetic":
        return None
    path = Path(run.dataset.data_dir) / "prepare_report.json"
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError as err:
        raise DataError(f"cannot read {path} ({err.strerror}): prepare the data set first (mitp data prepare)") from err


def _prepared_split(data_dir: Path, split: str, task: str, tokenizer: ClipTokenizer, image_size: int) -> PairDataset:
    import pyarrow as pa
    import pyarrow.parquet as pq

    classes = read_classes(data_dir)
    path = data_dir / f"{split}.parquet"
    if not path.is_file():
        raise DataError(f"{path} not found: prepare the data set first (mitp data prepare)")
    label_key = "labels" if task == "multi-label" else "label"

    def read(*columns: str) -> dict[str, list]:
        try:
            names = pq.read_schema(path).names
            missing = sorted({"id", "image", "text", label_key} - set(names))
            if missing:
                raise DataError(f"{path}: missing column(s) {', '.join(missing)}")
            table = pq.read_table(path, columns=list(columns)).to_pydict()
        except (OSError, pa.ArrowException) as err:
            raise DataError(f"cannot read {path} ({err}): prepare the data set again (mitp data prepare)") from err
        for column in set(columns) & {"image", "text"}:
            bad = [row for row, value in enumerate(table[column]) if not isinstance(value, str) or not value.strip()]
            if bad:
                raise DataError(f"{path}: row(s) {bad[:5]} have no {column}{' (and more)' if len(bad) > 5 else ''}")
        return table

    table = read("image", label_key)  # the captions are read only if their token ids must be computed
    if not table["image"]:
        raise DataError(f"{path}: the {split} split is empty; nothing to train or evaluate on")
    index = {name: i for i, name in enumerate(classes)}
    labels = _encode_labels(table[label_key], index, task, path)
    ids, mask, token_source = split_tokens(data_dir, split, tokenizer, lambda: read("text")["text"])
    if len(ids) != len(labels):
        raise DataError(f"{path}: {len(ids)} token rows for {len(labels)} pairs: prepare the data set again")
    paths = [data_dir / p for p in table["image"]]
    cache = ImageCache.open(data_dir, image_size)
    rows = cache.rows(table["image"]) if cache is not None else None
    dataset = PairDataset(classes, task, ids, mask, labels, image_paths=paths, image_size=image_size, cache=cache if rows is not None else None, cache_rows=rows)
    if rows is None:
        build = f"mitp data cache {data_dir} --size {image_size}"
        dataset.no_cache_reason = (
            f"no image cache of {image_size} px in {data_dir}; build one with `{build}`" if cache is None
            else f"the image cache of {image_size} px lacks some of the {split} split's images (prepared again since?); rebuild it with `{build}`"
        )
    dataset.token_source = token_source
    return dataset


def _encode_labels(values: list, index: dict[str, int], task: str, path: Path) -> np.ndarray:
    def lookup(name: str, row: int) -> int:
        if name not in index:
            raise DataError(f"{path}: row {row} has unknown label {name!r} (not in classes.json)")
        return index[name]

    if task == "multi-label":
        labels = np.zeros((len(values), len(index)), dtype=np.float32)
        for row, names in enumerate(values):
            if not isinstance(names, list):
                raise DataError(f"{path}: row {row} has labels {names!r} (expected a list of class names)")
            for name in names:
                labels[row, lookup(name, row)] = 1.0
        return labels
    return np.array([lookup(name, row) for row, name in enumerate(values)], dtype=np.int64)
