"""Turn each upstream raw layout into mitp's prepared format, with an honest report.

Output (`--out`): `{train,val,test}.parquet` with columns `id, image, text, label` (single-label) or
`id, image, text, labels` (multi-label), where `image` is relative to the output folder; `classes.json`;
`prepare_report.json` (pairs per split, drops per split and reason, label policy counts); `dropped.jsonl`
(one line per dropped pair: split, id, reason, detail). Every image is decoded once here, so a file
PIL cannot read is dropped now, not in the middle of training. The output folder is written beside
itself and swapped in whole, so a killed preparation leaves no half-written data set.
"""

from __future__ import annotations

import csv
import json
import os
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..files.atomic import atomic_write_json, file_sha256
from .cache import CACHE_DIR, decode_all, write_cache
from .download import MARKERS, find_layout_root, layout_problem
from ..errors import MitpError
from ..files.outputs import build_output, claim
from ..files.paths import Within
from ..runtime.preprocess import ImageError, ImageTooLarge
from ..runtime.tokenizer import MAX_CAPTION_CHARS, clean_caption, clean_head

MMIMDB_GENRES = (
    "Drama", "Comedy", "Romance", "Thriller", "Crime", "Action", "Adventure", "Horror", "Documentary", "Mystery",
    "Sci-Fi", "Fantasy", "Family", "Biography", "War", "History", "Music", "Animation", "Musical", "Western",
    "Sport", "Short", "Film-Noir",
)
SNLIVE_LABELS = ("entailment", "neutral", "contradiction")
SPLITS = ("train", "val", "test")  # every prepared data set has these three, in this order
VAL_FRACTION = 0.1  # Food101 has no validation split: this share of train, stratified by class

# Drop reasons (the keys of the report).
MISSING_IMAGE, UNREADABLE_IMAGE, MISSING_TEXT = "missing image", "unreadable image", "missing text"
MALFORMED_LINE, UNKNOWN_LABEL = "malformed line", "unknown label"
IMAGE_TOO_LARGE = "image too large"
IMAGE_OUTSIDE = "image path outside the data set"
CAPTION_TOO_LONG = "caption too long"  # its first 77 words hold more than MAX_CAPTION_CHARS characters  # `../../etc/x.png` in a CSV, an absolute path in a jsonl
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff")


class PrepareError(MitpError, ValueError):
    """The raw folder is not in the expected upstream layout; the message says what is missing."""


@dataclass
class Pair:
    id: str
    image: Path  # absolute path of the raw image
    text: str
    label: str | list[str]


@dataclass
class Report:
    dataset: str
    raw: str
    counts: dict[str, int] = field(default_factory=dict)
    dropped: dict[str, Counter] = field(default_factory=dict)
    recovered: Counter = field(default_factory=Counter)  # Food101 lines with broken quoting, read anyway
    not_utf8: Counter = field(default_factory=Counter)  # lines whose invalid bytes were replaced (U+FFFD)
    notes: dict[str, object] = field(default_factory=dict)
    manifest: list[dict[str, str]] = field(default_factory=list)

    def drop(self, split: str, pair_id: str, reason: str, detail: str = "") -> None:
        self.dropped.setdefault(split, Counter())[reason] += 1
        self.manifest.append({"split": split, "id": pair_id, "reason": reason, "detail": detail})

    def repair_encoding(self, split: str, line_id: str, detail: str) -> None:
        self.not_utf8[split] += 1
        self.manifest.append({"split": split, "id": line_id, "reason": "not UTF-8 (invalid bytes replaced)", "detail": detail})

    def recover(self, split: str, pair_id: str, detail: str) -> None:
        self.recovered[split] += 1
        self.manifest.append({"split": split, "id": pair_id, "reason": "malformed quoting (recovered)", "detail": detail})

    def to_json(self) -> dict[str, object]:
        return {
            "dataset": self.dataset,
            "raw": self.raw,
            "counts": self.counts,
            "dropped": {split: dict(sorted(c.items())) for split, c in self.dropped.items()},
            "dropped_total": sum(sum(c.values()) for c in self.dropped.values()),
            "non_utf8_lines": dict(self.not_utf8),
            **self.notes,
        }


# ---------------------------------------------------------------------------------------------- Food101


def parse_food101_line(line: str) -> tuple[str, str, str] | None:
    """(filename, title, label) of one CSV line, or None when the line cannot be read.

    Filenames and labels hold no commas, so a line whose quoting is broken (which would make a csv
    reader swallow the following lines into one field) is still read: filename before the first
    comma, label after the last, title in between with its outer quotes removed."""
    parsed, _ = _parse_food101_line(line)
    return parsed


def _parse_food101_line(line: str) -> tuple[tuple[str, str, str] | None, bool]:
    """(fields or None, whether the line was well-formed CSV)."""
    try:
        fields = next(csv.reader([line], strict=True))
        if len(fields) == 3:
            return (fields[0], fields[1], fields[2]), True
    except (csv.Error, StopIteration):
        pass
    if line.count(",") < 2:
        return None, False
    filename, rest = line.split(",", 1)
    title, label = rest.rsplit(",", 1)
    title = title.strip()
    if title.startswith('"'):
        title = title[1:-1] if title.endswith('"') and len(title) > 1 else title[1:]
    return (filename.strip(), title.replace('""', '"'), label.strip()), False


def read_food101(root: Path, report: Report) -> dict[str, list[Pair]]:
    """Food101: `texts/<split>_titles.csv` read line by line; val carved from train. A first line whose
    filename field is not an image path is a header: skipped and counted, never turned into a class."""
    pairs: dict[str, list[Pair]] = {}
    headers: Counter = Counter()
    for split in ("train", "test"):
        path = root / "texts" / f"{split}_titles.csv"
        if not path.is_file():
            raise PrepareError(f"{path} not found: expected the UPMC-Food101 layout (texts/{{train,test}}_titles.csv)")
        pairs[split] = []
        for number, line in decoded_lines(path, split, report):
            if not line.strip():
                continue
            parsed, well_formed = _parse_food101_line(line)
            if number == 1 and (parsed is None or not parsed[0].lower().endswith(IMAGE_SUFFIXES)):
                headers[split] += 1
                continue
            if parsed is None:
                report.drop(split, f"{path.name}:{number}", MALFORMED_LINE, line[:200])
                continue
            if not well_formed:
                report.recover(split, f"{path.name}:{number}", line[:200])
            filename, title, label = parsed
            pairs[split].append(Pair(filename, root / "images" / split / label / filename, title.strip(), label))
    report.notes["malformed_quoting_recovered"] = dict(report.recovered)
    report.notes["header_lines_skipped"] = dict(headers)
    pairs["train"], pairs["val"] = _carve_val(pairs["train"])
    report.notes["val_split"] = f"{VAL_FRACTION:.0%} of train per class, seed 0 (ids in val_ids.txt)"
    return pairs


def decoded_lines(path: Path, split: str, report: Report) -> Iterable[tuple[int, str]]:
    """(line number, text) of a UTF-8 text file; a line with invalid bytes is decoded with U+FFFD in their
    place and counted in the report (never silently, never fatal)."""
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            raw = raw.rstrip(b"\r\n")
            try:
                yield number, raw.decode("utf-8")
            except UnicodeDecodeError as err:
                report.repair_encoding(split, f"{path.name}:{number}", f"{err.reason} at byte {err.start}")
                yield number, raw.decode("utf-8", errors="replace")


def _carve_val(train: list[Pair]) -> tuple[list[Pair], list[Pair]]:
    """A stratified, seeded validation split: VAL_FRACTION of each class (at least one pair)."""
    return carve(train, VAL_FRACTION)


def carve(rows: list[Pair], fraction: float, seed: int = 0) -> tuple[list[Pair], list[Pair]]:
    """(kept, carved): `fraction` of each class (its first label for multi-label pairs; at least one pair of
    a class with two or more), drawn with `seed`, in the rows' order."""
    rng = np.random.default_rng(seed)
    by_class: dict[str, list[int]] = {}
    for i, pair in enumerate(rows):
        key = pair.label[0] if isinstance(pair.label, list) and pair.label else str(pair.label)
        by_class.setdefault(key, []).append(i)
    carved = set()
    for _, members in sorted(by_class.items()):
        if len(members) > 1:
            carved.update(rng.choice(members, max(1, round(len(members) * fraction)), replace=False).tolist())
    return [p for i, p in enumerate(rows) if i not in carved], [p for i, p in enumerate(rows) if i in carved]


# ---------------------------------------------------------------------------------------------- MM-IMDB


def read_mmimdb(root: Path, report: Report, genres: tuple[str, ...] = MMIMDB_GENRES) -> dict[str, list[Pair]]:
    """MM-IMDB: `mmimdb/split.json` + `mmimdb/dataset/<id>.{jpeg,json}`; text = the longest plot.

    Genre policy: genres outside the data set's list (News, Reality-TV, Talk-Show, ...) are removed from
    a movie's labels and counted; a movie left with no genre at all is dropped as an unknown label."""
    base = root / "mmimdb"
    try:
        splits = json.loads((base / "split.json").read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise PrepareError(f"cannot read {base / 'split.json'}: {err}") from err
    known, removed, affected = set(genres), Counter[str](), 0
    pairs: dict[str, list[Pair]] = {}
    for split, upstream in (("train", "train"), ("val", "dev"), ("test", "test")):
        if upstream not in splits:
            raise PrepareError(f"{base / 'split.json'} has no {upstream!r} list")
        pairs[split] = []
        for movie_id in map(str, splits[upstream]):
            if not movie_id or movie_id in (".", "..") or "/" in movie_id or "\\" in movie_id or "\0" in movie_id:
                report.drop(split, movie_id[:100], MALFORMED_LINE, "a movie id that is not a plain file name")
                continue
            record_path = base / "dataset" / f"{movie_id}.json"
            try:
                record = json.loads(record_path.read_text(encoding="utf-8"))
            except FileNotFoundError:
                report.drop(split, movie_id, MISSING_TEXT, f"{record_path.name} not found")
                continue
            except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as err:
                report.drop(split, movie_id, MALFORMED_LINE, f"{record_path.name}: {type(err).__name__}: {str(err)[:200]}")
                continue
            if not isinstance(record, dict):
                report.drop(split, movie_id, MALFORMED_LINE, f"{record_path.name}: not a JSON object")
                continue
            plot, tags = record.get("plot"), record.get("genres")
            plot = [plot] if isinstance(plot, str) else plot  # one plot given as a string, not a list of them
            tags = [tags] if isinstance(tags, str) else tags
            if not isinstance(plot, list | type(None)) or not isinstance(tags, list | type(None)):
                report.drop(split, movie_id, MALFORMED_LINE, f"{record_path.name}: plot and genres must be lists of strings")
                continue
            plots = [p for p in plot or [] if isinstance(p, str) and p.strip()]
            if not plots:
                report.drop(split, movie_id, MISSING_TEXT, "no plot")
                continue
            labels = [g for g in tags or [] if isinstance(g, str) and g in known]
            extra = [g for g in tags or [] if isinstance(g, str) and g not in known]
            removed.update(extra)
            affected += bool(extra)
            if not labels:
                report.drop(split, movie_id, UNKNOWN_LABEL, f"no genre among the {len(genres)}: {extra}")
                continue
            text = max(plots, key=len).strip()
            pairs[split].append(Pair(movie_id, base / "dataset" / f"{movie_id}.jpeg", text, labels))
    report.notes["genre_policy"] = "genres outside the list are removed; movies left with none are dropped"
    report.notes["genres_removed"] = dict(sorted(removed.items()))
    report.notes["movies_with_removed_genres"] = affected
    return pairs


# ---------------------------------------------------------------------------------------------- SNLI-VE


def read_snlive(root: Path, report: Report) -> dict[str, list[Pair]]:
    """SNLI-VE: `snli_ve_{train,dev,test}.jsonl` (Flickr30K_ID, sentence2, gold_label) + Flickr30k images."""
    images = find_layout_root(root, "flickr30k_images", depth=2)
    image_dir = (images or root) / "flickr30k_images"
    pairs: dict[str, list[Pair]] = {}
    for split, upstream in (("train", "train"), ("val", "dev"), ("test", "test")):
        path = root / f"snli_ve_{upstream}.jsonl"
        if not path.is_file():
            raise PrepareError(f"{path} not found: expected SNLI-VE's snli_ve_{{train,dev,test}}.jsonl")
        pairs[split] = []
        for number, line in decoded_lines(path, split, report):
            if not line.strip():
                continue
            line_id = f"{path.name}:{number}"
            try:
                record = json.loads(line)
                image_id, text, label = str(record["Flickr30K_ID"]), record["sentence2"], record["gold_label"]
            except (json.JSONDecodeError, KeyError, TypeError, RecursionError) as err:
                report.drop(split, line_id, MALFORMED_LINE, f"{type(err).__name__}: {str(err)[:200]}")
                continue
            pair_id = str(record.get("pairID") or line_id)
            if label not in SNLIVE_LABELS:
                report.drop(split, pair_id, UNKNOWN_LABEL, repr(label))
                continue
            if not isinstance(text, str) or not text.strip():
                report.drop(split, pair_id, MISSING_TEXT, "empty sentence2")
                continue
            image_name = image_id if image_id.endswith(".jpg") else f"{image_id}.jpg"
            pairs[split].append(Pair(pair_id, image_dir / image_name, text.strip(), label))
    return pairs


# ---------------------------------------------------------------------------------------------- common

@dataclass(frozen=True)
class Layout:
    raw: str  # which upstream layout (a key of download.MARKERS)
    reader: Callable[[Path, Report], dict[str, list[Pair]]]
    task: str
    classes: Callable[[dict[str, list[Pair]]], list[str]]


def _twin_genres() -> tuple[str, ...]:
    from .twins import COLOURS, PATTERNS

    return (*PATTERNS, *COLOURS)


def _train_labels(pairs: dict[str, list[Pair]]) -> list[str]:
    return sorted({str(p.label) for p in pairs["train"]})  # single-label data sets: the label is a str


_FOOD101 = Layout("food101", read_food101, "single-label", _train_labels)
_SNLIVE = Layout("snlive", read_snlive, "single-label", lambda pairs: list(SNLIVE_LABELS))
LAYOUTS: dict[str, Layout] = {
    "food101": _FOOD101,
    "mmimdb": Layout("mmimdb", read_mmimdb, "multi-label", lambda pairs: list(MMIMDB_GENRES)),
    "snlive": _SNLIVE,
    "demo-food101": _FOOD101,
    "demo-mmimdb": Layout(
        "mmimdb", lambda root, report: read_mmimdb(root, report, _twin_genres()), "multi-label", lambda pairs: list(_twin_genres())
    ),
    "demo-snlive": _SNLIVE,
    "demo-cue": _FOOD101,
}


def prepare_dataset(
    name: str, raw: Path, out: Path, workers: int = 8, progress: Callable | None = None, cache_size: int | None = None
) -> dict[str, Any]:
    """Read `raw` in the upstream layout of `name`, check every image, write the prepared folder `out`; with
    `cache_size`, the pass that decodes every image also fills the image cache of that size (mitp.data.cache)."""
    if name not in LAYOUTS:
        raise PrepareError(f"unknown data set {name!r}; allowed: {', '.join(LAYOUTS)}")
    layout = LAYOUTS[name]
    claim(Path(out), "prepared", inputs=(Path(raw),))
    problem = layout_problem(layout.raw, Path(raw))
    if problem is not None:
        raise PrepareError(f"{problem}; run `mitp data download {name}` first" if "mitp data download" not in problem else problem)
    root = find_layout_root(Path(raw), MARKERS[layout.raw]) or Path(raw)
    report = Report(dataset=name, raw=str(Path(raw)))
    pairs = layout.reader(root, report)
    return write_prepared(pairs, layout.task, layout.classes, root, Path(out), Path(raw), report, workers, progress, cache_size)


def write_prepared(
    pairs: dict[str, list[Pair]],
    task: str,
    classes_of: Callable[[dict[str, list[Pair]]], list[str]],
    root: Path,
    out: Path,
    source: Path,
    report: Report,
    workers: int = 8,
    progress: Callable | None = None,
    cache_size: int | None = None,
) -> dict[str, Any]:
    """The checks and the prepared folder every data set gets, upstream or imported: captions cleaned, pairs
    whose image leaves `root`, whose text is empty or whose label is unknown dropped and counted, every image
    decoded (and cached), each split written with its count and sha256, and the report."""
    report.notes["captions_cleaned"] = clean_captions(pairs)
    classes = classes_of(pairs)
    for split in SPLITS:
        pairs[split] = _drop_unusable(pairs[split], set(classes), split, report, root)
    label_key = "labels" if task == "multi-label" else "label"
    with build_output(out, "prepared", inputs=(source,)) as tmp:
        images = sorted({pair.image for rows in pairs.values() for pair in rows})
        if cache_size:
            cache, problems = write_cache(tmp / CACHE_DIR / str(cache_size), out, images, cache_size, workers, progress)
            report.notes["image_cache"] = {**cache, "folder": f"{CACHE_DIR}/{cache_size}"}
        else:
            problems = decode_all(images, None, workers, progress)
        pairs = _drop_bad_images(pairs, problems, report)
        empty = [split for split, rows in pairs.items() if not rows]
        if empty:
            dropped = {split: dict(reasons) for split, reasons in report.dropped.items()}
            raise PrepareError(f"{source}: no usable pair in the {', '.join(empty)} split(s) (dropped: {json.dumps(dropped)}); nothing was written")
        for split, rows in pairs.items():
            _write_parquet(tmp / f"{split}.parquet", rows, label_key, out)
            report.counts[split] = len(rows)
        # What each split holds, checkable by anyone (`sha256sum train.parquet`); the report's own hash is
        # the data's fingerprint that runs record (mitp.data.dataset.data_fingerprint).
        report.notes["splits"] = {split: {"pairs": len(rows), "sha256": file_sha256(tmp / f"{split}.parquet")} for split, rows in pairs.items()}
        if "val_split" in report.notes:  # carved here, not upstream: keep the ids so the split can be rebuilt
            (tmp / "val_ids.txt").write_text("".join(f"{p.id}\n" for p in pairs["val"]))
        atomic_write_json(tmp / "classes.json", classes)
        report.notes.update({"task": task, "num_classes": len(classes)})
        with open(tmp / "dropped.jsonl", "w") as f:
            f.writelines(json.dumps(entry) + "\n" for entry in report.manifest)
        summary = report.to_json()
        atomic_write_json(tmp / "prepare_report.json", summary)
    return summary


def clean_captions(pairs: dict[str, list[Pair]]) -> dict[str, int]:
    """Clean every caption as the CLIP tokenizer does (mitp.runtime.tokenizer.clean_caption); returns how
    many changed per split."""
    changed = {}
    for split, rows in pairs.items():
        changed[split] = 0
        for pair in rows:
            cleaned = clean_caption(pair.text)
            changed[split] += cleaned != pair.text
            pair.text = cleaned
    return changed


def _drop_unusable(rows: list[Pair], classes: set[str], split: str, report: Report, root: Path) -> list[Pair]:
    """Drop pairs whose image path leaves the data set's folder, with no text, or with a label outside the
    classes (counted, never silent). The path is judged with links and `..` resolved on both sides
    (mitp.files.paths): a link inside the folder to an image elsewhere is outside, and a data set kept on another
    disk is linked (or mounted) whole."""
    kept = []
    within = Within(root)
    for pair in rows:
        if not within(pair.image):
            report.drop(split, pair.id, IMAGE_OUTSIDE, str(pair.image))
            continue
        if not pair.text:
            report.drop(split, pair.id, MISSING_TEXT, "empty text")
            continue
        if len(clean_head(pair.text)) > MAX_CAPTION_CHARS:
            report.drop(split, pair.id, CAPTION_TOO_LONG, f"{len(pair.text):,} characters, words up to thousands of characters long")
            continue
        labels = pair.label if isinstance(pair.label, list) else [pair.label]
        unknown = [label for label in labels if label not in classes]
        if unknown:
            report.drop(split, pair.id, UNKNOWN_LABEL, f"{unknown} not among the training classes")
        else:
            kept.append(pair)
    return kept


def _drop_bad_images(pairs: dict[str, list[Pair]], problems: dict[Path, ImageError], report: Report) -> dict[str, list[Pair]]:
    """Drop (and count, per split and reason) every pair whose image could not be decoded."""
    kept: dict[str, list[Pair]] = {}
    for split, rows in pairs.items():
        kept[split] = []
        for pair in rows:
            err = problems.get(pair.image)
            if err is None:
                kept[split].append(pair)
            elif not pair.image.is_file():
                report.drop(split, pair.id, MISSING_IMAGE, str(pair.image))
            else:
                report.drop(split, pair.id, IMAGE_TOO_LARGE if isinstance(err, ImageTooLarge) else UNREADABLE_IMAGE, str(err))
    return kept


def _write_parquet(path: Path, rows: Iterable[Pair], label_key: str, final_dir: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = list(rows)
    table = pa.table(
        {
            "id": pa.array([p.id for p in rows], pa.string()),
            "image": pa.array([os.path.relpath(p.image, final_dir) for p in rows], pa.string()),
            "text": pa.array([p.text for p in rows], pa.string()),
            label_key: pa.array([p.label for p in rows], pa.list_(pa.string()) if label_key == "labels" else pa.string()),
        }
    )
    pq.write_table(table, path)
