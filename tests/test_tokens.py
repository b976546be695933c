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

import mitp.data.tokens as tokens
from mitp.config import parse_config, resolve_run
from mitp.data.dataset import build_split
from mitp.data.prepare import prepare_dataset
from mitp.data.tokens import TOKENS_DIR, tokenize_texts
from mitp.runtime.tokenizer import build_word_tokenizer

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


WORDS = "a an the of and with on in at to is this photo red green blue dog man woman runs sits plays outside".split()


def _caption(rng: np.random.Generator, low: int = 5, high: int = 15) -> str:
    return " ".join(rng.choice(WORDS, rng.integers(low, high)))


def _snlive(raw, pairs: int, rng) -> str:
    """SNLI-VE: hypotheses sharing a few Flickr30k images, as SNLI-VE's do."""
    (raw / "flickr30k_images").mkdir(parents=True)
    for i in range(8):
        Image.new("RGB", (40, 30), (30 * i, 90, 200)).save(raw / "flickr30k_images" / f"{i}.jpg")
    for upstream, count in (("train", pairs), ("dev", 200), ("test", 200)):
        with open(raw / f"snli_ve_{upstream}.jsonl", "w") as f:
            for n in range(count):
                f.write(json.dumps({"Flickr30K_ID": str(n % 8), "sentence2": _caption(rng), "gold_label": "neutral", "pairID": f"{upstream}{n}"}) + "\n")
    return "snlive"


def _food101(raw, pairs: int, rng) -> str:
    """UPMC-Food101: one image per pair (hard links of one small JPEG: a path each, decoded each)."""
    seed = raw / "seed.jpg"
    raw.mkdir(parents=True)
    Image.new("RGB", (40, 30), (200, 90, 30)).save(seed)
    for split, count in (("train", pairs), ("test", 200)):
        lines = []
        for n in range(count):
            label = ("apple_pie", "sushi")[n % 2]
            path = raw / "images" / split / label / f"{label}_{n}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            os.link(seed, path)
            lines.append(f"{path.name},{_caption(rng)},{label}")
        (raw / "texts").mkdir(exist_ok=True)
        (raw / "texts" / f"{split}_titles.csv").write_text("\n".join(lines) + "\n")
    return "food101"


def _mmimdb(raw, pairs: int, rng) -> str:
    """MM-IMDB: one poster and one record per movie, with long plots (cut to 77 words before BPE)."""
    base = raw / "mmimdb"
    (base / "dataset").mkdir(parents=True)
    seed = raw / "seed.jpeg"
    Image.new("RGB", (40, 30), (90, 30, 200)).save(seed)
    ids = [f"{n:07d}" for n in range(pairs + 400)]
    for movie in ids:
        os.link(seed, base / "dataset" / f"{movie}.jpeg")
        (base / "dataset" / f"{movie}.json").write_text(json.dumps({"plot": [_caption(rng, 150, 400)], "genres": ["Drama"]}))
    (base / "split.json").write_text(json.dumps({"train": ids[:pairs], "dev": ids[pairs : pairs + 200], "test": ids[pairs + 200 :]}))
    return "mmimdb"


@pytest.mark.slow
@pytest.mark.parametrize("layout, pairs", [(_snlive, 120_000), (_food101, 20_000), (_mmimdb, 8_000)], ids=["snlive", "food101", "mmimdb"])
def test_a_large_split_starts_from_its_stored_ids_in_bounded_memory(tmp_path, layout, pairs):
    """Each upstream layout at a size where tokenizing every caption at once shows (SNLI-VE at 120,000
    hypotheses took 1,149 MB that way, measured): the first start tokenizes in chunks, the next reads the
    stored ids, both in bounded memory. Measured in a fresh process from its peak RSS."""
    name = layout(tmp_path / "raw", pairs, np.random.default_rng(0))
    prepare_dataset(name, tmp_path / "raw", tmp_path / "prepared")
    task = "multi-label" if name == "mmimdb" else "single-label"
    script = textwrap.dedent(f"""
        import json
        from mitp.config import parse_config, resolve_run
        from mitp.data.dataset import build_split
        from mitp.runtime.tokenizer import build_word_tokenizer

        def mb(key):
            return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith(key)) / 1024

        config = {{"backbone": "preset:tiny", "datasets": {{"d": {{"task": {task!r}, "data_dir": {str(tmp_path / 'prepared')!r}}}}},
                  "settings": {{"mitp": {{"variant": "mitp"}}}}}}
        run, tokenizer = resolve_run(parse_config(config), "d", "mitp"), build_word_tokenizer()
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
    train_pairs = json.loads((tmp_path / "prepared" / "prepare_report.json").read_text())["counts"]["train"]
    assert first["rows"] == second["rows"] == train_pairs > 0.8 * pairs
    assert "tokenized once and stored" in first["source"] and "read from" in second["source"]
    assert first["growth_mb"] < 500 and second["growth_mb"] < 300, (first, second)
