"""A data set of your own, without code: `mitp data import pairs.csv|jsonl|parquet --name NAME`.

Each row names a local image (relative to the pairs file's folder, and inside it), a text, and a label
(single-label) or labels (multi-label: a JSON list, or names joined by `|` in a CSV). An optional `split`
column (train / val / test) keeps your splits; without it 10% of each class goes to test and 10% of the rest
to val, seeded. The prepared folder gets the same checks, counts and report as the upstream data sets, and
config names it like them: `datasets: {NAME: {task: ..., data_dir: data/NAME}}`.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .prepare import MALFORMED_LINE, Pair, PrepareError, Report, carve, write_prepared

SPLITS = ("train", "val", "test")
HELD_OUT = 0.1  # share of each class carved for test, then for val, when the file has no split column
MAX_ROWS = 10_000_000


def import_pairs(
    path: Path, name: str, out: Path, task: str | None = None, workers: int = 8, progress: Callable | None = None, cache_size: int | None = None
) -> dict[str, Any]:
    """Prepare the pairs file `path` as data set `name` in `out`; returns the prepare report."""
    path = Path(path)
    if not path.is_file():
        raise PrepareError(f"pairs file not found: {path}")
    rows = read_rows(path)
    if not rows:
        raise PrepareError(f"{path} holds no pairs")
    multi = any("labels" in row for row in rows)
    task = task or ("multi-label" if multi else "single-label")
    report = Report(dataset=name, raw=str(path))
    pairs = _pairs(rows, path.parent, task, report)
    report.notes["imported_from"] = path.name
    return write_prepared(pairs, task, _classes, path.parent, Path(out), path, report, workers, progress, cache_size)


def read_rows(path: Path) -> list[dict[str, Any]]:
    """Rows of a .csv (header: image, text, label or labels, optional split), .jsonl or .parquet file."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            with open(path, newline="", encoding="utf-8") as f:
                rows: list[dict[str, Any]] = list(csv.DictReader(f))
        elif suffix in (".jsonl", ".ndjson"):
            rows = []
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
                if line.strip():
                    record = json.loads(line)
                    rows.append(record if isinstance(record, dict) else {"_bad": f"line {number} is not a JSON object"})
        elif suffix == ".parquet":
            import pyarrow.parquet as pq

            rows = pq.read_table(path).to_pylist()
        else:
            raise PrepareError(f"{path}: a pairs file is .csv, .jsonl or .parquet")
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError, csv.Error, OSError) as err:
        raise PrepareError(f"cannot read {path}: {type(err).__name__}: {str(err)[:200]}") from err
    if len(rows) > MAX_ROWS:
        raise PrepareError(f"{path} has {len(rows):,} rows; an import holds at most {MAX_ROWS:,}")
    missing = {"image", "text"} - set(rows[0]) if rows and "_bad" not in rows[0] else set()
    if missing or (rows and not {"label", "labels"} & set(rows[0]) and "_bad" not in rows[0]):
        raise PrepareError(f"{path}: each row needs image, text and label (or labels); the first has {', '.join(map(str, rows[0]))}")
    return rows


def _pairs(rows: list[dict[str, Any]], root: Path, task: str, report: Report) -> dict[str, list[Pair]]:
    by_split: dict[str, list[Pair]] = {split: [] for split in SPLITS}
    unsplit: list[Pair] = []
    for number, row in enumerate(rows, start=1):
        row_id = str(row.get("id") or f"row {number}")
        label = _label(row, task)
        image, text, split = row.get("image"), row.get("text"), row.get("split") or None
        if "_bad" in row or not isinstance(image, str) or not image or not isinstance(text, str) or label is None or split not in (None, *SPLITS):
            report.drop("train", row_id, MALFORMED_LINE, row.get("_bad") or "needs a string image and text, a label, and a split of train/val/test if any")
            continue
        pair = Pair(row_id, root / image, text, label)
        (by_split[split] if split else unsplit).append(pair)
    if unsplit and any(by_split.values()):
        raise PrepareError("some rows name a split and others do not: give every row a split, or none")
    if unsplit:
        rest, by_split["test"] = carve(unsplit, HELD_OUT)
        by_split["train"], by_split["val"] = carve(rest, HELD_OUT, seed=1)
        report.notes["splits_carved"] = f"{HELD_OUT:.0%} of each class to test, then {HELD_OUT:.0%} of the rest to val (seeds 0 and 1)"
    return by_split


def _label(row: dict[str, Any], task: str) -> str | list[str] | None:
    value = row.get("labels", row.get("label"))
    if task == "multi-label":
        if isinstance(value, str):
            value = [part.strip() for part in value.split("|") if part.strip()]
        return value if isinstance(value, list) and value and all(isinstance(v, str) and v for v in value) else None
    return value if isinstance(value, str) and value else None


def _classes(pairs: dict[str, list[Pair]]) -> list[str]:
    """The training split's labels, sorted: a label seen only in val or test is dropped there as unknown."""
    names: set[str] = set()
    for pair in pairs["train"]:
        names.update(pair.label if isinstance(pair.label, list) else [pair.label])
    return sorted(names)
