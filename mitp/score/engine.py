"""Scoring a collection shard by shard on one machine: one onnxruntime session, decoding ahead of it in
worker processes, each output shard written whole, a rerun scoring only the shards that are missing.

DIR holds `shards/<shard>.parquet`, one per input shard, with one row per input row: `id`, `label` (the
decision; labels joined by `|` for a multi-label model), `score` (the decision's probability: the chosen
class's, or the highest chosen label's), `probabilities` (every class's, in the bundle's label order) and
`error` (why the row could not be scored; the other columns are then empty). `manifest.json` names the
bundle (its contract's and model's SHA-256), the variant and the mitp version, and for each shard its rows
in, scored and failed, and the reasons counted (`shards/<shard>.json`, gathered into the manifest). Each
file is replaced atomically and a shard's record is written after its scores, so a kill at any instant
leaves whole shards only; a rerun into the same DIR with another bundle or variant (`bundle.json`) is
refused rather than mixed.
"""

from __future__ import annotations

import glob
import os
from collections import Counter
from collections.abc import Callable, Collection, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from ..errors import MitpError
from ..files.atomic import TMP_SUFFIX, atomic_write_json, atomic_writer, file_sha256
from ..files.outputs import claim, mark, marker_kind
from .inputs import Row, Shard, input_shards, shard_rows

MANIFEST, SHARDS_DIR, IDENTITY_FILE = "manifest.json", "shards", "bundle.json"


class ScoreError(MitpError, ValueError):
    """Scores cannot be written as asked; the message says why."""


@dataclass(frozen=True)
class ScoreOptions:
    variant: str = "fp32"
    provider: str = "auto"
    batch_size: int = 32
    workers: int | None = None  # decoding processes; None: one per core but one, 0: in this process


Progress = Callable[[int], None]  # called with the rows just scored


def score_collection(
    source: Path, bundle: Path, out: Path, options: ScoreOptions = ScoreOptions(), progress: Progress | None = None,
    only: Collection[str] | None = None,
) -> dict[str, Any]:
    """Score every input shard (or those named in `only`) missing from `out`; returns the manifest. Jobs
    that score different shards of one collection into one `out` at once (the workflow's) do not collide:
    each shard's record is a file of its own beside it, and the manifest is gathered from them."""
    from ..runtime.predict import Predictor

    source, bundle, out = Path(source), Path(bundle), Path(out)
    shards = input_shards(source)
    root = source if source.is_dir() else source.parent
    if only is not None:
        unknown = sorted(set(only) - {s.name for s in shards})
        if unknown:
            raise ScoreError(f"{source} has no shard named {', '.join(unknown[:5])} (its shards: {', '.join(s.name for s in shards[:5])}{' ...' if len(shards) > 5 else ''})")
    identity = bundle_identity(bundle, options.variant)
    _open_output(out, identity, source)
    todo = [s for s in shards if (only is None or s.name in only) and not _done(out, s)]
    if todo:
        predictor = Predictor(bundle, options.provider, options.variant)
        workers = options.workers if options.workers is not None else max(0, min(4, (os.cpu_count() or 1) - 1))
        with _Decoder(bundle, workers) as decoder:
            for shard in todo:
                _clear_partial(out, shard)
                record = _score_shard(shard, root, predictor, decoder, options.batch_size, _shard_file(out, shard), progress)
                atomic_write_json(_record_file(out, shard), record)  # after its scores: a record means a whole shard
    return gather_manifest(out, identity, shards)


def gather_manifest(out: Path, identity: dict[str, str], shards: list[Shard]) -> dict[str, Any]:
    """manifest.json from the shards' records: the bundle, each shard's counts and reasons, the totals."""
    import json

    records = {s.name: json.loads(_record_file(out, s).read_text()) for s in shards if _done(out, s)}
    manifest = {
        "mitp_version": __version__,
        "bundle": identity,
        "shards": records,
        "rows_in": sum(r["rows"] for r in records.values()),
        "rows_failed": sum(r["failed"] for r in records.values()),
        "complete": len(records) == len(shards),
    }
    atomic_write_json(out / MANIFEST, manifest)
    return manifest


def _shard_file(out: Path, shard: Shard) -> Path:
    return out / SHARDS_DIR / f"{shard.name}.parquet"


def _record_file(out: Path, shard: Shard) -> Path:
    return out / SHARDS_DIR / f"{shard.name}.json"


def _clear_partial(out: Path, shard: Shard) -> None:
    """Remove what a killed run left of this shard (its files' temporary copies). Only this shard's: another
    job may be writing its own at this moment."""
    for name in (_shard_file(out, shard).name, _record_file(out, shard).name):
        for leftover in (out / SHARDS_DIR).glob(f".{glob.escape(name)}.*{TMP_SUFFIX}"):
            leftover.unlink(missing_ok=True)


def _done(out: Path, shard: Shard) -> bool:
    return _shard_file(out, shard).is_file() and _record_file(out, shard).is_file()


def bundle_identity(bundle: Path, variant: str) -> dict[str, str]:
    """What the scores depend on: the bundle's contract and the variant's model file, by hash."""
    from ..runtime.bundle import CONTRACT_FILE, VARIANT_FILES

    model = Path(bundle) / VARIANT_FILES.get(variant, "")
    if not model.is_file():
        raise ScoreError(f"{bundle} has no {variant} model to score with")
    return {"contract_sha256": file_sha256(Path(bundle) / CONTRACT_FILE), "model_sha256": file_sha256(model), "variant": variant}


def _open_output(out: Path, identity: dict[str, str], source: Path) -> None:
    """Claim `out` for scores made with `identity`: new, or an earlier run's with the same bundle and variant."""
    import json

    claim(out, "scores", inputs=(source,))
    if marker_kind(out) != "scores":
        out.mkdir(parents=True, exist_ok=True)
        mark(out, "scores")
    path = out / IDENTITY_FILE
    if path.is_file():
        try:
            earlier = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise ScoreError(f"{path} cannot be read ({err}): name another --out") from None
        if earlier != identity:
            raise ScoreError(f"{out} holds scores of another bundle or variant ({earlier.get('variant') if isinstance(earlier, dict) else '?'}); scores are never mixed: name another --out")
    else:
        atomic_write_json(path, identity)  # jobs that start together write the same


def _score_shard(shard: Shard, root: Path, predictor: Any, decoder: _Decoder, batch_size: int, target: Path, progress: Progress | None) -> dict[str, Any]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns: dict[str, list[Any]] = {"id": [], "label": [], "score": [], "probabilities": [], "error": []}
    reasons: Counter[str] = Counter()
    for rows, prepared in decoder.prepare(_batches(shard_rows(shard, root), batch_size)):
        pixels, ids, mask, problems = prepared
        good = [i for i, problem in enumerate(problems) if problem is None]
        probabilities = predictor.decide(predictor.logits(pixels, ids, mask)) if good else np.zeros((0, 0), np.float32)  # (G, K)
        scored = dict(zip(good, probabilities, strict=True))
        for i, row in enumerate(rows):
            columns["id"].append(row.id)
            if i in scored:
                decision = predictor.prediction(scored[i], False)
                columns["label"].append(decision.label)
                columns["score"].append(max((decision.scores[label] for label in decision.labels), default=max(decision.scores.values())))
                columns["probabilities"].append(scored[i].astype(np.float32).tolist())
                columns["error"].append(None)
            else:
                reasons[str(problems[i])] += 1
                for name in ("label", "score", "probabilities"):
                    columns[name].append(None)
                columns["error"].append(problems[i])
        if progress is not None:
            progress(len(rows))
    schema = pa.schema([("id", pa.string()), ("label", pa.string()), ("score", pa.float32()), ("probabilities", pa.list_(pa.float32())), ("error", pa.string())])
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_writer(target, "wb") as f:
        pq.write_table(pa.table(columns, schema=schema), f)
    rows_in = len(columns["id"])
    return {"file": f"{SHARDS_DIR}/{target.name}", "rows": rows_in, "scored": rows_in - sum(reasons.values()), "failed": sum(reasons.values()), "reasons": dict(reasons.most_common(20))}


def _batches(rows: Iterator[Row], size: int) -> Iterator[list[Row]]:
    while batch := list(islice(rows, size)):
        yield batch


class _Decoder:
    """Decoding and tokenizing ahead of the model: in worker processes, or in this one (workers=0)."""

    def __init__(self, bundle: Path, workers: int):
        self.bundle, self.workers = bundle, workers
        self.pool: ProcessPoolExecutor | None = None

    def __enter__(self) -> _Decoder:
        if self.workers:
            self.pool = ProcessPoolExecutor(self.workers, initializer=_init_worker, initargs=(self.bundle,))
        else:
            _init_worker(self.bundle)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.pool is not None:
            self.pool.shutdown(cancel_futures=True)

    def prepare(self, batches: Iterator[list[Row]]) -> Iterator[tuple[list[Row], Any]]:
        """Each batch with its prepared arrays, in order; up to two batches per worker decoded ahead."""
        if self.pool is None:
            for batch in batches:
                yield batch, _prepare(batch)
            return
        ahead: list[tuple[list[Row], Future]] = []
        for batch in batches:
            ahead.append((batch, self.pool.submit(_prepare, batch)))
            if len(ahead) > 2 * self.workers:
                rows, future = ahead.pop(0)
                yield rows, future.result()
        for rows, future in ahead:
            yield rows, future.result()


_worker: dict[str, Any] = {}


def _init_worker(bundle: Path) -> None:
    from ..runtime.bundle import TOKENIZER_FILE, read_contract
    from ..runtime.tokenizer import load_tokenizer_file

    contract = read_contract(bundle)
    normalize = contract["image"]["normalize"]
    _worker.update(size=contract["image"]["size"], mean_std=(normalize["mean"], normalize["std"]), tokenizer=load_tokenizer_file(Path(bundle) / TOKENIZER_FILE))


def _prepare(rows: list[Row]) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str | None]]:
    """Pixels (G, 3, H, W) and tokens (G, 77) x 2 of the rows that can be scored, and each row's problem."""
    from ..runtime.predict import check_caption
    from ..runtime.preprocess import load_image, load_image_bytes, preprocess_image

    size, (mean, std), tokenizer = _worker["size"], _worker["mean_std"], _worker["tokenizer"]
    pixels, captions, problems = [], [], []
    for row in rows:
        problem, source = row.problem or (None if row.image is not None else "no image"), row.image
        if problem is None and source is not None:
            try:
                check_caption(row.caption)
                image = load_image_bytes(source, f"image of {row.id}") if isinstance(source, bytes) else load_image(source)
                pixels.append(preprocess_image(image, size, mean, std))
                captions.append(row.caption)
            except MitpError as err:
                problem = str(err)
        problems.append(problem)
    if not captions:
        return np.zeros((0, 3, size, size), np.float32), np.zeros((0, 77), np.int64), np.zeros((0, 77), np.int64), problems
    ids, mask, _ = tokenizer.encode(captions)
    return np.stack(pixels), ids, mask, problems
