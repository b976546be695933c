"""Offline twins, the stand-in CLIP, and the resumable downloader (a loopback HTTP server, no network)."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from mitp.cli import app
from mitp.data.download import extract
from mitp.data.prepare import prepare_dataset
from mitp.data.twins import COLOURS, PATTERNS, make_twin
from mitp.files.fetch import DownloadError, fetch

from .loopback import Route

SMALL = {"train": 48, "val": 16, "test": 16}


def test_twins_are_deterministic(tmp_path):
    make_twin("demo-food101", tmp_path / "a", seed=3, sizes=SMALL)
    make_twin("demo-food101", tmp_path / "b", seed=3, sizes=SMALL)
    make_twin("demo-food101", tmp_path / "c", seed=4, sizes=SMALL)
    csv_a, csv_b, csv_c = ((tmp_path / x / "texts" / "train_titles.csv").read_bytes() for x in "abc")
    assert csv_a == csv_b and csv_a != csv_c
    first = sorted((tmp_path / "a" / "images").rglob("*.jpg"))[0]
    assert first.read_bytes() == (tmp_path / "b" / first.relative_to(tmp_path / "a")).read_bytes()


def _saturation(path: Path) -> float:
    pixels = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32)
    return float(np.abs(pixels - pixels.mean(axis=2, keepdims=True)).mean())


def test_food101_twin_needs_both_modalities(tmp_path):
    """The image shows only the pattern (it is grey), the caption names only the colour."""
    make_twin("demo-food101", tmp_path, sizes=SMALL)
    rows = list(csv.reader(open(tmp_path / "texts" / "train_titles.csv")))
    assert len(rows) == SMALL["train"] + SMALL["val"]
    for filename, title, label in rows:
        colour, pattern = label.split("_")
        words = title.split()
        assert colour in words and not set(words) & set(PATTERNS)  # the caption never names the pattern
        assert not set(words) & (set(COLOURS) - {colour})
        assert _saturation(tmp_path / "images" / "train" / label / filename) < 12  # grey: no colour in the image
    labels = {row[2] for row in rows}
    assert len({label.split("_")[1] for label in labels}) > 1 and len({label.split("_")[0] for label in labels}) > 1


def test_snlive_twin_labels_need_the_image(tmp_path):
    """The same hypothesis word is entailment for some images and contradiction for others."""
    make_twin("demo-snlive", tmp_path, sizes={"train": 200, "val": 8, "test": 8})
    records = [json.loads(line) for line in (tmp_path / "snli_ve_train.jsonl").read_text().splitlines()]
    by_word: dict[str, set[str]] = {}
    for record in records:
        for word in record["sentence2"].split():
            if word in PATTERNS:
                by_word.setdefault(word, set()).add(record["gold_label"])
    assert all(labels == {"entailment", "contradiction"} for labels in by_word.values()) and by_word
    assert {r["gold_label"] for r in records} == {"entailment", "neutral", "contradiction"}


@pytest.mark.parametrize("twin, classes", [("demo-food101", 16), ("demo-mmimdb", 8), ("demo-snlive", 3)])
def test_twins_prepare_like_their_real_counterparts(tmp_path, twin, classes):
    make_twin(twin, tmp_path / "raw", sizes=SMALL)
    report = prepare_dataset(twin, tmp_path / "raw", tmp_path / "prepared")
    assert report["dropped_total"] == 0
    assert len(json.loads((tmp_path / "prepared" / "classes.json").read_text())) == classes
    assert min(report["counts"].values()) > 0


def test_standin_pretrains_saves_and_loads_as_a_backbone(tmp_path):
    import torch

    from mitp.model.backbone import load_backbone
    from mitp.model.standin import StandinConfig, pretrain_standin

    logs: list[str] = []
    summary = pretrain_standin(tmp_path / "standin", StandinConfig(steps=50, batch_size=16, pool_size=64, warmup=2), log=logs.append)
    assert np.isfinite(summary["final_loss"]) and logs
    backbone = load_backbone(str(tmp_path / "standin"))
    assert backbone.tokenizer.tokenizer.token_to_id("stripes") is not None
    ids, mask = backbone.tokenizer(["a photo of red stripes, a type of food."])
    assert 1 not in ids[0]  # no <unk>: the template words are in the stand-in's vocabulary
    features = backbone.clip.get_text_features(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask))
    assert torch.isfinite(features if isinstance(features, torch.Tensor) else features.pooler_output).all()


# --------------------------------------------------------------------------------------------- downloads


def test_fetch_resumes_an_interrupted_download_and_checks_the_checksum(tmp_path, loopback):
    server = loopback()
    url = server.url("/file.bin")
    payload = bytes(range(256)) * 4096  # 1 MiB
    server.routes["/file.bin"] = Route(payload, cut=300_000)
    dest = tmp_path / "file.bin"
    with pytest.raises(DownloadError, match="run again to resume"):
        fetch(url, dest)
    part = tmp_path / "file.bin.part"
    assert not dest.exists() and 0 < part.stat().st_size < len(payload)  # never under the final name

    server.routes["/file.bin"].cut = None
    seen = []
    fetch(url, dest, sha256=hashlib.sha256(payload).hexdigest(), progress=lambda done, total: seen.append((done, total)))
    assert dest.read_bytes() == payload and not part.exists()
    assert seen[-1] == (len(payload), len(payload))

    with pytest.raises(DownloadError, match="does not match"):
        fetch(url, tmp_path / "other.bin", sha256="0" * 64)
    assert not (tmp_path / "other.bin").exists() and not (tmp_path / "other.bin.part").exists()


def test_extract_refuses_members_that_leave_the_folder_with_or_without_tarfiles_filter(tmp_path, monkeypatch):
    """Python 3.11.0-3.11.3 have no tarfile data filter: the same refusals then come from mitp's own check."""
    for name, kind, link in [("../escape.txt", tarfile.REGTYPE, ""), ("ok/link", tarfile.SYMTYPE, "../../outside"), ("ok/hard", tarfile.LNKTYPE, "/etc/passwd")]:
        archive = tmp_path / f"bad-{len(list(tmp_path.iterdir()))}.tar"
        with tarfile.open(archive, "w") as tar:
            info = tarfile.TarInfo(name)
            info.type, info.linkname = kind, link
            tar.addfile(info, io.BytesIO(b"") if kind == tarfile.REGTYPE else None)
        for has_filter in (True, False):
            if not has_filter:
                monkeypatch.delattr(tarfile, "data_filter", raising=False)
            copy = tmp_path / f"copy-{has_filter}-{archive.name}"
            copy.write_bytes(archive.read_bytes())
            with pytest.raises(DownloadError, match="cannot extract"):
                extract(copy, tmp_path / f"raw-{has_filter}-{archive.stem}")
            assert not (tmp_path / "escape.txt").exists() and not list((tmp_path / f"raw-{has_filter}-{archive.stem}").iterdir())
        monkeypatch.undo()


def test_extract_unpacks_safely_and_only_once(tmp_path):
    source = tmp_path / "src" / "mmimdb"
    source.mkdir(parents=True)
    (source / "split.json").write_text("{}")
    archive = tmp_path / "mmimdb.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(source, arcname="mmimdb")
    extract(archive, tmp_path / "raw")
    assert (tmp_path / "raw" / "mmimdb" / "split.json").read_text() == "{}"
    (tmp_path / "raw" / "mmimdb" / "split.json").write_text("kept")
    extract(archive, tmp_path / "raw")  # marker present: not unpacked again
    assert (tmp_path / "raw" / "mmimdb" / "split.json").read_text() == "kept"
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(b"\x1f\x8b broken")
    with pytest.raises(DownloadError, match="cannot extract|not a tar"):
        extract(bad, tmp_path / "raw2")


def test_food101_without_credentials_says_where_to_put_the_files(tmp_path, monkeypatch):
    monkeypatch.delenv("KAGGLE_USERNAME", raising=False)
    monkeypatch.delenv("KAGGLE_KEY", raising=False)
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path / "nokaggle"))
    result = CliRunner().invoke(app, ["data", "download", "food101", "--raw", str(tmp_path / "raw")])
    assert result.exit_code == 2
    assert "kaggle.com/datasets/gianmarco96/upmcfood101" in result.output and "texts/train_titles.csv" in result.output


def test_data_cli_generates_and_prepares_a_twin(tmp_path):
    runner = CliRunner()
    raw, out = tmp_path / "raw", tmp_path / "prepared"
    assert runner.invoke(app, ["data", "download", "demo-snlive", "--raw", str(raw)]).exit_code == 0
    result = runner.invoke(app, ["data", "prepare", "demo-snlive", "--raw", str(raw), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert json.loads((out / "prepare_report.json").read_text())["counts"]["train"] == 1600
    bad = runner.invoke(app, ["data", "prepare", "demo-snlive", "--raw", str(tmp_path / "nothing"), "--out", str(out)])
    assert bad.exit_code == 2 and "does not hold the snlive layout" in bad.output


def test_food101_download_with_kaggle_credentials_unpacks_a_nested_layout(tmp_path, loopback, monkeypatch):
    """The Kaggle path end to end against a loopback server: basic auth, zip, nested folder, prepare."""
    import io
    import zipfile

    import mitp.data.download as download

    twin = tmp_path / "twin"
    make_twin("demo-food101", twin, sizes=SMALL)
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(twin.rglob("*")):
            if path.is_file():
                zf.write(path, Path("UPMC_Food101") / path.relative_to(twin))
    server = loopback()
    server.routes["/food101.zip"] = Route(archive.getvalue())
    monkeypatch.setattr(download, "KAGGLE_FOOD101", server.url("/food101.zip"))
    monkeypatch.setenv("KAGGLE_USERNAME", "someone")
    monkeypatch.setenv("KAGGLE_KEY", "secret")

    root = download.download_dataset("food101", tmp_path / "raw")

    assert root == tmp_path / "raw" / "UPMC_Food101"
    assert server.seen("Authorization") == [("/food101.zip", "Basic c29tZW9uZTpzZWNyZXQ=")]  # base64 of someone:secret
    report = prepare_dataset("food101", tmp_path / "raw", tmp_path / "prepared")
    assert report["counts"]["train"] + report["counts"]["val"] == SMALL["train"] + SMALL["val"]
    assert download.download_dataset("food101", tmp_path / "raw") == root  # in place: nothing fetched again
    assert len(server.requests) == 1


def test_download_resumes_interruptions_itself_and_says_permanent_failures_at_once(tmp_path, loopback, monkeypatch):
    """An interrupted body is resumed by `mitp data download` (exit 0); with no retries left it exits 75
    (EX_TEMPFAIL), while a refusal exits 2 at once."""
    import mitp.data.download as download

    server = loopback()
    url = server.url("/file.gz")
    payload = b"\x1f\x8b" + bytes(range(256)) * 1024
    server.routes["/file.gz"] = Route(payload, cut=100_000)
    calls = []

    def fake_dataset(name, raw, progress=None, seed=0):
        calls.append(1)
        if len(calls) == 2:
            server.routes["/file.gz"].cut = None  # the link comes back
        fetch(url, raw / "file.gz", progress=progress)
        return raw

    monkeypatch.setattr(download, "download_dataset", fake_dataset)
    monkeypatch.setattr("time.sleep", lambda seconds: None)
    runner = CliRunner()
    result = runner.invoke(app, ["data", "download", "mmimdb", "--raw", str(tmp_path / "raw"), "--retries", "2"])
    assert result.exit_code == 0, result.output
    assert len(calls) == 2 and "resuming, try 2 of 3" in result.output
    assert (tmp_path / "raw" / "file.gz").read_bytes() == payload
    server.routes["/file.gz"].cut, calls[:] = 50_000, []
    result = runner.invoke(app, ["data", "download", "mmimdb", "--raw", str(tmp_path / "raw2"), "--retries", "0"])
    assert result.exit_code == 75 and "run again to resume" in result.output and len(calls) == 1
