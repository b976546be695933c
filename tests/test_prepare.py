"""`mitp data prepare` on small raw folders in each upstream layout, awkward cases included."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from mitp.data.prepare import MMIMDB_GENRES, PrepareError, parse_food101_line, prepare_dataset


def _image(path: Path, colour=(200, 30, 30)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (40, 30), colour).save(path)


def _corrupt(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")


def _read(out: Path, split: str) -> dict[str, list]:
    return pq.read_table(out / f"{split}.parquet").to_pydict()


def _report(out: Path) -> dict:
    return json.loads((out / "prepare_report.json").read_text())


# --------------------------------------------------------------------------------------------- Food101


def _food101_raw(root: Path) -> None:
    """4 classes x 10 train pairs, plus awkward lines; a small test split."""
    lines = []
    for label in ("apple_pie", "sushi", "ramen", "pho"):
        for n in range(10):
            name = f"{label}_{n}.jpg"
            _image(root / "images" / "train" / label / name)
            lines.append(f'{name},"Best {label}, with ""extra"" sauce",{label}')
    _image(root / "images" / "train" / "sushi" / "sushi_90.jpg")
    _image(root / "images" / "train" / "sushi" / "sushi_91.jpg")
    _image(root / "images" / "train" / "pho" / "pho_92.jpg")
    lines += [
        'sushi_90.jpg,"Broken quote, never closed,sushi',  # malformed quoting: recovered
        "sushi_91.jpg,plain title without quotes,sushi",  # a naive csv reader would have swallowed this
        "pho_92.jpg,,pho",  # missing text
        "ramen_93.jpg,image never downloaded,ramen",  # missing image
        "just garbage",  # malformed, unreadable
    ]
    _corrupt(root / "images" / "train" / "ramen" / "ramen_94.jpg")
    lines.append("ramen_94.jpg,corrupt file,ramen")  # unreadable image
    (root / "texts").mkdir(parents=True)
    (root / "texts" / "train_titles.csv").write_text("\n".join(lines) + "\n")
    test_lines = []
    for label in ("apple_pie", "sushi"):
        name = f"{label}_100.jpg"
        _image(root / "images" / "test" / label / name)
        test_lines.append(f"{name},test {label},{label}")
    _image(root / "images" / "test" / "pizza" / "pizza_1.jpg")
    test_lines.append("pizza_1.jpg,a class never seen in train,pizza")  # unknown label
    (root / "texts" / "test_titles.csv").write_text("\r\n".join(test_lines) + "\r\n")


def test_food101_header_captions_encoding_and_huge_images(tmp_path):
    """A header line is skipped and counted (never a 102nd class), HTML entities and whitespace are cleaned
    and counted, a line with bytes that are not UTF-8 is kept with U+FFFD and counted, and an image above
    the decompression-bomb limit is dropped under its own reason instead of stopping the preparation."""
    raw, out = tmp_path / "raw", tmp_path / "food101"
    lines = [b"image_path,text,food"]
    for label in ("apple_pie", "sushi"):
        for n in range(5):
            _image(raw / "images" / "train" / label / f"{label}_{n}.jpg")
            lines.append(f"{label}_{n}.jpg,Best {label},{label}".encode())
    lines[1] = b"apple_pie_0.jpg,Chicken &amp; Dumplings  Recipe,apple_pie"
    lines[2] = b"apple_pie_1.jpg,Cr\xe8me br\xfbl\xe9e,apple_pie"  # latin-1, not UTF-8
    (raw / "images" / "train" / "sushi").mkdir(parents=True, exist_ok=True)
    Image.new("1", (10_000, 9_000)).save(raw / "images" / "train" / "sushi" / "sushi_9.jpg.png")
    (raw / "images" / "train" / "sushi" / "sushi_9.jpg.png").rename(raw / "images" / "train" / "sushi" / "sushi_9.jpg")
    lines.append(b"sushi_9.jpg,a poster the size of a wall,sushi")
    (raw / "texts").mkdir(parents=True)
    (raw / "texts" / "train_titles.csv").write_bytes(b"\n".join(lines) + b"\n")
    _image(raw / "images" / "test" / "sushi" / "sushi_100.jpg")
    (raw / "texts" / "test_titles.csv").write_text("sushi_100.jpg,test  sushi,sushi\n")

    report = prepare_dataset("food101", raw, out)

    assert json.loads((out / "classes.json").read_text()) == ["apple_pie", "sushi"]
    assert report["header_lines_skipped"] == {"train": 1}
    assert report["non_utf8_lines"] == {"train": 1}
    assert report["captions_cleaned"] == {"train": 1, "val": 0, "test": 1}
    assert report["dropped"]["train"] == {"image too large": 1}
    train, val = _read(out, "train"), _read(out, "val")
    texts = dict(zip(train["id"] + val["id"], train["text"] + val["text"], strict=True))
    assert texts["apple_pie_0.jpg"] == "Chicken & Dumplings Recipe"
    assert texts["apple_pie_1.jpg"] == "Cr\ufffdme br\ufffdl\ufffde"
    assert _read(out, "test")["text"] == ["test sushi"]
    manifest = [json.loads(line) for line in (out / "dropped.jsonl").read_text().splitlines()]
    assert {m["reason"] for m in manifest} == {"image too large", "not UTF-8 (invalid bytes replaced)"}


def test_food101_lines_parse_with_commas_quotes_and_broken_quoting():
    assert parse_food101_line('a_1.jpg,"Pie, with ""cream""",apple_pie') == ("a_1.jpg", 'Pie, with "cream"', "apple_pie")
    assert parse_food101_line('a_2.jpg,"Never closed, still read,apple_pie') == ("a_2.jpg", "Never closed, still read", "apple_pie")
    assert parse_food101_line("a_3.jpg,unquoted, with a comma,apple_pie") == ("a_3.jpg", "unquoted, with a comma", "apple_pie")
    assert parse_food101_line("no commas at all") is None


def test_food101_prepare_counts_every_pair_and_drop(tmp_path):
    raw, out = tmp_path / "raw", tmp_path / "food101"
    _food101_raw(raw)
    report = prepare_dataset("food101", raw, out)

    assert json.loads((out / "classes.json").read_text()) == ["apple_pie", "pho", "ramen", "sushi"]
    assert report["dropped"]["train"] == {"malformed line": 1, "missing image": 1, "missing text": 1, "unreadable image": 1}
    assert report["dropped"]["test"] == {"unknown label": 1}
    assert report["malformed_quoting_recovered"] == {"train": 1}
    # 40 regular + 2 recovered/plain sushi lines = 42 usable train pairs; val = 10% per class, seeded.
    assert report["counts"]["train"] + report["counts"]["val"] == 42
    assert report["counts"]["val"] == 4 and report["counts"]["test"] == 2
    train, val = _read(out, "train"), _read(out, "val")
    texts = dict(zip(train["id"] + val["id"], train["text"] + val["text"], strict=True))
    assert texts["sushi_90.jpg"] == "Broken quote, never closed"
    assert texts["sushi_91.jpg"] == "plain title without quotes"
    assert texts["apple_pie_0.jpg"] == 'Best apple_pie, with "extra" sauce'
    assert sorted(val["label"]) == ["apple_pie", "pho", "ramen", "sushi"]  # one per class: stratified
    assert (out / "val_ids.txt").read_text().split() == val["id"]
    assert all((out / p).is_file() for p in train["image"])  # image paths are relative to the output folder
    manifest = [json.loads(line) for line in (out / "dropped.jsonl").read_text().splitlines()]
    assert {m["reason"] for m in manifest} >= {"missing image", "unreadable image", "unknown label", "malformed line"}

    again = tmp_path / "again"
    prepare_dataset("food101", raw, again)
    assert _read(again, "val")["id"] == val["id"]  # the validation split is reproducible


# --------------------------------------------------------------------------------------------- MM-IMDB


def _movie(base: Path, movie_id: str, record: dict | str | None, image: bool | str = True) -> None:
    if record is not None:
        text = record if isinstance(record, str) else json.dumps(record)
        (base / "dataset" / f"{movie_id}.json").write_text(text)
    if image == "corrupt":
        _corrupt(base / "dataset" / f"{movie_id}.jpeg")
    elif image:
        _image(base / "dataset" / f"{movie_id}.jpeg")


def test_mmimdb_prepare_keeps_the_23_genres_and_the_longest_plot(tmp_path):
    raw, out = tmp_path / "raw", tmp_path / "mmimdb"
    base = raw / "mmimdb"
    (base / "dataset").mkdir(parents=True)
    _movie(base, "001", {"plot": ["short one", "the much longer plot of the film"], "genres": ["Drama", "Sci-Fi"]})
    _movie(base, "002", {"plot": ["a news show"], "genres": ["News", "Comedy"]})  # News removed, kept
    _movie(base, "003", {"plot": ["a talk show"], "genres": ["Talk-Show"]})  # no genre left: dropped
    _movie(base, "004", None)  # json missing
    _movie(base, "005", "{not json", image=True)  # malformed record
    _movie(base, "006", {"plot": ["no poster"], "genres": ["War"]}, image=False)  # missing image
    _movie(base, "007", {"plot": [], "genres": ["War"]})  # no plot
    _movie(base, "008", {"plot": ["dev movie"], "genres": ["Film-Noir"]})
    _movie(base, "009", {"plot": ["test movie"], "genres": ["Reality-TV", "Western"]}, image="corrupt")
    _movie(base, "010", {"plot": ["good test movie"], "genres": ["Western"]})
    split = {"train": ["001", "002", "003", "004", "005", "006", "007"], "dev": ["008"], "test": ["009", "010"]}
    (base / "split.json").write_text(json.dumps(split))

    report = prepare_dataset("mmimdb", raw, out)

    assert json.loads((out / "classes.json").read_text()) == list(MMIMDB_GENRES) and len(MMIMDB_GENRES) == 23
    assert report["counts"] == {"train": 2, "val": 1, "test": 1}
    assert report["dropped"]["train"] == {"malformed line": 1, "missing image": 1, "missing text": 2, "unknown label": 1}
    assert report["dropped"]["test"] == {"unreadable image": 1}
    assert report["genres_removed"] == {"News": 1, "Reality-TV": 1, "Talk-Show": 1}
    assert report["movies_with_removed_genres"] == 3
    train = _read(out, "train")
    assert train["id"] == ["001", "002"]
    assert train["text"][0] == "the much longer plot of the film"
    assert train["labels"] == [["Drama", "Sci-Fi"], ["Comedy"]]


# --------------------------------------------------------------------------------------------- SNLI-VE


def test_snlive_prepare_drops_unknown_labels_and_bad_lines(tmp_path):
    raw, out = tmp_path / "raw", tmp_path / "snlive"
    images = raw / "flickr30k_images"
    for image_id in ("100", "200"):
        _image(images / f"{image_id}.jpg")
    _corrupt(images / "300.jpg")

    def line(image_id, text, label, pair=None):
        return json.dumps({"Flickr30K_ID": image_id, "sentence2": text, "gold_label": label, "pairID": pair})

    train = [
        line("100", "A dog runs.", "entailment", "p1"),
        line("100", "A cat sleeps.", "contradiction", "p2"),
        line("200", "Someone waits.", "neutral", "p3"),
        line("200", "Unclear.", "-", "p4"),  # unknown label
        '{"Flickr30K_ID": "100", "sentence2": "cut off',  # malformed line
        json.dumps({"Flickr30K_ID": "100", "gold_label": "neutral"}),  # no sentence2: malformed
        line("999", "Image missing.", "neutral", "p7"),
        line("300", "Image corrupt.", "neutral", "p8"),
        line("200", "   ", "neutral", "p9"),  # missing text
    ]
    (raw / "snli_ve_train.jsonl").write_text("\n".join(train) + "\n")
    (raw / "snli_ve_dev.jsonl").write_text(line("200", "Dev sentence.", "entailment", "d1") + "\n")
    (raw / "snli_ve_test.jsonl").write_text(line("100", "Test sentence.", "contradiction", "t1") + "\n\n")

    report = prepare_dataset("snlive", raw, out)

    assert json.loads((out / "classes.json").read_text()) == ["entailment", "neutral", "contradiction"]
    assert report["counts"] == {"train": 3, "val": 1, "test": 1}
    assert report["dropped"]["train"] == {
        "malformed line": 2, "missing image": 1, "missing text": 1, "unknown label": 1, "unreadable image": 1,
    }
    table = _read(out, "train")
    assert table["id"] == ["p1", "p2", "p3"]
    assert table["label"] == ["entailment", "contradiction", "neutral"]
    assert table["text"] == ["A dog runs.", "A cat sleeps.", "Someone waits."]


# --------------------------------------------------------------------------------------------- safety


def test_prepare_refuses_a_foreign_layout_and_keeps_the_previous_output(tmp_path):
    raw, out = tmp_path / "raw", tmp_path / "food101"
    _food101_raw(raw)
    prepare_dataset("food101", raw, out)
    before = (out / "train.parquet").read_bytes()
    with pytest.raises(PrepareError, match="texts/train_titles.csv"):
        prepare_dataset("food101", tmp_path / "empty", out)
    with pytest.raises(PrepareError, match="unknown data set"):
        prepare_dataset("cifar10", raw, out)
    assert (out / "train.parquet").read_bytes() == before


def test_prepared_images_decode_at_the_backbone_size(tmp_path, tiny):
    from mitp.config import parse_config, resolve_run
    from mitp.data.dataset import build_split

    raw, out = tmp_path / "raw", tmp_path / "food101"
    _food101_raw(raw)
    prepare_dataset("food101", raw, out)
    config = {
        "backbone": "preset:tiny",
        "datasets": {"food": {"task": "single-label", "data_dir": str(out), "num_classes": 4, "best_layers": [2], "small_layers": [2]}},
        "settings": {"mitp": {"variant": "mitp"}},
    }
    dataset = build_split(resolve_run(parse_config(config), "food", "mitp"), "val", tiny.tokenizer, 32)
    item = dataset[0]
    assert item["pixels"].shape == (32, 32, 3) and item["pixels"].dtype == torch.uint8
    assert item["input_ids"].shape == (77,)


def test_mmimdb_records_of_the_wrong_shape_are_read_or_dropped_never_misread(tmp_path):
    """A plot given as one string is that plot (not its first letter); ids that are paths and JSON nested
    too deeply are dropped as malformed; a caption whose words run to thousands of characters is dropped."""
    raw, out = tmp_path / "raw", tmp_path / "mmimdb"
    base = raw / "mmimdb"
    (base / "dataset").mkdir(parents=True)
    _movie(base, "001", {"plot": "A whole plot given as one string.", "genres": "Drama"})
    _movie(base, "002", {"plot": ["fine"], "genres": ["Comedy"]})
    _movie(base, "003", "[" * 100_000 + "]" * 100_000)
    _movie(base, "004", ["not", "a", "record"])
    _movie(base, "005", {"plot": ["x" * 20_000], "genres": ["War"]})
    _movie(base, "006", {"plot": ["dev"], "genres": ["War"]})
    _movie(base, "007", {"plot": ["test"], "genres": ["War"]})
    (tmp_path / "outside.json").write_text(json.dumps({"plot": ["a secret file"], "genres": ["War"]}))
    split = {"train": ["001", "002", "003", "004", "005", "../../../outside"], "dev": ["006"], "test": ["007"]}
    (base / "split.json").write_text(json.dumps(split))

    report = prepare_dataset("mmimdb", raw, out)

    train = _read(out, "train")
    assert train["id"] == ["001", "002"] and train["text"][0] == "A whole plot given as one string."
    assert train["labels"][0] == ["Drama"]
    assert report["dropped"]["train"] == {"caption too long": 1, "malformed line": 3}


def test_a_yaml_alias_bomb_is_refused_before_it_expands(tmp_path):
    from mitp.config import ConfigError, load_config

    levels = ["a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    levels += [f"{c}: &{c} [{', '.join([f'*{p}'] * 9)}]" for p, c in zip("abcdefgh", "bcdefghi", strict=True)]
    (tmp_path / "config.yaml").write_text("\n".join(levels) + "\ndatasets: {food: {task: single-label, data_dir: x, templates: *i}}\n")
    started = time.perf_counter()
    with pytest.raises(ConfigError, match=r"aliases \(\*name\) expand it to [\d,]{11} values"):
        load_config(tmp_path / "config.yaml")
    assert time.perf_counter() - started < 5  # refused from the node graph, never expanded
    (tmp_path / "shared.yaml").write_text("datasets: {food: &b {task: single-label, data_dir: x}, again: *b}\nsettings: {m: {variant: mitp}}\n")
    assert load_config(tmp_path / "shared.yaml").datasets["again"].data_dir == "x"  # a few aliases are fine
