"""Token ids of a prepared split, computed once per tokenizer and kept beside the split.

Building SNLI-VE's training split tokenized all 529,527 captions at every `train` and `evaluate` start
(40-70 s, and 6.8 GB at the peak from the lists of per-caption encodings). Here captions are tokenized in
chunks into preallocated int32 ids and a bool mask (what they are: ids < 2^31, a 0/1 mask), and stored in
`<prepared>/tokens/<key>/` where the key hashes the tokenizer file, the caption rule and the split's parquet
file: another tokenizer, a new rule or data prepared again never reuse stale ids. Training processes that
start together build the file once, under a lock; a prepared folder that cannot be written (read-only
storage) is tokenized in memory, chunk by chunk, every time.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from ..files.atomic import build_directory, file_sha256
from ..files.outputs import add_entries
from ..runtime.tokenizer import ClipTokenizer

TOKENS_DIR = "tokens"
RULE_VERSION = 1  # bump when caption cleaning or cutting changes the ids
CHUNK = 8192  # captions per tokenizer call: bounds the encodings alive at once


def tokenize_texts(tokenizer: ClipTokenizer, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(ids int32 (N, L), mask bool (N, L)) of `texts`, tokenized CHUNK at a time into preallocated arrays."""
    length = tokenizer.info.max_length
    ids = np.empty((len(texts), length), dtype=np.int32)
    mask = np.empty((len(texts), length), dtype=bool)
    for start in range(0, len(texts), CHUNK):
        chunk_ids, chunk_mask, _ = tokenizer.encode(list(texts[start : start + CHUNK]))  # (C, L) int64 each
        ids[start : start + len(chunk_ids)] = chunk_ids
        mask[start : start + len(chunk_ids)] = chunk_mask
    return ids, mask


def split_key(tokenizer: ClipTokenizer, parquet: Path) -> str:
    """What the ids of a split depend on: the tokenizer (its whole file), the caption rule, the split's file."""
    digest = hashlib.sha256()
    digest.update(tokenizer.tokenizer.to_str().encode())
    digest.update(f"max_length={tokenizer.info.max_length} rule={RULE_VERSION}".encode())
    digest.update(file_sha256(parquet).encode())
    return digest.hexdigest()[:24]


def split_tokens(
    data_dir: Path, split: str, tokenizer: ClipTokenizer, read_texts: Callable[[], list[str]]
) -> tuple[np.ndarray, np.ndarray, str]:
    """(ids, mask, where they came from) of a prepared split: read from its token file, or tokenized from
    `read_texts()` and stored for the next start (in memory only when the folder cannot be written)."""
    folder = Path(data_dir) / TOKENS_DIR / split_key(tokenizer, Path(data_dir) / f"{split}.parquet")
    stored = _read(folder)
    if stored is not None:
        return *stored, f"token ids read from {folder}"
    try:
        (folder.parent).mkdir(parents=True, exist_ok=True)
        lock = open(folder.parent / ".lock", "a+")  # noqa: SIM115 (held while building)
    except OSError:  # read-only prepared data: tokenize, keep nothing
        return *tokenize_texts(tokenizer, read_texts()), "captions tokenized in memory (the prepared folder cannot be written)"
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be building the same file: wait for it
        stored = _read(folder)
        if stored is not None:
            return *stored, f"token ids read from {folder}"
        ids, mask = tokenize_texts(tokenizer, read_texts())
        with build_directory(folder) as tmp:
            np.save(tmp / "ids.npy", ids)
            np.save(tmp / "mask.npy", mask)
            (tmp / "info.json").write_text(json.dumps({"split": split, "rows": len(ids), "rule_version": RULE_VERSION}) + "\n")
        add_entries(Path(data_dir), [TOKENS_DIR])  # part of the prepared folder: a later prepare may replace it
    return ids, mask, f"captions tokenized once and stored in {folder}"


def _read(folder: Path) -> tuple[np.ndarray, np.ndarray] | None:
    try:
        ids, mask = np.load(folder / "ids.npy"), np.load(folder / "mask.npy")
    except (OSError, ValueError):
        return None
    if ids.ndim != 2 or ids.shape != mask.shape or ids.dtype != np.int32 or mask.dtype != bool:
        return None  # not what this module writes: tokenized again
    return ids, mask
