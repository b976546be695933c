"""The collection that `mitp score` reads: its shards, and the rows of each, whatever form the input takes.

INPUT is one table file (parquet, CSV or JSON lines: one shard), a folder of parquet files (one shard each,
as Spark and img2dataset write them), or WebDataset tar shards (one `.tar`, or a folder of them: an image
and a caption per sample, the open_clip / img2dataset layout). A row of a table has an image (a path
relative to the input's folder, or the image file's bytes), a caption (`caption`, or `text`), and an
optional `id`; a sample of a tar has `<key>.jpg` (or png, webp, ...) and `<key>.txt` (or a `<key>.json`
with a `caption`), its id the key. A row without an id is named by its place: `<shard>:<row>`.

Reading never fails on a bad row: a row that cannot be scored (no image, no caption) carries the reason,
and the scorer records it beside the others. A malformed input as a whole (no such file, a table without
an image or caption column, an unreadable tar) is a ScoreInputError with one line.
"""

from __future__ import annotations

import json
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import MitpError

TABLE_KINDS = {".parquet": "parquet", ".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl", ".tar": "tar"}
IMAGE_SUFFIXES = ("jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff")
CAPTION_COLUMNS = ("caption", "text")
BATCH_ROWS = 1024  # rows read from a parquet or CSV file at a time: the shard is never held whole


class ScoreInputError(MitpError, ValueError):
    """The input cannot be read as a collection; the message says why."""


@dataclass(frozen=True)
class Shard:
    name: str  # the output's stem, unique within the input: its path below the input, with `/` as `__`
    path: Path
    kind: str  # parquet | csv | jsonl | tar


@dataclass(frozen=True)
class Row:
    id: str
    image: bytes | Path | None  # the image file's bytes, or where it is
    caption: str | None
    problem: str | None = None  # why it cannot be scored, when that is known from the input alone


def input_shards(source: Path) -> list[Shard]:
    """The shards of `source`, in a fixed order (sorted by name)."""
    source = Path(source)
    if source.is_file():
        kind = TABLE_KINDS.get(source.suffix.lower())
        if kind is None:
            raise ScoreInputError(f"{source}: not a parquet, CSV, JSON-lines or tar file (by its name)")
        return [Shard(source.stem, source, kind)]
    if not source.is_dir():
        raise ScoreInputError(f"{source} is neither a file nor a folder")
    found = sorted(p for p in source.rglob("*") if p.is_file() and p.suffix.lower() in (".parquet", ".tar"))
    kinds = {p.suffix.lower() for p in found}
    if not found:
        raise ScoreInputError(f"{source} holds no parquet or tar shards")
    if len(kinds) > 1:
        raise ScoreInputError(f"{source} mixes parquet and tar shards: give one kind per input")
    return [Shard("__".join(p.relative_to(source).with_suffix("").parts), p, TABLE_KINDS[p.suffix.lower()]) for p in found]


def shard_rows(shard: Shard, root: Path) -> Iterator[Row]:
    """The rows of one shard; image paths are read relative to `root` (the input's folder)."""
    if shard.kind == "tar":
        yield from _tar_rows(shard)
        return
    position = 0
    for records in _table_batches(shard):
        for record in records:
            yield _table_row(record, shard, position, root)
            position += 1


def _table_batches(shard: Shard) -> Iterator[list[dict[str, Any]]]:
    """The shard's records, a batch at a time, with its columns checked once."""
    if shard.kind == "jsonl":
        yield from _jsonl_batches(shard.path)
        return
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    try:
        if shard.kind == "parquet":
            reader = pq.ParquetFile(shard.path)
            columns = reader.schema_arrow.names
            batches = reader.iter_batches(batch_size=BATCH_ROWS)
        else:  # every CSV column as text: an id of digits stays as written
            as_text = pacsv.ConvertOptions(column_types={name: pa.string() for name in _csv_header(shard.path)}, strings_can_be_null=False)
            reader = pacsv.open_csv(shard.path, read_options=pacsv.ReadOptions(block_size=1 << 22), convert_options=as_text)
            columns = reader.schema.names
            batches = reader
        _check_columns(columns, shard)
        for batch in batches:
            yield batch.to_pylist()
    except (pa.ArrowException, OSError) as err:
        raise ScoreInputError(f"{shard.path} cannot be read as {shard.kind}: {str(err).splitlines()[0][:200]}") from None


def _csv_header(path: Path) -> list[str]:
    import csv

    try:
        with path.open(newline="", encoding="utf-8") as f:
            return next(csv.reader(f), [])
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise ScoreInputError(f"{path} cannot be read as CSV: {err}") from None


def _jsonl_batches(path: Path) -> Iterator[list[dict[str, Any]]]:
    batch: list[dict[str, Any]] = []
    checked = False
    try:
        with path.open(encoding="utf-8") as lines:
            for number, line in enumerate(lines, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as err:
                    record = {"__problem__": f"line {number} is not JSON ({err.msg})"}
                if not isinstance(record, dict):
                    record = {"__problem__": f"line {number} is not a JSON object"}
                elif not checked and "__problem__" not in record:
                    _check_columns(list(record), Shard(path.stem, path, "jsonl"))
                    checked = True
                batch.append(record)
                if len(batch) == BATCH_ROWS:
                    yield batch
                    batch = []
    except (OSError, UnicodeDecodeError) as err:
        raise ScoreInputError(f"{path} cannot be read as JSON lines: {err}") from None
    if batch:
        yield batch


def _check_columns(columns: list[str], shard: Shard) -> None:
    if "image" not in columns or not any(c in columns for c in CAPTION_COLUMNS):
        raise ScoreInputError(f"{shard.path}: a table to score needs an `image` column and a `caption` (or `text`) column; it has {', '.join(columns[:20]) or 'none'}")


def _table_row(record: dict[str, Any], shard: Shard, position: int, root: Path) -> Row:
    given = record.get("id")
    row_id = str(given) if given is not None and str(given) != "" else f"{shard.name}:{position}"
    if "__problem__" in record:
        return Row(row_id, None, None, record["__problem__"])
    caption = next((record[c] for c in CAPTION_COLUMNS if c in record), None)
    image = record.get("image")
    if isinstance(image, dict):  # the Hugging Face datasets layout: {"bytes": ..., "path": ...}
        image = image.get("bytes") or image.get("path")
    problem = None
    if isinstance(image, str) and image:
        image = root / image
    elif not isinstance(image, bytes) or not image:
        image, problem = None, "no image (neither a path nor the image's bytes)"
    if not isinstance(caption, str):
        caption, problem = None, problem or "no caption"
    return Row(row_id, image, caption, problem)


def _tar_rows(shard: Shard) -> Iterator[Row]:
    """A WebDataset shard: members grouped by key (the name before its first dot), in the order they come."""
    try:
        with tarfile.open(shard.path) as tar:
            key, parts = None, {}
            for member in tar:
                if not member.isfile():
                    continue
                name = member.name.rsplit("/", 1)[-1]
                this, _, suffix = name.partition(".")
                stem = member.name[: len(member.name) - len(name)] + this
                if stem != key and key is not None:
                    yield _sample(key, parts)
                    parts = {}
                key = stem
                file = tar.extractfile(member)
                parts[suffix.lower()] = file.read() if file is not None else b""
            if key is not None:
                yield _sample(key, parts)
    except (tarfile.TarError, OSError, EOFError) as err:
        raise ScoreInputError(f"{shard.path} cannot be read as a tar shard: {err}") from None


def _sample(key: str, parts: dict[str, bytes]) -> Row:
    image = next((parts[s] for s in IMAGE_SUFFIXES if s in parts), None)
    caption, problem = None, None
    try:
        if "txt" in parts:
            caption = parts["txt"].decode("utf-8")
        elif "json" in parts:
            meta = json.loads(parts["json"])
            caption = meta.get("caption") if isinstance(meta, dict) and isinstance(meta.get("caption"), str) else None
    except UnicodeDecodeError:
        problem = "the caption is not UTF-8 text"
    except json.JSONDecodeError:
        problem = "the sample's json is not JSON"
    if image is None:
        problem = "no image in the sample"
    elif caption is None:
        problem = problem or "no caption in the sample"
    return Row(key, image, caption, problem)
