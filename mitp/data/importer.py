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
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .prepare import MALFORMED_LINE, SPLITS, Pair, PrepareError, Report, carve, write_prepared
SPLIT_SPELLINGS = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val", "dev": "val", "test": "test", "testing": "test"}
HELD_OUT = 0.1  # share of each class carved for test, then for val, when the file has no split column
MAX_ROWS = 10_000_000
MAX_NAME = 64  # characters of a data set's name: it names a folder and a config key
ALSO_IN_TRAIN = "same image and text as a training pair"


def import_pairs(
    path: Path, name: str, out: Path, task: str | None = None, workers: int = 8, progress: Callable | None = None, cache_size: int | None = None
) -> dict[str, Any]:
    """Prepare the pairs file `path` as data set `name` in `out`; returns the prepare report."""
    path = Path(path)
    if len(name) > MAX_NAME:
        raise PrepareError(f"--name is {len(name)} characters long; a data set's name has at most {MAX_NAME}")
    if not path.is_file():
        raise PrepareError(f"pairs file not found: {path}")
    rows = read_rows(path)
    if not rows:
        raise PrepareError(f"{path} holds no pairs")
    multi = any("labels" in row for row in rows)
    task = task or ("multi-label" if multi else "single-label")
    report = Report(dataset=name, raw=str(path))
    root = path.resolve().parent  # images are named relative to the pairs file's folder, however the file was named
    pairs = _pairs(rows, root, task, report)
    _drop_leaks(pairs, report)
    report.notes["imported_from"] = path.name
    return write_prepared(pairs, task, _classes, root, Path(out), path, report, workers, progress, cache_size)


def read_rows(path: Path) -> list[dict[str, Any]]:
    """Rows of a .csv (header: image, text, label or labels, optional split), .jsonl or .parquet file."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            with open(path, newline="", encoding="utf-8-sig") as f:  # -sig: a spreadsheet's byte-order mark is no part of the header
                rows: list[dict[str, Any]] = list(csv.DictReader(f))
        elif suffix in (".jsonl", ".ndjson"):
            rows = []
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
                if line.strip():
                    rows.append(_json_line(line, number))
        elif suffix == ".parquet":
            rows = _parquet_rows(path)
        else:
            raise PrepareError(f"{path}: a pairs file is .csv, .jsonl or .parquet")
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError, csv.Error, OSError) as err:
        raise PrepareError(f"cannot read {path}: {type(err).__name__}: {str(err)[:200]}") from err
    rows = [{key.strip().lower() if isinstance(key, str) else key: value for key, value in row.items()} for row in rows]
    if len(rows) > MAX_ROWS:
        raise PrepareError(f"{path} has {len(rows):,} rows; an import holds at most {MAX_ROWS:,}")
    first = next((row for row in rows if "_bad" not in row), None)  # the header, or the first readable line
    if rows and first is None:  # not one readable line: the file, not a row, is what is wrong
        raise PrepareError(f"cannot read {path}: {rows[0]['_bad']}")
    if first is not None and ({"image", "text"} - set(first) or not {"label", "labels"} & set(first)):
        raise PrepareError(f"{path}: each row needs image, text and label (or labels); the first has {', '.join(map(str, first))}")
    return rows


def _json_line(line: str, number: int) -> dict[str, Any]:
    """One JSON-lines record; a line that is not a JSON object is kept as a bad row (dropped and listed with
    its line number, as a malformed CSV row is), not the end of the import."""
    try:
        record = json.loads(line)
    except (json.JSONDecodeError, RecursionError) as err:
        return {"_bad": f"line {number} is not JSON ({getattr(err, 'msg', type(err).__name__)})", "id": f"line {number}"}
    return record if isinstance(record, dict) else {"_bad": f"line {number} is not a JSON object", "id": f"line {number}"}


def _parquet_rows(path: Path) -> list[dict[str, Any]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.read_table(path).to_pylist()
    except (pa.ArrowException, OSError) as err:
        raise PrepareError(f"cannot read {path} as parquet ({type(err).__name__}: {' '.join(str(err).split())[:160]})") from err


def _pairs(rows: list[dict[str, Any]], root: Path, task: str, report: Report) -> dict[str, list[Pair]]:
    by_split: dict[str, list[Pair]] = {split: [] for split in SPLITS}
    unsplit: list[Pair] = []
    respelled: Counter[str] = Counter()
    for number, row in enumerate(rows, start=1):
        row_id = str(row.get("id") or f"row {number}")
        label, label_respelled = _label(row, task)
        image, text, given_split = row.get("image"), row.get("text"), row.get("split")
        split = _split(given_split)
        if "_bad" in row or not isinstance(image, str) or not image or not isinstance(text, str) or label is None or split == "?":
            where = str(given_split)[:40] if split == "?" else _known(split)  # a split of its own ("holdout") is named as given
            report.drop(where, row_id, MALFORMED_LINE, row.get("_bad") or _what_is_wrong(row, label, task))
            continue
        if label_respelled:
            respelled["labels given as numbers or with extra spaces, read as names"] += 1
        if isinstance(given_split, str) and given_split != split:
            respelled[f"splits spelled {given_split!r}, read as {split}"] += 1
        pair = Pair(row_id, root / image, text, label)
        (by_split[split] if split else unsplit).append(pair)
    if respelled:
        report.notes["read_as"] = dict(respelled)
    if unsplit and any(by_split.values()):
        raise PrepareError(
            f"some rows name a split and others do not ({len(unsplit):,} without, {sum(map(len, by_split.values())):,} with): "
            "give every row a split (train/val/test), or none"
        )
    if unsplit:
        rest, by_split["test"] = carve(unsplit, HELD_OUT)
        by_split["train"], by_split["val"] = carve(rest, HELD_OUT, seed=1)
        report.notes["splits_carved"] = f"{HELD_OUT:.0%} of each class to test, then {HELD_OUT:.0%} of the rest to val (seeds 0 and 1)"
    return by_split


def _split(value: Any) -> str | None:
    """train / val / test from the usual spellings (TRAIN, validation, dev, ...); None for no split, '?' for another."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    return SPLIT_SPELLINGS.get(value.strip().lower(), "?") if isinstance(value, str) else "?"


def _known(split: str | None) -> str:
    return split if split in SPLITS else "train"


def _what_is_wrong(row: dict[str, Any], label: Any, task: str) -> str:
    """Why a row cannot be a pair (`label` as `_label` read it), in words for dropped.jsonl."""
    image, text, given_split = row.get("image"), row.get("text"), row.get("split")
    if not isinstance(image, str) or not image:
        return "no image path (a text column `image`)"
    if not isinstance(text, str):
        return "no text (a text column `text`)"
    if label is None and task != "multi-label" and len(_label_list(row.get("labels", row.get("label"))) or []) > 1:
        return "several labels in a single-label import (import it with --task multi-label)"
    if label is None:
        return "no label (a name, a number, or for labels a JSON list or names joined by |)"
    return f"split {given_split!r} is not one of {', '.join(SPLIT_SPELLINGS)}"


def _name(value: Any) -> tuple[str | None, bool]:
    """A label as a name, and whether it was written otherwise: text with its spaces folded, or a whole
    number written out (3 -> '3')."""
    if isinstance(value, bool):
        return None, False
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer()):
        return str(int(value)), True
    if isinstance(value, str):
        folded = " ".join(value.split())
        return folded or None, folded != value
    return None, False


def _label(row: dict[str, Any], task: str) -> tuple[str | list[str] | None, bool]:
    """The row's label (a name) or labels (a list of names), or None; and whether any was respelled. A
    single-label import takes a one-element list as its one label, and refuses several (None)."""
    value = _label_list(row.get("labels", row.get("label")))
    if value is None:
        return None, False
    if isinstance(value, str):
        value = [part for part in value.split("|") if part.strip()] if task == "multi-label" else [value]
    names = [_name(v) for v in (value if isinstance(value, list | tuple) else [value])]
    if not names or any(name is None for name, _ in names):
        return None, False
    unique = list(dict.fromkeys(name for name, _ in names if name is not None))
    respelled = any(changed for _, changed in names)
    if task != "multi-label":  # a list of one label is that label, respelled
        return (unique[0], respelled or isinstance(value, list | tuple)) if len(unique) == 1 else (None, False)
    return unique, respelled


def _label_list(value: Any) -> Any:
    """A label cell as given, or the list a JSON list in a text cell holds (a CSV's `["a", "b"]`); None for a
    cell that starts like a JSON list and is not one."""
    if isinstance(value, str) and value.strip().startswith("["):
        try:
            return json.loads(value)
        except (ValueError, RecursionError):
            return None
    return value


def _drop_leaks(pairs: dict[str, list[Pair]], report: Report) -> None:
    """Drop val and test pairs whose image and text are a training pair's too (counted): a score on them
    would measure memory, not generalisation."""
    seen = {(pair.image, pair.text) for pair in pairs["train"]}
    for split in ("val", "test"):
        kept = []
        for pair in pairs[split]:
            if (pair.image, pair.text) in seen:
                report.drop(split, pair.id, ALSO_IN_TRAIN, str(pair.image.name))
            else:
                kept.append(pair)
        pairs[split] = kept


def _classes(pairs: dict[str, list[Pair]]) -> list[str]:
    """The training split's labels, sorted: a label seen only in val or test is dropped there as unknown."""
    names: set[str] = set()
    for pair in pairs["train"]:
        names.update(pair.label if isinstance(pair.label, list) else [pair.label])
    return sorted(names)
