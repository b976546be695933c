"""Training and evaluation engine: one code path on CPU, one GPU or many (Accelerate).

bf16 autocast on GPU and fp32 on CPU; only the trainable parameters reach the optimizer; per-epoch
validation picks the best checkpoint; every epoch is checkpointed atomically, and a killed run resumes
from its last finished epoch with the same data order (the sampler is seeded per epoch).
"""

from __future__ import annotations

import gc
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from rich.console import Console
from rich.markup import escape
from torch.utils.data import DataLoader, Sampler, Subset

from ..config import RunConfig
from ..data.dataset import PairDataset, build_split, collate_pairs, data_fingerprint, image_path_lines, pixel_values
from ..errors import MitpError
from ..files.atomic import atomic_write_json
from ..files.progress import progress_bar
from ..model.backbone import image_size_of, load_backbone, load_tokenizer
from ..model.base import PromptedCLIP, classification_loss
from ..report.metrics import PRIMARY_METRIC
from ..runtime.tokenizer import ClipTokenizer
from .checkpoint import EpochCheckpoint, load_checkpoint, resolve_checkpoint
from .engine import GATE_SPREAD_FLOOR, evaluate_loader, gates_observed, low_spread_gates, make_accelerator, worker_count
from .evaluate import ablation_line, evaluate_model, metrics_line, write_metrics
from .factory import build_model
from .provenance import environment_record
from .rundir import RESULT_FILE, locked_run_folder, repair, resume_point, save_epoch

CLASS_COSINE_WARNING = 0.98
_runs_in_process = 0  # runs this process has started: a CPU's max RSS covers all of them (mitp train-runs)


class EpochShuffleSampler(Sampler[int]):
    """A permutation drawn from (seed, epoch): a resumed run sees exactly the order it would have."""

    def __init__(self, length: int, seed: int):
        self.length, self.seed, self.epoch = length, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return iter(torch.randperm(self.length, generator=g).tolist())

    def __len__(self) -> int:
        return self.length


@dataclass
class TrainState:
    """Where a run stands: saved in every checkpoint's state.json, restored on resume."""

    epoch: int = 0
    global_step: int = 0
    best_epoch: int = 0
    best_metric: float = -math.inf
    history: list[dict[str, Any]] = field(default_factory=list)
    class_bias_init: dict[str, Any] | None = None
    gate_means: dict[str, list] | None = None  # the memory hub's gate means over the latest epoch
    data_fingerprint: str | None = None  # the prepared data trained on (mitp.data.dataset.data_fingerprint)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> TrainState:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in known})

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass
class TrainResult:
    run_dir: Path
    best_epoch: int
    best_metric: float
    epochs_run: int
    history: list[dict[str, Any]]
    main_process: bool = True  # False in the other processes of a distributed run, which stay quiet


class TrainingError(MitpError, RuntimeError):
    """Training cannot go on (a non-finite loss); the message says what to change."""


def train_run(
    run: RunConfig, run_dir: Path, console: Console | None = None, progress: bool = True, evaluate: Sequence[str] = ()
) -> TrainResult:
    """Train one (data set, setting) run into `run_dir`, resuming from its last checkpoint if any; then
    evaluate its best checkpoint on each split of `evaluate` into `run_dir/metrics-<split>.json`."""
    global _runs_in_process
    _runs_in_process += 1
    console = console or Console(stderr=True)
    run_dir = Path(run_dir)
    accelerator = make_accelerator(run.train.precision, run.train.log_with, run_dir / LOGS_DIR)
    main = accelerator.is_main_process
    tokenizer = load_tokenizer(run.backbone)  # before the weights: bad data must not wait for them
    size = image_size_of(run.backbone)
    train_set = build_split(run, "train", tokenizer, size)
    val_set = build_split(run, "val", tokenizer, size)
    fingerprint = data_fingerprint(run)
    val_set.check_images()  # a broken validation image is found now, not after the first epoch
    if main:
        for warning, line in image_path_lines({"train": train_set, "val": val_set}, on_gpu=accelerator.device.type == "cuda"):
            console.print(f"[bold yellow]warning:[/] {escape(line)}" if warning else escape(line), soft_wrap=True, highlight=False)
    with locked_run_folder(run_dir, main):
        warn = (lambda message: console.print(f"[bold yellow]warning:[/] {escape(message)}", soft_wrap=True)) if main else (lambda message: None)
        resumed = resume_point(run_dir, run, warn, fingerprint)
        if main:
            repair(run_dir, resumed.state if resumed else None, run.epochs)
        accelerator.wait_for_everyone()
        trainer = Trainer(run, run_dir, accelerator, console, progress)
        result = trainer.fit(train_set, val_set, resumed, fingerprint)
        for split in evaluate:
            trainer.evaluate_best(split, tokenizer, size)
        return result


def train_runs(
    runs: Sequence[tuple[RunConfig, Path]], console: Console | None = None, progress: bool = True, evaluate: Sequence[str] = ()
) -> list[TrainResult]:
    """Train each (run, folder) in turn in this process, each exactly as `train_run` alone would: the
    start-up (torch, transformers, Accelerate) is paid once for all of them (mitp.train.plan)."""
    console = console or Console(stderr=True)
    results = []
    for number, (run, run_dir) in enumerate(runs, 1):
        console.print(f"[bold]run {number} of {len(runs)}[/]: {run.dataset_name}/{run.setting_name} seed {run.seed} -> {run_dir}", soft_wrap=True)
        results.append(train_run(run, run_dir, console=console, progress=progress, evaluate=evaluate))
        gc.collect()  # the finished run's model and loaders, before the next one allocates its own
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return results


class Trainer:
    """One run's training: the model, optimizer and loaders prepared once, then epochs until done."""

    def __init__(self, run: RunConfig, run_dir: Path, accelerator: Accelerator, console: Console, progress: bool):
        self.run, self.run_dir, self.accelerator, self.console = run, run_dir, accelerator, console
        self.progress = progress and accelerator.is_main_process
        self.metric = PRIMARY_METRIC[run.dataset.task]

    def say(self, message: str) -> None:
        if self.accelerator.is_main_process:
            self.console.print(message, soft_wrap=True)

    def fit(self, train_set: PairDataset, val_set: PairDataset, resumed: EpochCheckpoint | None, fingerprint: str | None = None) -> TrainResult:
        run, accelerator = self.run, self.accelerator
        set_seed(run.seed)
        backbone = load_backbone(run.backbone, seed=run.seed)
        model = build_model(run, backbone, train_set.classes)
        optimizer = make_optimizer(model, run)
        state = TrainState(data_fingerprint=fingerprint)
        if resumed is not None:
            model.load_trainable_state_dict(resumed.tensors)
            state = TrainState.from_dict(resumed.state)
            if resumed.optimizer is not None:
                optimizer.load_state_dict(resumed.optimizer)
            self.say(f"[bold]resuming[/] {self.run_dir} after epoch {state.epoch} of {run.epochs}")
        class_cosine = model.max_class_cosine()
        if class_cosine > CLASS_COSINE_WARNING:
            self.say(
                f"[bold yellow]warning:[/] two classes have template embeddings with cosine "
                f"{class_cosine:.3f}; Eq. 7 can hardly separate them (check the templates and backbone)"
            )
        sampler = EpochShuffleSampler(len(train_set), run.seed)
        workers = worker_count(run.train.num_workers)
        pin = torch.cuda.is_available()  # uint8 pixels go to the GPU from pinned memory
        train_loader = DataLoader(
            train_set, batch_size=run.dataset.batch_size, sampler=sampler, num_workers=workers, drop_last=False, pin_memory=pin, collate_fn=collate_pairs
        )
        val_loader = DataLoader(val_set, batch_size=run.train.eval_batch_size, num_workers=workers, pin_memory=pin, collate_fn=collate_pairs)
        model, optimizer, train_loader, val_loader = accelerator.prepare(model, optimizer, train_loader, val_loader)
        if run.train.log_with:
            accelerator.init_trackers(TRACKER_PROJECT, config=tracker_config(run))
        self.model = model  # kept for evaluate_best
        core: PromptedCLIP = accelerator.unwrap_model(model)
        if resumed is None and core.class_bias is not None:
            state.class_bias_init = init = init_class_bias(core, train_set, run, accelerator)
            self.say(
                f"class bias initialised from {init['samples']} training pairs (share predicted positive = "
                f"training prior): range [{init['min']:.2f}, {init['max']:.2f}]"
            )
        for epoch in range(state.epoch + 1, run.epochs + 1):
            # Accelerate re-seeds the sampler from its own iteration counter on every pass: give it the epoch
            # too, or a resumed process (counter back at 0) would replay another order.
            train_loader.set_epoch(epoch)
            sampler.set_epoch(epoch)
            record, gates = self.train_one_epoch(model, core, optimizer, train_loader, epoch, state)
            if torch.cuda.is_available():
                torch.cuda.reset_peak_memory_stats()  # the validation pass's own peak, apart from training's
            val = evaluate_loader(model, val_loader, accelerator, run.dataset.task)
            record["val"] = {k: v for k, v in val.items() if not isinstance(v, list)}
            if torch.cuda.is_available():
                record["val_peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
            self.end_epoch(core, optimizer, state, record, val[self.metric], gates, train_set.classes)
        if accelerator.is_main_process:
            atomic_write_json(self.run_dir / RESULT_FILE, result_summary(run, core, state, self.metric, accelerator))
        if run.train.log_with:
            accelerator.end_training()  # flushes and closes the trackers
        return TrainResult(self.run_dir, state.best_epoch, state.best_metric, len(state.history), state.history, accelerator.is_main_process)

    def evaluate_best(self, split: str, tokenizer: ClipTokenizer, size: int) -> dict[str, Any]:
        """The best checkpoint on `split`, in the process that trained it, written where and as
        `mitp evaluate --checkpoint RUN --split SPLIT` writes it (the same numbers, without a second process
        loading the backbone and the data again)."""
        best = resolve_checkpoint(self.run_dir)
        trainable, saved_run, state = load_checkpoint(best)
        self.accelerator.unwrap_model(self.model).load_trainable_state_dict(trainable)
        state = {**state, "checkpoint": str(best)}
        metrics = evaluate_model(self.model, saved_run, tokenizer, size, state, self.accelerator, split)
        if self.accelerator.is_main_process:
            target = self.run_dir / f"metrics-{split}.json"
            write_metrics(metrics, target)
            self.say(f"{split}: {metrics_line(metrics)} -> {target}")
            if metrics.get("memory_ablation"):
                self.say(ablation_line(metrics["memory_ablation"]))
        return metrics

    def train_one_epoch(self, model, core: PromptedCLIP, optimizer, loader: DataLoader, epoch: int, state: TrainState):
        """One pass over the training data; returns the epoch's record and the gates it observed."""
        run, accelerator = self.run, self.accelerator
        steps = len(loader) if run.train.max_steps_per_epoch is None else min(len(loader), run.train.max_steps_per_epoch)
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        model.train()
        losses, samples = [], 0
        started = time.perf_counter()
        with gates_observed(core) as gates, progress_bar(self.console, enabled=self.progress) as bar:
            task = bar.add_task(f"epoch {epoch}/{run.epochs}", total=steps)
            for step, batch in enumerate(loader):
                if step >= steps:
                    break
                with accelerator.autocast():
                    logits = model(pixel_values(batch), batch["input_ids"], batch["attention_mask"])
                loss = classification_loss(run.dataset.task, logits, batch["labels"])
                accelerator.backward(loss)
                if run.train.grad_clip is not None:
                    accelerator.clip_grad_norm_(model.parameters(), run.train.grad_clip)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                losses.append(accelerator.reduce(loss.detach(), reduction="mean").item())  # over all processes
                if not math.isfinite(losses[-1]):  # the mean over processes: every process stops at the same step
                    raise TrainingError(
                        f"the loss became {losses[-1]} at epoch {epoch}, step {step + 1}: training stopped "
                        f"(lower the learning rate, now {run.lr:g}, or check the data)"
                    )
                samples += len(batch["labels"]) * accelerator.num_processes
                state.global_step += 1
                if run.train.log_with:
                    accelerator.log({"train/loss": losses[-1], "train/lr": optimizer.param_groups[0]["lr"]}, step=state.global_step)
                bar.update(task, advance=1, description=f"epoch {epoch}/{run.epochs} loss {np.mean(losses[-20:]):.4f}")
        seconds = time.perf_counter() - started
        record = {"epoch": epoch, "train_loss": float(np.mean(losses)), "train_seconds": seconds, "train_samples_per_s": samples / seconds}
        record.update(_peak_memory())  # the training steps' peak, before validation allocates its own
        if gates is not None:
            gates.reduce(lambda t: accelerator.reduce(t.to(accelerator.device), reduction="sum").cpu())
        return record, gates

    def end_epoch(self, core: PromptedCLIP, optimizer, state: TrainState, record: dict, score: float, gates, classes: list[str]) -> None:
        """Record the epoch, keep the best, checkpoint, and say how it went (and whether a gate is constant)."""
        if gates:
            record["gates"] = gates.summary()
            record["low_spread_gates"] = low_spread_gates(record["gates"])
            state.gate_means = gates.means()
        state.history.append(record)
        state.epoch = record["epoch"]
        if self.run.train.log_with:
            self.accelerator.log(epoch_scalars(record), step=state.global_step)
        improved = score > state.best_metric
        if improved:
            state.best_metric, state.best_epoch = score, record["epoch"]
        if self.accelerator.is_main_process:
            saved = {**state.to_dict(), "classes": classes}
            save_epoch(self.run_dir, self.run, core.trainable_state_dict(), optimizer.state_dict(), saved, improved)
            self.say(
                f"epoch {record['epoch']}: loss {record['train_loss']:.4f}  val {self.metric} {score:.4f}"
                f"  ({record['train_samples_per_s']:.1f} samples/s){'  [green]best[/]' if improved else ''}"
            )
            if record.get("gates"):
                self.say(gate_line(record["gates"]))
            if record.get("low_spread_gates"):
                self.say(
                    f"[bold yellow]warning:[/] gates {', '.join(record['low_spread_gates'])} vary by less than "
                    f"{GATE_SPREAD_FLOOR} over samples: they act as constants (docs/readings.md)"
                )
        self.accelerator.wait_for_everyone()


LOGS_DIR = "logs"  # <run>/logs/<TRACKER_PROJECT>: the trackers' files (TensorBoard event files)
TRACKER_PROJECT = "mitp"


def epoch_scalars(record: dict[str, Any]) -> dict[str, float]:
    """An epoch's record as tracker scalars: validation metrics, loss, throughput, memory, gate statistics."""
    scalars = {f"val/{k}": float(v) for k, v in record.get("val", {}).items() if isinstance(v, int | float)}
    for key in ("train_loss", "train_samples_per_s", "train_seconds", "peak_memory_gib", "val_peak_memory_gib"):
        if isinstance(record.get(key), int | float):
            scalars[f"epoch/{key}"] = float(record[key])
    for layer, stats in (record.get("gates") or {}).items():
        scalars.update({f"gates/{layer}/{name}": float(value) for name, value in stats.items() if isinstance(value, int | float)})
    return scalars


def tracker_config(run: RunConfig) -> dict[str, Any]:
    """The run's config flattened to the scalars and strings trackers store as hyper-parameters."""
    flat: dict[str, Any] = {}

    def walk(value: Any, prefix: str) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                walk(item, f"{prefix}{key}.")
        else:
            key = prefix.rstrip(".")
            flat[key] = value if isinstance(value, int | float | str | bool) else str(value)

    walk(run.to_dict(), "")
    return flat


def gate_line(summary: dict[str, dict[str, float]]) -> str:
    """One log line: per interaction layer and modality, mean ± per-sample spread of z and r, zero maps."""
    parts = [
        f"{where} z {row['z_mean']:.3f}±{row['z_spread']:.3f} r {row['r_mean']:.3f}±{row['r_spread']:.3f}"
        f" zero maps {100 * row['zero_self_maps']:.0f}%/{100 * row['zero_cross_maps']:.0f}%"
        for where, row in summary.items()
    ]
    return "  gates (layer.modality): " + "; ".join(parts)


def make_optimizer(model: PromptedCLIP, run: RunConfig) -> torch.optim.Optimizer:
    """Adam over the trainable parameters; the multi-label class bias gets its own learning rate."""
    params = model.trainable_parameters()
    groups = [{"params": [p for name, p in params.items() if name != "class_bias"], "lr": run.lr}]
    if "class_bias" in params:
        groups.append({"params": [params["class_bias"]], "lr": run.train.class_bias_lr})
    return torch.optim.Adam(groups, lr=run.lr, weight_decay=run.train.weight_decay)


BIAS_INIT_SAMPLES = 1024  # training pairs whose initial logits set the multi-label class bias


@torch.no_grad()
def init_class_bias(model: PromptedCLIP, dataset: PairDataset, run: RunConfig, accelerator: Accelerator) -> dict[str, Any]:
    """Start the multi-label bias where the data are (docs/decisions.md §7). At CLIP's logit scale of 100 and
    cosines of 0.15-0.35 a zero bias predicts every label positive, and Adam at the prompts' learning rate
    would need the whole training to move it. The bias of class k is set so that, on a seeded sample of
    training pairs, the share predicted positive equals the class's training prior pi_k: minus the
    (1 - pi_k) quantile of the initial scaled cosines. (The prior log-odds minus their mean, the rule's
    small-spread form, predicted 50% positive for a 25% prior where the initial cosines spread over
    tens of logits.) Every process computes the same sample, so no communication is needed."""
    labels = dataset.labels.numpy()  # (N, K) multi-hot
    prior = labels.mean(axis=0)  # (K,)
    order = np.random.default_rng(run.seed).permutation(len(dataset))[:BIAS_INIT_SAMPLES]
    loader = DataLoader(Subset(dataset, np.sort(order).tolist()), batch_size=run.train.eval_batch_size, num_workers=0, collate_fn=collate_pairs)
    model.class_bias.zero_()
    was_training = model.training
    model.eval()
    scaled = []
    for batch in loader:
        batch = {k: v.to(accelerator.device) for k, v in batch.items()}
        with accelerator.autocast():
            scaled.append(model(pixel_values(batch), batch["input_ids"], batch["attention_mask"]).float().cpu())  # (B, K)
    model.train(was_training)
    scaled_cosines = torch.cat(scaled).double().numpy()  # (n, K)
    bias = np.array([-np.quantile(scaled_cosines[:, k], 1 - prior[k]) for k in range(len(prior))])
    model.class_bias.copy_(torch.from_numpy(bias).float())
    return {
        "samples": len(scaled_cosines), "min": float(bias.min()), "max": float(bias.max()),
        "mean_scaled_cosine": float(scaled_cosines.mean()), "rule": "share predicted positive = training prior",
    }


def _peak_memory() -> dict[str, Any]:
    """Peak memory of this epoch's process: GPU memory allocated by torch, or the CPU process's max RSS."""
    if torch.cuda.is_available():
        return {"peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30, "peak_memory_kind": "cuda max allocated"}
    import resource

    kind = "cpu max RSS" if _runs_in_process <= 1 else f"cpu max RSS of a process that trained {_runs_in_process} runs"
    return {"peak_memory_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, "peak_memory_kind": kind}


def result_summary(run: RunConfig, model: PromptedCLIP, state: TrainState, metric_name: str, accelerator: Accelerator) -> dict[str, Any]:
    """What the report needs of a finished run, written last (its presence means the run is done)."""
    history = state.history
    best = next((h for h in history if h["epoch"] == state.best_epoch), {})
    return {
        "dataset": run.dataset_name,
        "setting": run.setting_name,
        "variant": run.model.variant,
        "head": run.model.effective_head,
        "reading": run.model.reading(),
        "layers": list(run.model.layers),
        "similarity": run.model.similarity,
        "fraction": run.train.fraction,
        "seed": run.seed,
        "backbone": run.backbone,
        "metric": metric_name,
        "data_fingerprint": state.data_fingerprint,
        "best_epoch": state.best_epoch,
        "best_val_metric": state.best_metric,
        "epochs": len(history),
        "train_seconds": sum(h["train_seconds"] for h in history),
        "peak_memory_gib": max((h.get("peak_memory_gib", float("nan")) for h in history), default=float("nan")),
        "peak_memory_kind": history[-1].get("peak_memory_kind", "") if history else "",
        "trainable_params": model.count_trainable(),
        "backbone_params": model.count_backbone(),
        "device": str(accelerator.device),
        "processes": accelerator.num_processes,
        "class_embedding_max_cosine": model.max_class_cosine(),
        "gates": best.get("gates"),  # the best epoch's gate statistics (memory hub runs)
        "low_spread_gates": best.get("low_spread_gates"),
        "environment": environment_record(run, model.clip, str(accelerator.mixed_precision), state.data_fingerprint),
    }
