"""The image cache: the pixels a model sees are identical with and without it, and identical to predict's."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from PIL import Image
from typer.testing import CliRunner

from mitp.cli import app
from mitp.config import parse_config, resolve_run
from mitp.data.cache import CACHE_DIR, ImageCache
from mitp.data.dataset import build_split, pixel_values
from mitp.data.prepare import prepare_dataset
from mitp.data.twins import make_twin
from mitp.runtime.preprocess import load_image, preprocess_image
from mitp.runtime.tokenizer import build_word_tokenizer

from .conftest import TWIN_SIZES

SIZES = TWIN_SIZES


def food_run(data_dir):
    config = {
        "backbone": "preset:tiny",
        "datasets": {"food": {"task": "single-label", "data_dir": str(data_dir), "best_layers": [2], "small_layers": [2]}},
        "settings": {"mitp": {"variant": "mitp"}},
    }
    return resolve_run(parse_config(config), "food", "mitp")


def test_cached_and_decoded_pixels_are_identical_and_match_predict(tmp_path, prepared_twin):
    prepared_twin(into=tmp_path, prepared="plain")  # raw/ comes with it
    report = prepare_dataset("demo-food101", tmp_path / "raw", tmp_path / "cached", cache_size=32)
    cache = report["image_cache"]
    assert cache["size"] == 32 and cache["images"] == sum(report["counts"].values())  # one image per twin pair
    assert cache["bytes_on_disk"] >= cache["rows"] * 32 * 32 * 3  # the report states the size on disk
    tokenizer = build_word_tokenizer()
    for split in ("train", "val", "test"):
        cached = build_split(food_run(tmp_path / "cached"), split, tokenizer, 32)
        decoded = build_split(food_run(tmp_path / "plain"), split, tokenizer, 32)
        assert cached.cache is not None and decoded.cache is None
        for i in range(len(cached)):
            assert torch.equal(cached[i]["pixels"], decoded[i]["pixels"]), (split, i)
            expected = preprocess_image(load_image(decoded.image_paths[i]), 32)  # what `mitp predict` feeds
            got = pixel_values({"pixels": cached[i]["pixels"][None]})[0].numpy()
            assert got.dtype == np.float32 and np.array_equal(got, expected), (split, i)


def test_an_image_shared_by_many_pairs_is_cached_once(tmp_path):
    make_twin("demo-snlive", tmp_path / "raw", sizes=SIZES)
    for upstream in ("train", "dev", "test"):  # every hypothesis of a split about its first image, as SNLI-VE does
        path = tmp_path / "raw" / f"snli_ve_{upstream}.jsonl"
        records = [json.loads(line) for line in path.read_text().splitlines()]
        for record in records:
            record["Flickr30K_ID"] = records[0]["Flickr30K_ID"]
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
    report = prepare_dataset("demo-snlive", tmp_path / "raw", tmp_path / "snli", cache_size=32)
    assert report["image_cache"]["rows"] == 3 and sum(report["counts"].values()) == sum(SIZES.values())


def test_a_cache_of_another_size_or_rule_is_not_used_and_one_can_be_added(tmp_path, prepared_twin):
    prepared_twin(into=tmp_path, prepared="food", cache_size=32)
    assert ImageCache.open(tmp_path / "food", 48) is None
    info = tmp_path / "food" / CACHE_DIR / "32" / "cache.json"
    stale = json.loads(info.read_text())
    info.write_text(json.dumps({**stale, "rule_version": 0}))
    assert ImageCache.open(tmp_path / "food", 32) is None  # made under another image rule: the JPEG path is used
    result = CliRunner().invoke(app, ["data", "cache", str(tmp_path / "food"), "--size", "48"])
    assert result.exit_code == 0, result.output
    dataset = build_split(food_run(tmp_path / "food"), "test", build_word_tokenizer(), 48)
    assert dataset.cache is not None and dataset[0]["pixels"].shape == (48, 48, 3)
    prepare_dataset("demo-food101", tmp_path / "raw", tmp_path / "food", cache_size=32)  # the added cache is the folder's: replaceable


def test_a_damaged_image_found_while_caching_is_dropped_like_at_preparation(tmp_path):
    make_twin("demo-food101", tmp_path / "raw", sizes=SIZES)
    victim = sorted((tmp_path / "raw" / "images" / "train").rglob("*.jpg"))[0]
    victim.write_bytes(b"not an image")
    report = prepare_dataset("demo-food101", tmp_path / "raw", tmp_path / "food", cache_size=32)
    assert [reasons for reasons in report["dropped"].values() if "unreadable image" in reasons] == [{"unreadable image": 1}]
    names = json.loads((tmp_path / "food" / CACHE_DIR / "32" / "images.json").read_text())
    assert names.count(None) == 1  # its row stays empty and is never read
    table = pq.read_table(tmp_path / "food" / "train.parquet").to_pydict()
    pq.write_table(pa.table({**{k: v[:1] for k, v in table.items()}, "image": ["../raw/not-in-the-cache.jpg"]}), tmp_path / "food" / "val.parquet")
    Image.new("RGB", (40, 40)).save(tmp_path / "raw" / "not-in-the-cache.jpg")
    val = build_split(food_run(tmp_path / "food"), "val", build_word_tokenizer(), 32)
    assert val.cache is None and val[0]["pixels"].shape == (32, 32, 3)  # an image the cache lacks: the JPEG path


def test_training_says_which_path_feeds_each_split_and_warns_for_a_gpu(tmp_path, prepared_twin):
    from mitp.data.dataset import image_path_lines

    prepared_twin(into=tmp_path, prepared="food", cache_size=32)
    tokenizer = build_word_tokenizer()
    cached = build_split(food_run(tmp_path / "food"), "train", tokenizer, 32)
    plain = build_split(food_run(tmp_path / "food"), "train", tokenizer, 48)  # no cache of 48 px
    lines = image_path_lines({"cached": cached, "plain": plain}, on_gpu=False)
    (_, cached_line), (_, plain_line) = lines
    assert "images from the image cache (32 px" in cached_line
    assert "JPEG decoding (no image cache of 48 px" in plain_line and f"mitp data cache {tmp_path / 'food'} --size 48" in plain_line
    assert not any(warning for warning, _ in lines)  # no warning on a CPU
    big = plain.subset(np.repeat(np.arange(len(plain)), 1 + 10_000 // len(plain)))
    (warning, text), = image_path_lines({"train": big}, on_gpu=True)
    assert warning and "too slow to keep a GPU busy" in text
