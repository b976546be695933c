import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image
from transformers import CLIPImageProcessor

from mitp.config import parse_config, resolve_run
from mitp.data.dataset import DataError, build_split, stratified_subset
from mitp.runtime.preprocess import ImageError, ImageTooLarge, clip_crop, load_image, preprocess_image
from mitp.runtime.tokenizer import build_word_tokenizer, clean_caption

from .conftest import synthetic_config


def test_resize_and_crop_follow_the_bundles_rule_exactly():
    """Against an independent numpy implementation of the rule, over down- and up-scaling, odd sizes,
    portrait and landscape: every pixel identical."""
    from .resample_reference import clip_crop as reference

    rng = np.random.default_rng(0)
    shapes = [(696, 280), (280, 696), (1, 1), (5, 300), (300, 5), (223, 225), (224, 224), (1000, 37)]
    shapes += [tuple(int(v) for v in rng.integers(2, 500, 2)) for _ in range(12)]
    for height, width in (s for s in shapes if max(s) <= 64 * min(s)):
        image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        for size in (32, 224):
            assert np.array_equal(clip_crop(Image.fromarray(image), size), reference(image, size)), (height, width, size)


@pytest.mark.parametrize("size", [(300, 200), (200, 351), (224, 224), (640, 480)])
def test_preprocessing_matches_transformers_clip_processor(size):
    """Sizes, crop offsets and normalisation as transformers' CLIP processor. (Under Pillow 13 its one-call
    resize runs the height pass first for portrait images, which moves a few pixels; mitp's rule keeps the
    classic width-then-height order, the one CLIP was trained with.)"""
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))
    processor = CLIPImageProcessor(size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224})
    expected = processor(images=image, return_tensors="np")["pixel_values"][0]
    assert np.abs(preprocess_image(image, 224) - expected).max() < 1e-5


def test_one_image_rule_exif_alpha_16_bit_and_palette(tmp_path):
    band = np.zeros((20, 40, 3), np.uint8)
    band[:, :10] = 255  # a white band on the left
    rotated = Image.fromarray(band)
    exif = rotated.getexif()
    exif[0x0112] = 6  # phone photo: "rotate 90 degrees clockwise to display"
    rotated.save(tmp_path / "phone.jpg", exif=exif.tobytes(), quality=100)
    upright = np.asarray(load_image(tmp_path / "phone.jpg"))
    assert upright.shape == (40, 20, 3) and upright[:8].mean() > 240 and upright[12:].mean() < 15  # band on top

    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., 0] = 200  # red everywhere, transparent in the lower half, half-transparent in one row
    rgba[:4, :, 3], rgba[4, :, 3] = 255, 128
    Image.fromarray(rgba).save(tmp_path / "alpha.png")
    pixels = np.asarray(load_image(tmp_path / "alpha.png"))
    assert pixels[0, 0].tolist() == [200, 0, 0] and pixels[7, 7].tolist() == [255, 255, 255]
    assert pixels[4, 0].tolist() == [(200 * 128 + 255 * 127 + 127) // 255, 127, 127]  # composited on white

    grey16 = (np.arange(64).reshape(8, 8) * 1000).astype(np.uint16)
    Image.fromarray(grey16).save(tmp_path / "grey16.png")
    pixels = np.asarray(load_image(tmp_path / "grey16.png"))
    assert pixels.shape == (8, 8, 3) and (pixels[..., 0] == grey16 >> 8).all()  # not all white

    palette = Image.new("P", (4, 4))
    palette.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    palette.putpixel((0, 0), 1)
    palette.save(tmp_path / "palette.png", transparency=1)  # colour 1 is transparent
    pixels = np.asarray(load_image(tmp_path / "palette.png"))
    assert pixels[0, 0].tolist() == [255, 255, 255] and pixels[1, 1].tolist() == [255, 0, 0]


def test_oversized_images_are_refused_before_decoding(tmp_path):
    Image.new("1", (10_000, 9_000)).save(tmp_path / "bomb.png")  # 90M pixels: above Pillow's bomb limit
    Image.new("RGB", (100_000, 1)).save(tmp_path / "line.png")  # its CLIP resize would need 15 GB
    for name in ("bomb.png", "line.png"):
        with pytest.raises(ImageTooLarge):
            load_image(tmp_path / name)
    with pytest.raises(ImageTooLarge, match="aspect ratio"):
        preprocess_image(Image.new("RGB", (1, 1000)), 224)


def test_captions_are_cleaned_like_clip_does():
    assert clean_caption("Chicken &amp; Dumplings") == "Chicken & Dumplings"
    assert clean_caption("  Mom&amp;#39;s   pie \n\t recipe ") == "Mom's pie recipe"  # unescaped twice
    tokenizer = build_word_tokenizer()
    assert (tokenizer(["red &amp; blue"])[0] == tokenizer(["red & blue"])[0]).all()


def test_unreadable_images_raise_a_clear_error(tmp_path):
    with pytest.raises(ImageError, match="image not found"):
        load_image(tmp_path / "absent.jpg")
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg at all")
    with pytest.raises(ImageError, match="cannot decode image"):
        load_image(tmp_path / "broken.jpg")


def prepared_dir(tmp_path, task, rows):
    """A data set in the prepared format: classes.json, {split}.parquet and the images."""
    (tmp_path / "images").mkdir()
    for i in range(len(rows)):
        Image.new("RGB", (40 + i, 30), (10 * i, 80, 160)).save(tmp_path / "images" / f"{i}.png")
    label_key = "labels" if task == "multi-label" else "label"
    table = {
        "id": [str(i) for i in range(len(rows))],
        "image": [f"images/{i}.png" for i in range(len(rows))],
        "text": [f"caption number {i}" for i in range(len(rows))],
        label_key: rows,
    }
    for split in ("train", "val", "test"):
        pq.write_table(pa.table(table), tmp_path / f"{split}.parquet")
    (tmp_path / "classes.json").write_text(json.dumps(["red", "green", "blue"]))
    raw = synthetic_config()
    raw["datasets"]["real"] = {"task": task, "data_dir": str(tmp_path), "num_classes": 3}
    return resolve_run(parse_config(raw), "real", "mitp")


def test_prepared_single_label_split(tmp_path):
    run = prepared_dir(tmp_path, "single-label", ["green", "red", "blue", "green"])
    dataset = build_split(run, "train", build_word_tokenizer(), 32)
    assert len(dataset) == 4 and dataset.classes == ["red", "green", "blue"]
    item = dataset[0]
    assert item["pixels"].shape == (32, 32, 3)
    assert item["input_ids"].shape == (77,) and int(item["attention_mask"].sum()) == 5  # SOT + 3 words + EOT
    assert dataset.labels.tolist() == [1, 0, 2, 1]


def test_prepared_multi_label_split(tmp_path):
    run = prepared_dir(tmp_path, "multi-label", [["red", "blue"], ["green"], []])
    dataset = build_split(run, "val", build_word_tokenizer(), 32)
    assert dataset.labels.tolist() == [[1, 0, 1], [0, 1, 0], [0, 0, 0]]


def test_unknown_label_names_the_row(tmp_path):
    run = prepared_dir(tmp_path, "single-label", ["green", "purple"])
    with pytest.raises(DataError, match="row 1 has unknown label 'purple'"):
        build_split(run, "test", build_word_tokenizer(), 32)


def test_stratified_fraction_keeps_every_class_and_is_seeded():
    strata = np.repeat(np.arange(5), [100, 50, 20, 3, 1])
    subset = stratified_subset(strata, 0.1, seed=0)
    assert np.bincount(strata[subset]).tolist() == [10, 5, 2, 1, 1]
    assert np.array_equal(subset, stratified_subset(strata, 0.1, seed=0))
    assert not np.array_equal(subset, stratified_subset(strata, 0.1, seed=1))
