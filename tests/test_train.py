import json
import math

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from mitp.cli import app
from mitp.config import ConfigError, load_config, resolve_run
from mitp.files.atomic import OLD_SUFFIX, repair_directory
from mitp.report.metrics import classification_metrics, multilabel_f1
from mitp.train import checkpoint as ckpt
from mitp.train import runs as train_module
from mitp.train.runs import train_run

from .conftest import synthetic_config

runner = CliRunner()


def run_for(config_path, setting="mitp", **overrides):
    return resolve_run(load_config(config_path), "toy", setting, **overrides)


def test_training_lowers_the_loss_and_beats_chance(write_config, tmp_path):
    config = write_config(synthetic_config(epochs=4))
    result = train_run(run_for(config), tmp_path / "run", progress=False)
    losses = [epoch["train_loss"] for epoch in result.history]
    assert losses[-1] < losses[0] - 0.2
    assert result.best_metric > 2 * (1 / 16)  # 16 classes: chance is 1/16


def orthonormal_classes(monkeypatch, logit_scale: float | None = None):
    """Make train_run's models use well-separated (orthonormal) class embeddings, optionally at a given
    logit scale: a random tiny CLIP's template embeddings nearly coincide, which no head can undo."""
    real_build = train_module.build_model

    def build(run, backbone, classes):
        if logit_scale is not None:
            backbone.clip.logit_scale.data.fill_(math.log(logit_scale))
        model = real_build(run, backbone, classes)
        basis = torch.linalg.qr(torch.randn(32, len(classes), generator=torch.Generator().manual_seed(0)))[0]
        model.class_embeddings = basis.T.contiguous()  # (K, P) orthonormal rows
        return model

    monkeypatch.setattr(train_module, "build_model", build)


@pytest.mark.slow
def test_the_head_decides_whether_the_caption_reaches_the_prediction(write_config, tmp_path, monkeypatch):
    """The class is (colour in the image, word in the caption): the image alone reaches at most 1/4.
    Under the image head only interaction brings the caption in (prompts-only stays at the image-only
    ceiling); under the fused head the caption reaches every variant (docs/decisions.md §7)."""
    orthonormal_classes(monkeypatch)
    scores = {}
    for head in ("image", "fused"):
        raw = synthetic_config(epochs=5, hub_width=64, sizes={"train": 512, "val": 128, "test": 32})
        raw["head"] = head
        config = write_config(raw)
        for setting in ("mitp", "prompts-only", "p-clip"):
            scores[head, setting] = train_run(run_for(config, setting), tmp_path / head / setting, progress=False).best_metric
    assert scores["image", "prompts-only"] <= 0.25 + 0.05
    assert scores["image", "mitp"] > 0.32 and scores["image", "mitp"] > scores["image", "prompts-only"] + 0.1
    assert scores["fused", "p-clip"] > 0.32 and scores["fused", "p-clip"] > scores["image", "p-clip"] + 0.05
    assert scores["fused", "mitp"] > 0.32


def test_multilabel_bias_starts_at_the_training_prior(write_config):
    """At CLIP's logit scale of 100 a zero bias predicts nearly every label positive; the initialised bias
    predicts each label about as often as the training data have it."""
    from mitp.data.dataset import build_split
    from mitp.model.backbone import load_backbone
    from mitp.runtime.decision import multilabel_decisions
    from mitp.train.factory import build_model

    run = run_for(write_config(synthetic_config(task="multi-label", sizes={"train": 256, "val": 32, "test": 32})))
    backbone = load_backbone(run.backbone)
    backbone.clip.logit_scale.data.fill_(math.log(100))
    train_set = build_split(run, "train", backbone.tokenizer, 32)
    model = build_model(run, backbone, train_set.classes).eval()

    def positive_rate():
        with torch.no_grad():
            logits = model(train_set.images, train_set.input_ids, train_set.attention_mask)
        return multilabel_decisions(logits.numpy()).mean(axis=0)  # (K,)

    prior = train_set.labels.numpy().mean(axis=0)
    assert (positive_rate() > prior + 0.3).all()  # the problem: almost everything is positive
    info = train_module.init_class_bias(model, train_set, run, train_module.make_accelerator("fp32"))
    assert info["samples"] == 256
    assert np.abs(positive_rate() - prior).max() <= 0.1


@pytest.mark.slow
def test_initialised_bias_trains_at_least_as_well_as_a_zero_bias(write_config, tmp_path, monkeypatch):
    orthonormal_classes(monkeypatch, logit_scale=100)
    run = run_for(write_config(synthetic_config(task="multi-label", epochs=3, hub_width=64, sizes={"train": 512, "val": 128, "test": 32})))
    new = train_run(run, tmp_path / "new", progress=False)
    assert json.loads((tmp_path / "new" / "checkpoints" / "epoch-0003" / "state.json").read_text())["class_bias_init"]["samples"] == 512
    monkeypatch.setattr(train_module, "init_class_bias", lambda *args: {"samples": 0, "min": 0.0, "max": 0.0})  # zero bias
    old_run = run.model_copy(update={"train": run.train.model_copy(update={"class_bias_lr": run.lr})})  # at the prompts' lr
    old = train_run(old_run, tmp_path / "old", progress=False)
    assert new.best_metric >= old.best_metric


def test_resume_after_a_kill_reproduces_the_uninterrupted_run(write_config, tmp_path, monkeypatch):
    config = write_config(synthetic_config(epochs=3, sizes={"train": 96, "val": 32, "test": 32}))
    reference = train_run(run_for(config), tmp_path / "reference", progress=False)

    real_save = train_module.save_epoch

    def save_then_die(run_dir, run, trainable, optimizer_state, state, improved):
        real_save(run_dir, run, trainable, optimizer_state, state, improved)
        if state["epoch"] == 2:
            raise KeyboardInterrupt  # killed right after epoch 2 was checkpointed

    monkeypatch.setattr(train_module, "save_epoch", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train_run(run_for(config), tmp_path / "killed", progress=False)
    monkeypatch.setattr(train_module, "save_epoch", real_save)
    leftover = tmp_path / "killed" / "checkpoints" / ".epoch-0003.x1y2.mitp-tmp"
    leftover.mkdir()  # a half-written checkpoint of a killed save
    resumed = train_run(run_for(config), tmp_path / "killed", progress=False)

    assert [h["epoch"] for h in resumed.history] == [1, 2, 3]
    assert [h["train_loss"] for h in resumed.history] == pytest.approx([h["train_loss"] for h in reference.history], abs=1e-6)
    ref_state, _, _ = ckpt.load_checkpoint(tmp_path / "reference" / "best")
    new_state, _, _ = ckpt.load_checkpoint(tmp_path / "killed" / "best")
    for name, tensor in ref_state.items():
        assert torch.allclose(tensor, new_state[name], atol=1e-6), name
    assert not leftover.exists()


def test_a_run_directory_refuses_a_different_config(write_config, tmp_path):
    config = write_config(synthetic_config(epochs=1, sizes={"train": 32, "val": 32, "test": 32}))
    train_run(run_for(config), tmp_path / "run", progress=False)
    with pytest.raises(ConfigError, match=r"model.variant, setting.variant, setting_name differ from this command's"):
        train_run(run_for(config, "prompts-only"), tmp_path / "run", progress=False)


def test_a_swap_killed_between_its_two_renames_is_repaired(tmp_path):
    """Where the file system cannot exchange two folders atomically, the swap takes two renames."""
    best, old = tmp_path / "best", tmp_path / f"best{OLD_SUFFIX}"
    old.mkdir()
    (old / ckpt.MODEL_FILE).write_text("x")
    (old / ckpt.STATE_FILE).write_text("{}")
    repair_directory(best)  # killed after best -> best.mitp-old, before the new folder -> best
    assert ckpt.is_complete(best) and not old.exists()


@pytest.mark.parametrize("task, setting", [("single-label", "mitp"), ("multi-label", "mitp-small"), ("single-label", "p-clip")])
def test_cli_train_then_evaluate(write_config, tmp_path, task, setting):
    config = write_config(synthetic_config(task=task, epochs=1, sizes={"train": 64, "val": 32, "test": 48}))
    run_dir = tmp_path / "run"
    result = runner.invoke(app, ["train", "-c", str(config), "-d", "toy", "-s", setting, "--out", str(run_dir), "--no-progress", "--evaluate", "test"])
    assert result.exit_code == 0, result.output
    assert ckpt.is_complete(run_dir / "best")
    result = runner.invoke(app, ["evaluate", "--checkpoint", str(run_dir), "--split", "test", "--out", str(tmp_path / "m.json")])
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["split"] == "test" and metrics["metrics"]["num_samples"] == 48
    assert metrics["config"]["setting_name"] == setting and metrics["checkpoint"].endswith("best")
    keys = ("f1_micro", "f1_macro") if task == "multi-label" else ("accuracy",)
    for key in keys:
        assert 0.0 <= metrics["metrics"][key] <= 1.0
    # the training process's own evaluation (--evaluate) writes what a separate mitp evaluate writes
    in_training = json.loads((run_dir / "metrics-test.json").read_text())
    assert (setting == "p-clip") == (in_training["memory_ablation"] is None)
    for key in ("metrics", "per_sample", "memory_ablation", "checkpoint", "epoch", "config", "trainable_params"):
        assert in_training[key] == metrics[key], key


def test_train_evaluates_its_best_epoch_not_its_last(write_config, tmp_path, monkeypatch):
    """Validation says epoch 1 was best; the weights in memory after training are epoch 2's. The in-process
    evaluation must load best/, as `mitp evaluate --checkpoint RUN` does."""
    config = write_config(synthetic_config(epochs=2, sizes={"train": 64, "val": 32, "test": 48}))
    scores = iter([0.9, 0.1])
    real = train_module.evaluate_loader
    monkeypatch.setattr(train_module, "evaluate_loader", lambda *a, **k: {**real(*a, **k), "accuracy": next(scores)})
    result = train_run(run_for(config), tmp_path / "run", progress=False, evaluate=["test", "val"])
    assert result.best_epoch == 1
    from mitp.train.evaluate import evaluate_checkpoint

    for split in ("test", "val"):
        in_training = json.loads((tmp_path / "run" / f"metrics-{split}.json").read_text())
        separate = evaluate_checkpoint(tmp_path / "run", split)
        assert in_training["epoch"] == separate["epoch"] == 1
        assert in_training["per_sample"] == separate["per_sample"] and in_training["metrics"] == separate["metrics"]
        assert in_training["memory_ablation"] == separate["memory_ablation"]


def test_train_refuses_a_bad_evaluate_split_or_target_before_training(write_config, tmp_path):
    config = write_config(synthetic_config())
    result = runner.invoke(app, ["train", "-c", str(config), "-d", "toy", "--out", str(tmp_path / "r"), "--evaluate", "tset"])
    assert result.exit_code == 2 and "--evaluate tset: name a split, one of train, val, test" in result.output
    (tmp_path / "r2").mkdir()
    (tmp_path / "r2" / "metrics-test.json").write_text("my notes\n")
    result = runner.invoke(app, ["train", "-c", str(config), "-d", "toy", "--out", str(tmp_path / "r2"), "--evaluate", "test"])
    assert result.exit_code == 2 and "not a metrics file written by mitp evaluate" in result.output
    assert (tmp_path / "r2" / "metrics-test.json").read_text() == "my notes\n" and not (tmp_path / "r2" / "checkpoints").exists()


def test_cli_reports_bad_input_with_a_clear_message(write_config, tmp_path):
    config = write_config(synthetic_config())
    result = runner.invoke(app, ["train", "-c", str(config), "-d", "nope", "--out", str(tmp_path / "r")])
    assert result.exit_code == 2 and "unknown data set 'nope'; allowed: toy" in result.output
    result = runner.invoke(app, ["evaluate", "--checkpoint", str(tmp_path / "missing")])
    assert result.exit_code == 2 and "neither a checkpoint nor a run directory" in result.output
    raw = synthetic_config()
    raw["datasets"]["real"] = {"task": "single-label", "data_dir": str(tmp_path / "absent")}
    result = runner.invoke(app, ["train", "-c", str(write_config(raw)), "-d", "real", "--out", str(tmp_path / "r2")])
    assert result.exit_code == 2 and "classes.json not found" in result.output


def test_metrics_by_hand():
    logits = torch.tensor([[2.0, 0.1], [0.3, 0.9], [1.0, 0.0]]).numpy()
    assert classification_metrics("single-label", logits, torch.tensor([0, 1, 1]).numpy())["accuracy"] == pytest.approx(2 / 3)
    predicted = torch.tensor([[1, 0, 1], [0, 1, 0], [1, 1, 0]]).bool().numpy()
    truth = torch.tensor([[1, 0, 0], [0, 1, 0], [0, 1, 0]]).bool().numpy()
    scores = multilabel_f1(predicted, truth)
    # tp = [1, 2, 0], fp = [1, 0, 1], fn = [0, 0, 0]
    assert scores["f1_micro"] == pytest.approx(2 * 3 / (2 * 3 + 2))
    assert scores["f1_macro"] == pytest.approx((2 / 3 + 1 + 0) / 3)


@pytest.mark.slow
def test_two_processes_train_like_one_process_with_their_combined_batch(write_config, tmp_path):
    """The distributed path that `accelerate launch --multi_gpu` starts, run on CPU: torchrun, gloo, DDP.
    Two processes with batch 32 each see batches 2k and 2k+1 of the same seeded order, and DDP averages
    their gradients, so they must train what one process trains with batch 64."""
    import subprocess
    import sys

    import yaml

    sizes = {"train": 128, "val": 40, "test": 32}
    config = write_config(synthetic_config(epochs=2, sizes=sizes))
    combined = tmp_path / "combined.yaml"
    combined.write_text(yaml.safe_dump(synthetic_config(epochs=2, sizes=sizes, batch_size=64)))
    single = train_run(resolve_run(load_config(combined), "toy", "mitp"), tmp_path / "single", progress=False)

    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "mitp.cli", "train", "-c", str(config), "-d", "toy", "-s", "mitp", "--out", str(tmp_path / "ddp"), "--no-progress",
        "--evaluate", "test",
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stderr.count("done: best epoch") == 1  # only the main process reports

    result = json.loads((tmp_path / "ddp" / "result.json").read_text())
    assert result["processes"] == 2
    history = json.loads((tmp_path / "ddp" / "history.json").read_text())
    assert [h["val"]["num_samples"] for h in history] == [40, 40]  # gathered from both, padding dropped
    metrics = json.loads((tmp_path / "ddp" / "metrics-test.json").read_text())
    assert metrics["metrics"]["num_samples"] == 32 and len(metrics["per_sample"]["predicted"]) == 32
    assert [h["train_loss"] for h in history] == pytest.approx([h["train_loss"] for h in single.history], abs=1e-5)
    trained, _, _ = ckpt.load_checkpoint(ckpt.epoch_directory(tmp_path / "ddp", 2))
    reference, _, _ = ckpt.load_checkpoint(ckpt.epoch_directory(tmp_path / "single", 2))
    for name, tensor in reference.items():
        assert torch.allclose(tensor, trained[name], atol=1e-5), name


def test_tensorboard_tracking_writes_what_a_run_did_and_reads_back(tmp_path, write_config):
    """train.log_with [tensorboard]: per-step loss and learning rate, per-epoch validation metrics,
    throughput and the memory hub's gate statistics, in event files under <run>/logs, offline."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    config = synthetic_config(epochs=2, sizes={"train": 64, "val": 32, "test": 32})
    config["train"]["log_with"] = ["tensorboard"]
    path = write_config(config)
    result = runner.invoke(app, ["train", "-c", str(path), "-d", "toy", "-s", "mitp", "--out", str(tmp_path / "run"), "--no-progress"])
    assert result.exit_code == 0, result.output
    events = EventAccumulator(str(tmp_path / "run" / "logs" / "mitp")).Reload()  # (hyper-parameters in a subfolder)
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "train/lr", "val/accuracy", "epoch/train_samples_per_s"} <= tags
    assert any(tag.startswith("gates/") for tag in tags)
    steps = [e.step for e in events.Scalars("train/loss")]
    assert steps == list(range(1, len(steps) + 1)) and len(steps) == 2 * 2  # 64 pairs, batch 32, two epochs
    assert len(events.Scalars("val/accuracy")) == 2
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert [e.value for e in events.Scalars("val/accuracy")] == pytest.approx([h["val"]["accuracy"] for h in history])


def _same_run(packed, alone):
    """Two run folders hold the same training: results, history and test metrics, to the last digit."""
    timing = {"train_seconds", "peak_memory_gib", "peak_memory_kind", "environment"}
    result_a, result_b = (json.loads((folder / "result.json").read_text()) for folder in (packed, alone))
    assert {k: v for k, v in result_a.items() if k not in timing} == {k: v for k, v in result_b.items() if k not in timing}
    losses = [[epoch["train_loss"] for epoch in json.loads((folder / "history.json").read_text())] for folder in (packed, alone)]
    assert losses[0] == losses[1]
    metrics_a, metrics_b = (json.loads((folder / "metrics-test.json").read_text()) for folder in (packed, alone))
    assert metrics_a["metrics"] == metrics_b["metrics"] and metrics_a["per_sample"] == metrics_b["per_sample"]


def test_train_runs_trains_a_plan_in_one_process_as_train_does_run_by_run(write_config, tmp_path):
    config = write_config(synthetic_config(epochs=2, sizes={"train": 64, "val": 32, "test": 48}))
    plan = tmp_path / "plan.yaml"
    plan.write_text(
        "runs:\n"
        f"  - {{out: {tmp_path / 'packed' / 'a'}, dataset: toy, setting: mitp, seed: 0}}\n"
        f"  - {{out: {tmp_path / 'packed' / 'b'}, dataset: toy, setting: prompts-only, seed: 3, fraction: 0.5}}\n"
    )
    result = runner.invoke(app, ["train-runs", str(plan), "-c", str(config), "--evaluate", "test", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "run 2 of 2" in result.output and "2 runs trained" in result.output
    for name, args in (("a", ["-s", "mitp", "--seed", "0"]), ("b", ["-s", "prompts-only", "--seed", "3", "--fraction", "0.5"])):
        alone = tmp_path / "alone" / name
        done = runner.invoke(app, ["train", "-c", str(config), "-d", "toy", *args, "--out", str(alone), "--evaluate", "test", "--no-progress"])
        assert done.exit_code == 0, done.output
        _same_run(tmp_path / "packed" / name, alone)
    second = json.loads((tmp_path / "packed" / "b" / "result.json").read_text())
    assert second["fraction"] == 0.5 and second["seed"] == 3
    # on a CPU the peak is the process's, over every run it trained (in this suite's process: more than these two)
    kind = second["peak_memory_kind"]
    assert kind == "cuda max allocated" or (kind.startswith("cpu max RSS of a process that trained ") and int(kind.split()[-2]) >= 2)


@pytest.mark.parametrize("text, message", [
    ("runs: []\n", "runs: "),
    ("- {out: a, dataset: toy, setting: mitp}\n", "a plan is a mapping with one key, runs"),
    ("runs:\n  - {out: a, dataset: toy, setting: mitp, sede: 1}\n", "unknown key(s) sede"),
    ("runs:\n  - {out: a, dataset: toy, setting: mitp}\n  - {out: ./a, dataset: toy, setting: p-clip}\n", "two runs write into one folder"),
    ("runs:\n  - {out: a, dataset: toy, setting: mitp, fraction: 2.0}\n", "fraction"),
    ("runs: [\n", "not valid YAML"),
])
def test_train_runs_refuses_a_bad_plan_before_training(write_config, tmp_path, monkeypatch, text, message):
    monkeypatch.chdir(tmp_path)
    config = write_config(synthetic_config())
    (tmp_path / "plan.yaml").write_text(text)
    result = runner.invoke(app, ["train-runs", "plan.yaml", "-c", str(config)])
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output, result.output
    assert not (tmp_path / "a").exists()


def test_train_runs_names_the_run_it_refuses_and_trains_none(write_config, tmp_path):
    config = write_config(synthetic_config())
    plan = tmp_path / "plan.yaml"
    plan.write_text(f"runs:\n  - {{out: {tmp_path / 'a'}, dataset: toy, setting: mitp}}\n  - {{out: {tmp_path / 'b'}, dataset: toy, setting: mtip}}\n")
    result = runner.invoke(app, ["train-runs", str(plan), "-c", str(config)])
    assert result.exit_code == 2 and f"run 2 ({tmp_path / 'b'})" in result.output and "unknown setting 'mtip'" in result.output, result.output
    assert not (tmp_path / "a").exists()
    plan.write_text(f"runs:\n  - {{out: {tmp_path / 'a'}, dataset: toy, setting: mitp}}\n  - {{out: {tmp_path / 'b'}, dataset: toy, setting: mitp}}\n")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "metrics-test.json").write_text("my notes\n")
    result = runner.invoke(app, ["train-runs", str(plan), "-c", str(config), "--evaluate", "test"])
    assert result.exit_code == 2 and "not a metrics file written by mitp evaluate" in result.output
    assert not (tmp_path / "a").exists() and (tmp_path / "b" / "metrics-test.json").read_text() == "my notes\n"
