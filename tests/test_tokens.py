"""Token ids of a prepared split: computed in chunks into compact arrays, stored once per tokenizer beside
the split, reused at the next start, recomputed when the tokenizer or the data change."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image

import mitp.tokens as tokens
from mitp.config import parse_config, resolve_run
from mitp.data import build_split
from mitp.prepare import prepare_dataset
from mitp.runtime.tokenizer import build_word_tokenizer
from mitp.tokens import TOKENS_DIR, tokenize_texts

from .conftest import ROOT


def test_chunked_ids_equal_the_tokenizers_own(monkeypatch):
    tokenizer = build_word_tokenizer()
    texts = [f"a photo of {'red ' * i}dog" for i in range(100)]
    monkeypatch.setattr(tokens, "CHUNK", 7)  # many chunk boundaries
    ids, mask = tokenize_texts(tokenizer, texts)
    expected_ids, expected_mask = tokenizer(texts)
    assert ids.dtype == np.int32 and mask.dtype == bool
    assert np.array_equal(ids, expected_ids) and np.array_equal(mask, expected_mask)


def _food_run(data_dir):
    config = {
        "backbone": "preset:tiny",
        "datasets": {"food": {"task": "single-label", "data_dir": str(data_dir), "best_layers": [2, 3], "small_layers": [3]}},
        "settings": {"mitp": {"variant": "mitp"}},
    }
    return resolve_run(parse_config(config), "food", "mitp")


def test_split_ids_are_stored_once_and_recomputed_when_the_tokenizer_or_the_data_change(prepared_twin, tmp_path):
    prepared = prepared_twin(into=tmp_path, prepared="food")
    tokenizer = build_word_tokenizer()
    first = build_split(_food_run(prepared), "train", tokenizer, 32)
    assert "tokenized once and stored" in first.token_source
    again = build_split(_food_run(prepared), "train", tokenizer, 32)
    assert "token ids read from" in again.token_source
    assert np.array_equal(first.input_ids, again.input_ids) and first[0]["input_ids"].dtype.is_floating_point is False
    other = build_split(_food_run(prepared), "train", build_word_tokenizer(["other", "words"]), 32)
    assert "tokenized once and stored" in other.token_source  # another tokenizer: its own file
    assert len(list((prepared / TOKENS_DIR).iterdir())) == 3  # two tokenizers' train split, and the lock
    prepare_dataset("demo-food101", tmp_path / "raw", prepared)  # prepared again: the parquet changed, ids are recomputed
    assert "tokenized once and stored" in build_split(_food_run(prepared), "train", tokenizer, 32).token_source


def test_a_read_only_prepared_folder_is_tokenized_in_memory(prepared_twin, tmp_path, monkeypatch):
    prepared = prepared_twin(into=tmp_path, prepared="food")
    real_mkdir = type(prepared).mkdir

    def read_only(self, *args, **kwargs):
        if self.name == TOKENS_DIR:
            raise PermissionError(13, "Permission denied", str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(type(prepared), "mkdir", read_only)
    split = build_split(_food_run(prepared), "val", build_word_tokenizer(), 32)
    assert "tokenized in memory" in split.token_source and not (prepared / TOKENS_DIR).exists()


@pytest.mark.slow
def test_an_snlive_sized_split_starts_from_its_stored_ids_in_bounded_memory(tmp_path):
    """SNLI-VE's layout at 120,000 hypotheses (sharing a few Flickr30k images, as SNLI-VE's do): the first
    start tokenizes in chunks, well under the ~1.1 GB that tokenizing all captions at once takes at this size
    (measured: 1,149 MB); the next start reads the ids. Measured in a fresh process from its peak RSS."""
    raw = tmp_path / "raw"
    (raw / "flickr30k_images").mkdir(parents=True)
    for i in range(8):
        Image.new("RGB", (40, 30), (30 * i, 90, 200)).save(raw / "flickr30k_images" / f"{i}.jpg")
    words = "a an the of and with on in at to is this photo red green blue dog man woman runs sits plays outside".split()
    rng = np.random.default_rng(0)
    for upstream, count in (("train", 120_000), ("dev", 200), ("test", 200)):
        with open(raw / f"snli_ve_{upstream}.jsonl", "w") as f:
            for n in range(count):
                text = " ".join(rng.choice(words, rng.integers(5, 15)))
                f.write(json.dumps({"Flickr30K_ID": str(n % 8), "sentence2": text, "gold_label": "neutral", "pairID": f"{upstream}{n}"}) + "\n")
    prepare_dataset("snlive", raw, tmp_path / "snli")
    script = textwrap.dedent(f"""
        import json, time
        from mitp.config import parse_config, resolve_run
        from mitp.data import build_split
        from mitp.runtime.tokenizer import build_word_tokenizer

        def mb(key):
            return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith(key)) / 1024

        config = {{"backbone": "preset:tiny", "datasets": {{"snli": {{"task": "single-label", "data_dir": {str(tmp_path / 'snli')!r}}}}},
                  "settings": {{"mitp": {{"variant": "mitp"}}}}}}
        run, tokenizer = resolve_run(parse_config(config), "snli", "mitp"), build_word_tokenizer()
        out = []
        for _ in range(2):
            open("/proc/self/clear_refs", "w").write("5")  # reset the peak
            base = mb("VmRSS")
            split = build_split(run, "train", tokenizer, 32)
            out.append({{"growth_mb": mb("VmHWM") - base, "source": split.token_source, "rows": len(split)}})
            del split
        print(json.dumps(out))
    """)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr
    first, second = json.loads(result.stdout.splitlines()[-1])
    assert first["rows"] == second["rows"] == 120_000
    assert "tokenized once and stored" in first["source"] and "read from" in second["source"]
    assert first["growth_mb"] < 500 and second["growth_mb"] < 300, (first, second)
