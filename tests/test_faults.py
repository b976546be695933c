"""Kill train, export, prepare and the twin download at each of their write points, then rerun:
what is on disk must be the old or the new version after the kill, and consistent after the rerun."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from mitp.config import ConfigError, load_config, resolve_run
from mitp.data.download import download_dataset
from mitp.data.prepare import prepare_dataset
from mitp.data.twins import make_twin
from mitp.files import atomic
from mitp.train import checkpoint as ckpt
from mitp.train.rundir import RunLocked, locked_run_folder
from mitp.train.runs import train_run

from .conftest import synthetic_config
from .faults import count_writes, run_killed_at

SMALL = {"train": 32, "val": 16, "test": 16}


def leftovers(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name.endswith((atomic.FOLDER_TMP_SUFFIX, atomic.OLD_SUFFIX))]


@pytest.fixture
def toy_run(write_config):
    def make(**changes):
        raw = synthetic_config(epochs=2, sizes=SMALL)
        raw["train"].update(changes)
        return resolve_run(load_config(write_config(raw)), "toy", "mitp")

    return make


@pytest.mark.slow
def test_training_killed_at_every_write_resumes_consistently(toy_run, tmp_path):
    run = toy_run()
    reference = train_run(run, tmp_path / "reference", progress=False)
    expected, _, _ = ckpt.load_checkpoint(tmp_path / "reference" / "best")
    writes = count_writes(lambda: train_run(run, tmp_path / "counted", progress=False))
    assert writes >= 10
    for n in range(1, writes + 1):
        run_dir = tmp_path / f"killed-{n}"
        assert run_killed_at(n, lambda run_dir=run_dir: train_run(run, run_dir, progress=False)), n
        if (run_dir / "best").exists():  # after the kill: old or new, never half
            assert ckpt.is_complete(run_dir / "best"), n
        train_run(run, run_dir, progress=False)
        result = json.loads((run_dir / "result.json").read_text())
        best_state = json.loads((run_dir / "best" / "state.json").read_text())
        history = json.loads((run_dir / "history.json").read_text())
        assert result["best_epoch"] == best_state["epoch"] == reference.best_epoch, n
        assert [h["epoch"] for h in history] == [1, 2], n
        trained, _, _ = ckpt.load_checkpoint(run_dir / "best")
        assert all(torch.equal(trained[k], expected[k]) for k in expected), n
        assert not leftovers(run_dir), (n, leftovers(run_dir))


def test_a_failed_start_does_not_block_the_corrected_rerun(toy_run, tmp_path):
    run = toy_run()
    assert run_killed_at(3, lambda: train_run(run, tmp_path / "run", progress=False))  # before the first checkpoint
    assert not ckpt.epoch_checkpoints(tmp_path / "run")
    corrected = toy_run(lr=1e-3)  # another config in the same folder: nothing was committed yet
    assert train_run(corrected, tmp_path / "run", progress=False).epochs_run == 2


def test_resume_refuses_only_result_changing_values_and_names_them(toy_run, tmp_path, monkeypatch):
    import mitp.train.runs as train_module

    real_save = train_module.save_epoch

    def die_at_epoch_2(run_dir, run, trainable, optimizer_state, state, improved):
        if state["epoch"] == 2:
            raise KeyboardInterrupt
        real_save(run_dir, run, trainable, optimizer_state, state, improved)

    monkeypatch.setattr(train_module, "save_epoch", die_at_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        train_run(toy_run(), tmp_path / "run", progress=False)
    monkeypatch.setattr(train_module, "save_epoch", real_save)
    assert len(ckpt.epoch_checkpoints(tmp_path / "run")) == 1  # epoch 1 is committed
    with pytest.raises(ConfigError, match=r"train\.lr, train\.weight_decay differ"):
        train_run(toy_run(lr=1e-3, weight_decay=0.1), tmp_path / "run", progress=False)
    resumed = train_run(toy_run(num_workers=1, eval_batch_size=16, keep_checkpoints=2), tmp_path / "run", progress=False)
    assert [h["epoch"] for h in resumed.history] == [1, 2]


def test_a_second_trainer_in_the_same_folder_is_refused(toy_run, tmp_path):
    with locked_run_folder(tmp_path / "run"):
        with pytest.raises(RunLocked, match="is in use: process"):
            train_run(toy_run(), tmp_path / "run", progress=False)
    train_run(toy_run(), tmp_path / "run", progress=False)  # released with the first holder


@pytest.mark.parametrize("damaged", [ckpt.MODEL_FILE, ckpt.OPTIMIZER_FILE, ckpt.STATE_FILE, ckpt.CONFIG_FILE])
def test_a_damaged_checkpoint_is_named_and_resume_falls_back(toy_run, tmp_path, damaged):
    run = toy_run(keep_checkpoints=2)
    reference = train_run(toy_run(keep_checkpoints=2), tmp_path / "reference", progress=False)
    train_run(run, tmp_path / "run", progress=False)
    newest = ckpt.epoch_directory(tmp_path / "run", 2)
    (newest / damaged).write_bytes((newest / damaged).read_bytes()[:20])  # truncated
    (tmp_path / "run" / "result.json").unlink()  # so the rerun has an epoch to redo
    messages = []
    found = ckpt.latest_good_checkpoint(tmp_path / "run", warn=messages.append)
    assert found is not None and found.directory == ckpt.epoch_directory(tmp_path / "run", 1)
    assert str(newest / damaged) in messages[0]
    result = train_run(run, tmp_path / "run", progress=False)  # redoes epoch 2 from epoch 1
    assert [h["train_loss"] for h in result.history] == pytest.approx([h["train_loss"] for h in reference.history], abs=1e-6)

    only = tmp_path / "only"
    train_run(toy_run(), only, progress=False)
    newest = ckpt.epoch_directory(only, 2)
    (newest / damaged).write_text("")
    (only / "result.json").unlink()
    with pytest.raises(ckpt.CheckpointError, match=str(newest / damaged)):
        train_run(toy_run(), only, progress=False)


def _same_prepared(a: Path, b: Path) -> bool:
    files = sorted(p.name for p in a.iterdir())
    return files == sorted(p.name for p in b.iterdir()) and all(
        (a / name).read_bytes() == (b / name).read_bytes() for name in files if name.endswith((".parquet", ".json", ".txt"))
    )


@pytest.mark.parametrize("exchange", [True, False], ids=["atomic-exchange", "two-renames"])
def test_prepare_killed_at_every_write_keeps_old_or_new(tmp_path, monkeypatch, exchange):
    if not exchange:
        monkeypatch.setattr(atomic, "_exchange", lambda a, b: False)  # a file system without renameat2
    make_twin("demo-food101", tmp_path / "raw", sizes={"train": 24, "val": 8, "test": 8})
    prepare_dataset("demo-food101", tmp_path / "raw", tmp_path / "reference")
    out = tmp_path / "out"
    prepare_dataset("demo-food101", tmp_path / "raw", out)  # the "old" version to be replaced
    writes = count_writes(lambda: prepare_dataset("demo-food101", tmp_path / "raw", tmp_path / "counted"))
    for n in range(1, writes + 3):
        killed = run_killed_at(n, lambda: prepare_dataset("demo-food101", tmp_path / "raw", out))
        if exchange:
            assert _same_prepared(out, tmp_path / "reference"), n  # old and new are the same data here
        prepare_dataset("demo-food101", tmp_path / "raw", out)
        assert _same_prepared(out, tmp_path / "reference") and not leftovers(tmp_path), (n, killed)


@pytest.mark.slow
def test_twin_download_killed_at_every_write_completes_on_rerun(tmp_path):
    writes = count_writes(lambda: download_dataset("demo-snlive", tmp_path / "counted"))
    for n in range(1, writes + 1):
        raw = tmp_path / f"raw-{n}"
        assert run_killed_at(n, lambda raw=raw: download_dataset("demo-snlive", raw)), n
        assert not raw.exists() or (raw / ".complete").is_file(), n  # nothing, or a whole twin
        download_dataset("demo-snlive", raw)
        assert (raw / ".complete").is_file() and len(list((raw / "flickr30k_images").iterdir())) == 1600 + 320 + 400, n
        assert not leftovers(tmp_path), n


@pytest.mark.slow
def test_export_killed_at_every_write_keeps_a_whole_bundle(tmp_path, monkeypatch, prepared_twin):
    """A bundle already there stays whole (old or new) whatever instant the export is killed at."""
    from mitp.ship import export
    from mitp.ship.export import export_bundle

    prepared_twin(into=tmp_path, prepared="food")
    config = synthetic_config(epochs=1)
    config["datasets"] = {"food": {
        "task": "single-label", "data_dir": str(tmp_path / "food"), "batch_size": 16, "prompt_length": 2,
        "best_layers": [2, 3], "small_layers": [3], "templates": ["a photo of {}."],
    }}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    train_run(resolve_run(load_config(tmp_path / "config.yaml"), "food", "mitp"), tmp_path / "run", progress=False)
    bundle = tmp_path / "bundle"
    export_bundle(tmp_path / "run", bundle)
    converted = {p.name: p.read_bytes() for p in bundle.glob("*.onnx*") if p.name.startswith(("model.onnx", "backbone-"))}

    def convert_once(graph, inputs, path):  # the model and its backbone file, as a conversion leaves them
        for name, data in converted.items():
            (path.parent / name).write_bytes(data)

    # The conversion itself writes only inside the bundle's temporary folder; convert once, not per kill.
    monkeypatch.setattr(export, "write_onnx", convert_once)
    writes = count_writes(lambda: export_bundle(tmp_path / "run", tmp_path / "counted"))
    for n in range(1, writes + 1):
        assert run_killed_at(n, lambda: export_bundle(tmp_path / "run", bundle)), n
        assert {"model.onnx", "tokenizer.json", "export_report.json"} <= {p.name for p in bundle.iterdir()}, n
    export_bundle(tmp_path / "run", bundle)
    assert not leftovers(tmp_path)


def test_resuming_on_data_prepared_again_is_refused(prepared_twin, tmp_path):
    """A run records the prepared data's fingerprint; preparing the data set again under it (here: another
    twin seed) and resuming would mix two validation sets, so it is refused with a message."""
    from typer.testing import CliRunner

    from mitp.cli import app
    from mitp.data.twins import make_twin

    prepared = prepared_twin(into=tmp_path, prepared="food")
    config = synthetic_config(epochs=2)
    config["datasets"] = {"food": {
        "task": "single-label", "data_dir": str(prepared), "batch_size": 16, "prompt_length": 2,
        "best_layers": [2, 3], "small_layers": [3], "templates": ["a photo of {}."],
    }}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    runner = CliRunner()
    args = ["train", "-c", str(tmp_path / "config.yaml"), "-d", "food", "--out", str(tmp_path / "run"), "--no-progress"]
    assert runner.invoke(app, args).exit_code == 0
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    report = json.loads((prepared / "prepare_report.json").read_text())
    assert result["data_fingerprint"] and set(report["splits"]) == {"train", "val", "test"}
    assert all(len(split["sha256"]) == 64 for split in report["splits"].values())
    shutil.rmtree(tmp_path / "raw")
    make_twin("demo-food101", tmp_path / "raw", seed=5, sizes={"train": 24, "val": 8, "test": 8})
    prepare_dataset("demo-food101", tmp_path / "raw", prepared)
    resumed = runner.invoke(app, args)
    assert resumed.exit_code == 2 and "was trained on other prepared data" in " ".join(resumed.output.split())


def test_a_lost_best_checkpoint_is_said_not_reported_done(tmp_path, write_config):
    """best/ gone and the epoch it copied pruned (keep_checkpoints 1 keeps the newest epoch only): the rerun
    says the best model is lost instead of reporting the run done."""
    from typer.testing import CliRunner

    from mitp.cli import app

    config = write_config(synthetic_config(epochs=2, sizes={"train": 64, "val": 32, "test": 32}))
    runner = CliRunner()
    args = ["train", "-c", str(config), "-d", "toy", "--out", str(tmp_path / "run"), "--no-progress"]
    assert runner.invoke(app, args).exit_code == 0
    (newest,) = ckpt.epoch_checkpoints(tmp_path / "run")
    state = json.loads((newest / "state.json").read_text())
    (newest / "state.json").write_text(json.dumps({**state, "best_epoch": 1}))  # epoch 1 was best; its folder is pruned
    shutil.rmtree(tmp_path / "run" / "best")
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and "the run's best model is lost" in " ".join(result.output.split()), result.output


@pytest.mark.parametrize("best_epoch", [0, 99])
def test_a_best_epoch_outside_the_run_marks_the_checkpoint_damaged(tmp_path, write_config, best_epoch):
    from typer.testing import CliRunner

    from mitp.cli import app
    from mitp.train.checkpoint import CheckpointError, epoch_checkpoints, load_checkpoint

    config = write_config(synthetic_config(epochs=1, sizes={"train": 64, "val": 32, "test": 32}))
    assert CliRunner().invoke(app, ["train", "-c", str(config), "-d", "toy", "--out", str(tmp_path / "run"), "--no-progress"]).exit_code == 0
    (newest,) = epoch_checkpoints(tmp_path / "run")
    state = json.loads((newest / "state.json").read_text())
    (newest / "state.json").write_text(json.dumps({**state, "best_epoch": best_epoch}))
    with pytest.raises(CheckpointError, match=f"best epoch {best_epoch}, which a run of 1 epochs cannot have"):
        load_checkpoint(newest)
