"""Training and evaluation engine: one code path on CPU, one GPU or many (Accelerate).

bf16 autocast on GPU and fp32 on CPU; only the trainable parameters reach the optimizer; per-epoch
validation picks the best checkpoint; every epoch is checkpointed atomically, and a killed run resumes
from its last finished epoch with the same data order (the sampler is seeded per epoch).
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import DistributedDataParallelKwargs, set_seed
from rich.console import Console
from rich.markup import escape
from torch.utils.data import DataLoader, Sampler, Subset

from .atomic import atomic_write_json
from .backbone import image_size_of, load_backbone, load_tokenizer
from .config import ConfigError, RunConfig
from .data import PairDataset, build_split, pixel_values
from .factory import build_model
from .metrics import PRIMARY_METRIC, classification_metrics
from .model import MITPModel, classification_loss
from .progress import progress_bar
from .rundir import RESULT_FILE, locked_run_folder, repair, resume_point, save_epoch

CLASS_COSINE_WARNING = 0.98


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
class TrainResult:
    run_dir: Path
    best_epoch: int
    best_metric: float
    epochs_run: int
    history: list[dict[str, Any]]
    main_process: bool = True  # False in the other processes of a distributed run, which stay quiet


def worker_count(requested: int) -> int:
    """DataLoader workers: as configured, but no more than this machine has cores."""
    return min(requested, os.cpu_count() or 1)


def make_accelerator(precision: str) -> Accelerator:
    cuda = torch.cuda.is_available()
    if precision == "bf16" and not cuda:
        raise ConfigError("train.precision: bf16 needs a GPU here; use auto or fp32 on CPU")
    mixed = "bf16" if (precision == "bf16" or (precision == "auto" and cuda)) else "no"
    return Accelerator(
        mixed_precision=mixed,
        cpu=not cuda,
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
    )


def train_run(run: RunConfig, run_dir: Path, console: Console | None = None, progress: bool = True) -> TrainResult:
    """Train one (data set, setting) run into `run_dir`, resuming from its last checkpoint if any."""
    console = console or Console(stderr=True)
    run_dir = Path(run_dir)
    accelerator = make_accelerator(run.train.precision)
    main = accelerator.is_main_process
    tokenizer = load_tokenizer(run.backbone)  # before the weights: bad data must not wait for them
    size = image_size_of(run.backbone)
    train_set = build_split(run, "train", tokenizer, size)
    val_set = build_split(run, "val", tokenizer, size)
    val_set.check_images()  # a broken validation image is found now, not after the first epoch
    with locked_run_folder(run_dir, main):
        warn = (lambda message: console.print(f"[bold yellow]warning:[/] {escape(message)}", soft_wrap=True)) if main else (lambda message: None)
        resumed = resume_point(run_dir, run, warn)
        if main:
            repair(run_dir, resumed[1] if resumed else None, run.epochs)
        accelerator.wait_for_everyone()
        return _train(run, run_dir, accelerator, console, progress, train_set, val_set, resumed)


def _train(run, run_dir, accelerator, console, progress, train_set, val_set, resumed) -> TrainResult:
    set_seed(run.seed)
    backbone = load_backbone(run.backbone, seed=run.seed)
    model = build_model(run, backbone, train_set.classes)
    optimizer = make_optimizer(model, run)
    state = {"epoch": 0, "global_step": 0, "best_epoch": 0, "best_metric": -math.inf, "history": []}
    if resumed is not None:
        trainable, state, optimizer_state = resumed
        model.load_trainable_state_dict(trainable)
        if optimizer_state is not None:
            optimizer.load_state_dict(optimizer_state)
        if accelerator.is_main_process:
            console.print(f"[bold]resuming[/] {run_dir} after epoch {state['epoch']} of {run.epochs}")

    class_cosine = model.max_class_cosine()
    if class_cosine > CLASS_COSINE_WARNING and accelerator.is_main_process:
        console.print(
            f"[bold yellow]warning:[/] two classes have template embeddings with cosine "
            f"{class_cosine:.3f}; Eq. 7 can hardly separate them (check the templates and backbone)"
        )
    sampler = EpochShuffleSampler(len(train_set), run.seed)
    workers = worker_count(run.train.num_workers)
    pin = torch.cuda.is_available()  # uint8 pixels go to the GPU from pinned memory
    train_loader = DataLoader(train_set, batch_size=run.dataset.batch_size, sampler=sampler, num_workers=workers, drop_last=False, pin_memory=pin)
    val_loader = DataLoader(val_set, batch_size=run.train.eval_batch_size, num_workers=workers, pin_memory=pin)
    model, optimizer, train_loader, val_loader = accelerator.prepare(model, optimizer, train_loader, val_loader)
    core: MITPModel = accelerator.unwrap_model(model)
    if resumed is None and hasattr(core, "class_bias"):
        state["class_bias_init"] = init_class_bias(core, train_set, run, accelerator)
        if accelerator.is_main_process:
            init = state["class_bias_init"]
            console.print(
                f"class bias initialised from {init['samples']} training pairs (share predicted positive = "
                f"training prior): range [{init['min']:.2f}, {init['max']:.2f}]"
            )
    if hasattr(core, "hub") and hasattr(core.hub, "record_stats"):
        core.hub.record_stats = True

    metric_name = PRIMARY_METRIC[run.dataset.task]
    steps_per_epoch = len(train_loader) if run.train.max_steps_per_epoch is None else min(len(train_loader), run.train.max_steps_per_epoch)
    for epoch in range(state["epoch"] + 1, run.epochs + 1):
        # Accelerate re-seeds the sampler from its own iteration counter on every pass: give it the epoch
        # too, or a resumed process (counter back at 0) would replay another order.
        train_loader.set_epoch(epoch)
        sampler.set_epoch(epoch)
        started = time.perf_counter()
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        model.train()
        losses, samples, hub_stats = [], 0, {}
        with progress_bar(console, enabled=progress and accelerator.is_main_process) as bar:
            task = bar.add_task(f"epoch {epoch}/{run.epochs}", total=steps_per_epoch)
            for step, batch in enumerate(train_loader):
                if step >= steps_per_epoch:
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
                samples += len(batch["labels"]) * accelerator.num_processes
                state["global_step"] += 1
                _accumulate_hub_stats(core, hub_stats)
                bar.update(task, advance=1, description=f"epoch {epoch}/{run.epochs} loss {np.mean(losses[-20:]):.4f}")
        train_seconds = time.perf_counter() - started

        val = evaluate_loader(model, val_loader, accelerator, run.dataset.task)
        record = {
            "epoch": epoch,
            "train_loss": float(np.mean(losses)),
            "train_seconds": train_seconds,
            "train_samples_per_s": samples / train_seconds,
            "val": {k: v for k, v in val.items() if not isinstance(v, list)},
            "hub": {k: float(np.mean(v)) for k, v in hub_stats.items()},
        }
        record.update(_peak_memory())
        state["history"].append(record)
        state["epoch"] = epoch
        improved = val[metric_name] > state["best_metric"]
        if improved:
            state["best_metric"], state["best_epoch"] = val[metric_name], epoch
        if accelerator.is_main_process:
            saved = {**state, "classes": train_set.classes}
            save_epoch(run_dir, run, core.trainable_state_dict(), optimizer.state_dict(), saved, improved)
            console.print(
                f"epoch {epoch}: loss {record['train_loss']:.4f}  val {metric_name} {val[metric_name]:.4f}"
                f"  ({record['train_samples_per_s']:.1f} samples/s){'  [green]best[/]' if improved else ''}"
            )
        accelerator.wait_for_everyone()

    if accelerator.is_main_process:
        atomic_write_json(run_dir / RESULT_FILE, _result_summary(run, core, state, metric_name, accelerator))
    history = state["history"]
    return TrainResult(run_dir, state["best_epoch"], state["best_metric"], len(history), history, accelerator.is_main_process)


def make_optimizer(model: MITPModel, run: RunConfig) -> torch.optim.Optimizer:
    """Adam over the trainable parameters; the multi-label class bias gets its own learning rate."""
    params = model.trainable_parameters()
    groups = [{"params": [p for name, p in params.items() if name != "class_bias"], "lr": run.lr}]
    if "class_bias" in params:
        groups.append({"params": [params["class_bias"]], "lr": run.train.class_bias_lr})
    return torch.optim.Adam(groups, lr=run.lr, weight_decay=run.train.weight_decay)


BIAS_INIT_SAMPLES = 1024  # training pairs whose initial logits set the multi-label class bias


@torch.no_grad()
def init_class_bias(model: MITPModel, dataset: PairDataset, run: RunConfig, accelerator: Accelerator) -> dict[str, Any]:
    """Start the multi-label bias where the data are (DESIGN 3.7). At CLIP's logit scale of 100 and
    cosines of 0.15-0.35 a zero bias predicts every label positive, and Adam at the prompts' learning rate
    would need the whole training to move it. The bias of class k is set so that, on a seeded sample of
    training pairs, the share predicted positive equals the class's training prior pi_k: minus the
    (1 - pi_k) quantile of the initial scaled cosines. (The prior log-odds minus their mean, the rule's
    small-spread form, predicted 50% positive for a 25% prior where the initial cosines spread over
    tens of logits.) Every process computes the same sample, so no communication is needed."""
    labels = dataset.labels.numpy()  # (N, K) multi-hot
    prior = labels.mean(axis=0)  # (K,)
    order = np.random.default_rng(run.seed).permutation(len(dataset))[:BIAS_INIT_SAMPLES]
    loader = DataLoader(Subset(dataset, np.sort(order).tolist()), batch_size=run.train.eval_batch_size, num_workers=0)
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

    return {"peak_memory_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, "peak_memory_kind": "cpu max RSS"}


def _result_summary(run: RunConfig, model: MITPModel, state: dict, metric_name: str, accelerator: Accelerator) -> dict[str, Any]:
    """What the report needs of a finished run, written last (its presence means the run is done)."""
    history = state["history"]
    return {
        "dataset": run.dataset_name,
        "setting": run.setting_name,
        "variant": run.model.variant,
        "head": "linear" if run.model.variant == "linear-probe" else run.model.head,
        "layers": list(run.model.layers),
        "similarity": run.model.similarity,
        "fraction": run.train.fraction,
        "seed": run.seed,
        "backbone": run.backbone,
        "metric": metric_name,
        "best_epoch": state["best_epoch"],
        "best_val_metric": state["best_metric"],
        "epochs": len(history),
        "train_seconds": sum(h["train_seconds"] for h in history),
        "peak_memory_gib": max((h.get("peak_memory_gib", float("nan")) for h in history), default=float("nan")),
        "peak_memory_kind": history[-1].get("peak_memory_kind", "") if history else "",
        "trainable_params": model.count_trainable(),
        "backbone_params": model.count_backbone(),
        "device": str(accelerator.device),
        "processes": accelerator.num_processes,
        "class_embedding_max_cosine": model.max_class_cosine(),
    }


@torch.no_grad()
def evaluate_loader(model, loader: DataLoader, accelerator: Accelerator, task: str) -> dict[str, Any]:
    """Metrics over a whole loader; predictions are gathered from every process."""
    model.eval()
    all_logits, all_labels = [], []
    for batch in loader:
        with accelerator.autocast():
            logits = model(pixel_values(batch), batch["input_ids"], batch["attention_mask"])
        logits, labels = accelerator.gather_for_metrics((logits.float(), batch["labels"]))
        all_logits.append(logits.cpu())
        all_labels.append(labels.cpu())
    return classification_metrics(task, torch.cat(all_logits).numpy(), torch.cat(all_labels).numpy())


def _accumulate_hub_stats(model: MITPModel, sink: dict[str, list[float]]) -> None:
    hub = getattr(model, "hub", None)
    for name, value in getattr(hub, "stats", {}).items():
        sink.setdefault(name, []).append(float(value))

