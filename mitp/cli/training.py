"""Training, evaluating and exporting runs: train, train-runs, evaluate, export."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .common import (
    TRAINING_LIBRARIES,
    BackboneOption,
    ConfigOption,
    DatasetOption,
    _claim_gpu_slot,
    _config_path,
    _fail,
    _require,
    _resolve,
    app,
    console,
)

EvaluateOption = Annotated[
    list[str] | None,
    typer.Option("--evaluate", help="Then evaluate the best checkpoint on this split (repeatable): OUT/metrics-<split>.json, as mitp evaluate writes it."),
]


def _evaluation_splits(evaluate: list[str] | None) -> list[str]:
    """The splits of --evaluate, each once, or a one-line refusal of one that is not a split."""
    from ..data.prepare import SPLITS

    splits = list(dict.fromkeys(evaluate or []))
    for split in splits:
        if split not in SPLITS:
            _fail(f"--evaluate {split}: name a split, one of {', '.join(SPLITS)}")
    return splits


@app.command()
def train(
    out: Annotated[Path, typer.Option("--out", "-o", help="Run directory (checkpoints, history); resumed if it exists.")],
    config: ConfigOption = None,
    dataset: DatasetOption = "food101",
    setting: Annotated[str, typer.Option("--setting", "-s")] = "mitp",
    backbone: BackboneOption = None,
    epochs: Annotated[int | None, typer.Option(help="Override train.epochs.")] = None,
    lr: Annotated[float | None, typer.Option(help="Override the learning rate.")] = None,
    max_steps: Annotated[int | None, typer.Option("--max-steps", help="Cap on steps per epoch.")] = None,
    fraction: Annotated[float | None, typer.Option(help="Share of the training split to keep (stratified, seeded).")] = None,
    num_workers: Annotated[int | None, typer.Option("--num-workers")] = None,
    precision: Annotated[str | None, typer.Option(help="auto | bf16 | fp32")] = None,
    seed: Annotated[int | None, typer.Option(help="Override the config's seed.")] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
    evaluate: EvaluateOption = None,
) -> None:
    """Train one (data set, setting) run; resumes from the last finished epoch after a kill."""
    _require(*TRAINING_LIBRARIES)
    splits = _evaluation_splits(evaluate)
    _claim_gpu_slot()
    run = _resolve(
        config, dataset, setting, backbone, seed, lr=lr,
        epochs=epochs, max_steps_per_epoch=max_steps, fraction=fraction, num_workers=num_workers, precision=precision,
    )
    from ..train.evaluate import check_metrics_target
    from ..train.runs import train_run

    for split in splits:  # before any work: a file in the way is found now, not after training
        check_metrics_target(out / f"metrics-{split}.json", f"--evaluate {split}: the metrics file", "move it away, or pick another --out")
    result = train_run(run, out, console=console, progress=progress, evaluate=splits)
    if result.main_process:
        console.print(f"[bold green]done[/]: best epoch {result.best_epoch} ({result.best_metric:.4f}) in {out}")


@app.command("train-runs")
def train_runs_command(
    plan: Annotated[Path, typer.Argument(help="Plan file (YAML): runs, a list of {out, dataset, setting, seed, fraction}.", show_default=False)],
    config: ConfigOption = None,
    backbone: BackboneOption = None,
    epochs: Annotated[int | None, typer.Option(help="Override train.epochs for every run.")] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
    evaluate: EvaluateOption = None,
) -> None:
    """Train the runs a plan lists, one after another in this process: each exactly as `mitp train` makes it,
    with the start-up (torch, transformers) paid once. Every run is checked before the first one starts."""
    _require(*TRAINING_LIBRARIES)
    from ..config import ConfigError, load_config, resolve_run
    from ..train.plan import load_plan

    splits = _evaluation_splits(evaluate)
    planned = load_plan(plan).runs
    project = load_config(_config_path(config))
    runs = []
    for number, entry in enumerate(planned, 1):
        try:
            run = resolve_run(project, entry.dataset, entry.setting, backbone=backbone, seed=entry.seed, epochs=epochs, fraction=entry.fraction)
        except ConfigError as err:
            _fail(f"{plan}, run {number} ({entry.out}): {err}")
        runs.append((run, Path(entry.out)))
    _claim_gpu_slot()
    from ..train.evaluate import check_metrics_target
    from ..train.runs import train_runs

    for _, out in runs:
        for split in splits:
            check_metrics_target(out / f"metrics-{split}.json", f"--evaluate {split}: the metrics file", "move it away, or take the run out of the plan")
    results = train_runs(runs, console=console, progress=progress, evaluate=splits)
    if results and results[0].main_process:
        console.print(f"[bold green]done[/]: {len(results)} runs trained ({', '.join(str(out) for _, out in runs)})", soft_wrap=True)


@app.command()
def evaluate(
    checkpoint: Annotated[Path, typer.Option("--checkpoint", help="Run directory (uses best/) or a checkpoint directory.")],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Where to write metrics.json.")] = None,
    split: Annotated[str, typer.Option(help="train | val | test")] = "test",
    batch_size: Annotated[int | None, typer.Option("--batch-size")] = None,
    num_workers: Annotated[int | None, typer.Option("--num-workers")] = None,
) -> None:
    """Evaluate a checkpoint: accuracy, or F1-micro/-macro for multi-label, written to metrics.json."""
    _require(*TRAINING_LIBRARIES)
    _claim_gpu_slot()
    target = out or Path(checkpoint) / f"metrics-{split}.json"
    from ..train.evaluate import ablation_line, check_metrics_target, evaluate_checkpoint, metrics_line, write_metrics

    check_metrics_target(target)
    metrics = evaluate_checkpoint(checkpoint, split, batch_size, num_workers)
    write_metrics(metrics, target)
    console.print(f"{metrics['dataset']}/{metrics['setting']} {split}: {metrics_line(metrics)} -> {target}", soft_wrap=True)
    if metrics.get("memory_ablation"):
        console.print(ablation_line(metrics["memory_ablation"]), soft_wrap=True)


@app.command("export")
def export_command(
    checkpoint: Annotated[Path, typer.Option("--checkpoint", help="Run directory (uses best/) or a checkpoint directory.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Bundle folder to write (replaced whole when verified).")],
    fp16: Annotated[bool, typer.Option("--fp16", help="Also write model.fp16.onnx for GPUs (checked by top-1 agreement).")] = False,
    int8: Annotated[bool, typer.Option("--int8", help="Also write model.int8.onnx for CPUs (checked by top-1 agreement).")] = False,
    tolerance: Annotated[float, typer.Option(help="Largest allowed |onnxruntime - PyTorch| on logits.")] = 1e-4,
) -> None:
    """Export a trained model to an ONNX bundle, verified against PyTorch before it is written."""
    _require(*TRAINING_LIBRARIES, "onnxscript", "onnxruntime")
    from ..ship.export import ExportError, export_bundle

    try:
        report = export_bundle(checkpoint, out, fp16=fp16, int8=int8, tolerance=tolerance)
    except ExportError as err:
        _fail(f"export not written: {err}")
    shown = f"max abs diff {report['fp32']['max_abs_diff']:.2e} at batch 1 and 3"
    for variant in ("fp16", "int8"):
        if variant in report:
            check = report[variant]
            shown += f"; {variant} top-1 agreement {check['top1_agreement']:.3f}"
            if "label_decision_agreement" in check:
                shown += f", label decisions {check['label_decision_agreement']:.3f}"
    console.print(f"[bold green]bundle[/] {out}: {shown} ({report['verify_inputs']})")
