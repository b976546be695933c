"""A data set is ready only when it is complete: every file fetched whole and unpacked, a completion record
written last, the layout holding what preparation reads (a loopback server stands in for the hosts)."""

from __future__ import annotations

import errno
import gzip
import io
import shutil
import tarfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

import mitp.data.download as download
from mitp.cli import app
from mitp.data.download import RECORD, Source, extract, layout_problem
from mitp.data.prepare import PrepareError, prepare_dataset
from mitp.data.twins import make_twin
from mitp.files.fetch import DownloadError, fetch
from mitp.files.outputs import mark

from .conftest import TWIN_SIZES
from .loopback import Route

runner = CliRunner()


def _tar_gz(folder: Path) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(folder, arcname=folder.name)
    return buffer.getvalue()


@pytest.fixture
def snlive_host(loopback, tmp_path, monkeypatch):
    """SNLI-VE's four upstream files (three gzipped jsonl, the Flickr30k tarball), made from a twin and
    served by a loopback server that download_dataset is pointed at."""
    twin = tmp_path / "twin"
    make_twin("demo-snlive", twin, sizes=TWIN_SIZES)
    server = loopback()
    sources = []
    for split in ("train", "dev", "test"):
        name = f"snli_ve_{split}.jsonl.gz"
        server.routes[f"/{name}"] = Route(gzip.compress((twin / f"snli_ve_{split}.jsonl").read_bytes()))
        sources.append(Source(server.url(f"/{name}"), name))
    server.routes["/flickr30k_images.tar.gz"] = Route(_tar_gz(twin / "flickr30k_images"))
    sources.append(Source(server.url("/flickr30k_images.tar.gz"), "flickr30k_images.tar.gz"))
    monkeypatch.setitem(download.SOURCES, "snlive", sources)
    return server


def test_a_cut_archive_is_never_reported_ready_and_prepare_refuses_the_folder(snlive_host, tmp_path):
    raw = tmp_path / "raw"
    snlive_host.routes["/flickr30k_images.tar.gz"].cut = 2_000
    for _ in range(2):  # the rerun, still cut: resumes and fails again, never "ready"
        result = runner.invoke(app, ["data", "download", "snlive", "--raw", str(raw), "--retries", "0"])
        assert result.exit_code == 75 and "run again to resume" in result.output, result.output
        assert "ready" not in result.output and not (raw / RECORD).exists()
    assert "flickr30k_images.tar.gz.part not finished" in layout_problem("snlive", raw)
    with pytest.raises(PrepareError, match="is not complete"):
        prepare_dataset("snlive", raw, tmp_path / "prepared")
    assert not (tmp_path / "prepared").exists()

    snlive_host.routes["/flickr30k_images.tar.gz"].cut = None
    result = runner.invoke(app, ["data", "download", "snlive", "--raw", str(raw)])
    assert result.exit_code == 0, result.output
    assert layout_problem("snlive", raw) is None and (raw / RECORD).is_file()
    requests = len(snlive_host.requests)
    assert runner.invoke(app, ["data", "download", "snlive", "--raw", str(raw)]).exit_code == 0
    assert len(snlive_host.requests) == requests  # complete: nothing fetched again
    report = prepare_dataset("snlive", raw, tmp_path / "prepared")
    assert sum(report["counts"].values()) == sum(TWIN_SIZES.values())


def test_a_killed_unpack_is_never_taken_for_the_layout(snlive_host, tmp_path):
    """An unpack killed midway leaves a hidden `.extracting-*` folder with part of the layout in it; the next
    run neither searches it nor counts that file as unpacked."""
    raw = tmp_path / "raw"
    raw.mkdir()
    mark(raw, "raw")
    leftover = raw / ".extracting-snli_ve_train.jsonl.gz"
    leftover.mkdir()
    (leftover / "snli_ve_train.jsonl").write_text('{"half": "written"')
    assert download.find_layout_root(raw, "snli_ve_train.jsonl") is None
    assert "is not complete" in layout_problem("snlive", raw)
    assert runner.invoke(app, ["data", "download", "snlive", "--raw", str(raw)]).exit_code == 0
    assert not leftover.exists() and (raw / "snli_ve_train.jsonl").read_text().startswith("{")


def test_an_encoded_or_wrong_body_never_becomes_a_data_file(loopback, tmp_path):
    server = loopback()
    page = gzip.compress(b"<!DOCTYPE html><html>Too many requests</html>")
    server.routes["/encoded.jsonl.gz"] = Route(page, headers={"Content-Encoding": "gzip"})
    with pytest.raises(DownloadError, match="gzip-encoded body"):
        fetch(server.url("/encoded.jsonl.gz"), tmp_path / "encoded.jsonl.gz")
    assert list(tmp_path.iterdir()) == []
    assert server.seen("Accept-Encoding") == [("/encoded.jsonl.gz", "identity")]
    server.routes["/page.jsonl.gz"] = Route(page)  # a gzip file, but of an HTML page
    archive = fetch(server.url("/page.jsonl.gz"), tmp_path / "page.jsonl.gz")
    with pytest.raises(DownloadError, match="is not JSON lines"):
        extract(archive, tmp_path / "raw")
    assert not archive.exists() and not (tmp_path / "raw" / "page.jsonl").exists()


@pytest.mark.parametrize("kind", ["tar", "gzip"])
def test_a_full_disk_during_an_unpack_keeps_the_archive_and_says_so(tmp_path, monkeypatch, kind):
    source = tmp_path / "src" / "flickr30k_images"
    source.mkdir(parents=True)
    (source / "1.jpg").write_bytes(b"x" * 100)
    if kind == "tar":
        archive = tmp_path / "flickr30k_images.tar.gz"
        archive.write_bytes(_tar_gz(source))
        target, name = tarfile.TarFile, "extractall"
    else:
        archive = tmp_path / "snli_ve_dev.jsonl.gz"
        archive.write_bytes(gzip.compress(b'{"a": 1}\n'))
        target, name = shutil, "copyfileobj"

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(target, name, full)
    with pytest.raises(DownloadError, match=r"no space left to unpack .* the archive was kept"):
        extract(archive, tmp_path / "raw")
    assert archive.is_file() and not any(p.name.startswith(".extract") for p in (tmp_path / "raw").iterdir())


def test_a_hand_placed_layout_missing_a_part_is_named_not_overwritten(tmp_path):
    raw = tmp_path / "raw"
    make_twin("demo-snlive", raw, sizes=TWIN_SIZES)
    shutil.rmtree(raw / "flickr30k_images")
    result = runner.invoke(app, ["data", "download", "snlive", "--raw", str(raw)])
    assert result.exit_code == 2 and "lacks flickr30k_images" in result.output and "complete it by hand" in result.output
    assert (raw / "snli_ve_train.jsonl").is_file()  # nothing of the user's was touched


def test_a_split_left_without_pairs_is_an_error_not_an_empty_file(tmp_path):
    raw = tmp_path / "raw"
    make_twin("demo-food101", raw, sizes=TWIN_SIZES)
    shutil.rmtree(raw / "images" / "test")
    (raw / "images" / "test").mkdir()  # every test image gone: the split has nothing left
    with pytest.raises(PrepareError, match=r"no usable pair in the test split.*missing image"):
        prepare_dataset("demo-food101", raw, tmp_path / "prepared")
    assert not (tmp_path / "prepared").exists()
