"""The machine's limits get a sentence, not a traceback: a full disk and a read-only file system, on real
small tmpfs mounts where this machine allows mounting (root), and by an injected error elsewhere."""

from __future__ import annotations

import errno
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mitp.cli import app

runner = CliRunner()


@pytest.fixture
def small_disk(tmp_path):
    """A factory of tmpfs mounts of a given size under tmp_path (skips where mounting is not allowed)."""
    mounted: list[Path] = []

    def mount(size: str, read_only: bool = False) -> Path:
        point = tmp_path / f"disk{len(mounted)}"
        point.mkdir()
        options = f"size={size}" + (",ro" if read_only else "")
        if subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(point)], capture_output=True).returncode:
            pytest.skip("this machine does not let the tests mount a small tmpfs")
        mounted.append(point)
        return point

    yield mount
    for point in mounted:
        subprocess.run(["umount", "-l", str(point)], capture_output=True)  # lazily: an open file never leaves it mounted


def _said(result) -> str:
    return " ".join(result.output.split())


def test_a_cache_larger_than_the_free_space_is_refused_before_writing(prepared_twin, small_disk, tmp_path):
    prepared = prepared_twin(into=tmp_path / "data", prepared="food")
    disk = small_disk("256k")
    result = runner.invoke(app, ["data", "prepare", "demo-food101", "--raw", str(prepared.parent / "raw"), "--out", str(disk / "food"), "--cache-size", "64"])
    assert result.exit_code == 2, result.output
    assert "the image cache needs" in _said(result) and "GiB free" in _said(result) and "Traceback" not in result.output
    assert list(disk.iterdir()) == []  # nothing half-built is left to fill the disk


def test_a_full_disk_while_writing_gives_one_line_and_leaves_nothing(prepared_twin, small_disk, tmp_path):
    prepared = prepared_twin(into=tmp_path / "data", prepared="food")
    disk = small_disk("16k")
    result = runner.invoke(app, ["data", "prepare", "demo-food101", "--raw", str(prepared.parent / "raw"), "--out", str(disk / "food")])
    assert result.exit_code == 74, result.output
    assert "No space left on device" in _said(result) and "free some space" in _said(result) and "Traceback" not in result.output
    assert list(disk.iterdir()) == []


def test_a_read_only_file_system_gives_one_line(prepared_twin, small_disk, tmp_path):
    prepared = prepared_twin(into=tmp_path / "data", prepared="food")
    disk = small_disk("1m", read_only=True)
    result = runner.invoke(app, ["data", "prepare", "demo-food101", "--raw", str(prepared.parent / "raw"), "--out", str(disk / "food")])
    assert result.exit_code == 74 and "read-only" in _said(result) and "Traceback" not in result.output, result.output


def test_a_full_disk_in_any_command_is_a_sentence(monkeypatch, tmp_path, write_config):
    """Wherever the error comes from (here: the first file a training run writes), the CLI says it in one line."""
    import mitp.train.rundir as rundir

    from .conftest import synthetic_config

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "run" / ".mitp-output"))

    monkeypatch.setattr(rundir, "mark", full)
    config = write_config(synthetic_config(epochs=1))
    result = runner.invoke(app, ["train", "-c", str(config), "-d", "toy", "--out", str(tmp_path / "run"), "--no-progress"])
    assert result.exit_code == 74 and "No space left on device writing" in _said(result) and "Traceback" not in result.output
