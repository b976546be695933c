"""What the whole paper costs: FLOPs per training and evaluation sample of every run of config.yaml's
workflow (torch's FLOP counter on the real architecture, on the meta device: no weights, no memory, no
GPU), times the samples each run processes, at a stated model FLOP utilisation (MFU) of a GPU's dense
bf16 peak. Measured step times (benchmarks/train_efficiency.py --json-out on a GPU) can be given to
replace the MFU assumption per setting.

    python benchmarks/cost_model.py --mfu 0.4 --peak-tflops 989
    python benchmarks/cost_model.py --measured gpu_train_efficiency.json
    python benchmarks/cost_model.py --readings pairwise,per-class     # price the readings comparison too

Split sizes are the upstream ones (Food101: 90% of the 67,988 training pairs train, 10% validate);
preparation may drop a few pairs. Each epoch trains on the training split and validates on the val split;
each run ends with one pass over the test split.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

SPLITS = {  # train, val, test pairs per data set
    "food101": (61_189, 6_799, 22_716),
    "mmimdb": (15_552, 2_608, 7_799),
    "snlive": (529_527, 17_858, 17_901),
}


CLASS_PROMPT_TOKENS = 12  # a class prompt such as "a photo of apple pie, a type of food." (the count hardly matters: every pass is 77 tokens)


def flops_per_sample(run, arch, num_classes: int) -> tuple[float, float]:
    """(training, evaluation) FLOPs of one sample: forward + backward of a training step, and forward alone."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import CLIPModel

    from mitp.model.build import prompted_clip

    batch = 2
    with torch.device("meta"):
        clip = CLIPModel(arch).requires_grad_(False)
        model = prompted_clip(clip, run.model, num_classes, arch.text_config.eos_token_id).train()
        model.class_embeddings = torch.zeros(num_classes, arch.projection_dim)
        model.class_prompt_ids = torch.zeros(num_classes, CLASS_PROMPT_TOKENS, dtype=torch.long)  # per-class head
        model.class_prompt_lengths = torch.full((num_classes,), CLASS_PROMPT_TOKENS)
        pixels = torch.zeros(batch, 3, arch.vision_config.image_size, arch.vision_config.image_size)
        ids, mask = torch.zeros(batch, 77, dtype=torch.long), torch.ones(batch, 77, dtype=torch.long)
    counts = []
    for backward in (True, False):
        with FlopCounterMode(display=False) as counter:
            logits = model(pixels, ids, mask)
            if backward:
                logits.sum().backward()
        counts.append(counter.get_total_flops() / batch)
    return counts[0], counts[1]


def workflow_runs(raw: dict, readings: list[str] | None = None) -> list[tuple[str, str, float]]:
    """(data set, setting, training fraction) of every training run the workflow block asks for, once per
    seed (the readings comparison with workflow.readings_seeds); `readings` replaces workflow.readings."""
    from mitp.config import expand_grid, parse_config, reading_setting, run_seeds

    project = parse_config(raw)
    workflow = project.workflow
    if workflow is None:
        raise SystemExit("the config has no workflow block: nothing to price")
    grid = list(expand_grid(project.grid))
    readings = workflow.readings if readings is None else readings
    runs = []
    for dataset in workflow.datasets:
        settings = list(workflow.settings) + [reading_setting(r) for r in readings]
        settings += [s for s in grid if s not in settings] if dataset in workflow.grid_datasets else []
        runs += [(dataset, setting, 1.0) for setting in settings for _ in run_seeds(setting, workflow, readings, grid)]
        if dataset in workflow.fractions.datasets:
            runs += [(dataset, "mitp", p / 100) for p in workflow.fractions.percents for _ in workflow.seeds]
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="config.yaml")
    parser.add_argument("--mfu", type=float, default=0.4, help="assumed model FLOP utilisation")
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="dense bf16 peak (H100 and H200: 989)")
    parser.add_argument("--measured", default=None, help="JSON of train_efficiency.py --json-out from a GPU")
    parser.add_argument("--readings", default=None, help="comma-separated readings to price instead of workflow.readings (e.g. pairwise,per-class)")
    args = parser.parse_args()

    from mitp.config import load_config, read_yaml, resolve_run
    from mitp.model.backbone import architecture_config

    raw = read_yaml(Path(args.config).read_text())
    project = load_config(args.config)
    arch = architecture_config(project.backbone)
    arch._attn_implementation = "sdpa"
    epochs = project.train.epochs
    measured = {}
    if args.measured:
        measured = {row["mitp"]["setting"]: row["mitp"] for row in json.loads(Path(args.measured).read_text())["rows"]}

    flops: dict[tuple[str, str], tuple[float, float]] = {}
    totals = defaultdict(float)
    rows = []
    readings = None if args.readings is None else [r for r in args.readings.split(",") if r]
    for dataset, setting, fraction in workflow_runs(raw, readings):
        run = resolve_run(project, dataset, setting)
        if (dataset, setting) not in flops:
            flops[dataset, setting] = flops_per_sample(run, arch, run.dataset.num_classes or 2)
        train_flops, eval_flops = flops[dataset, setting]
        n_train, n_val, n_test = SPLITS[dataset]
        run_epochs = run.dataset.epochs or epochs
        trained = round(n_train * fraction) * run_epochs
        evaluated = n_val * run_epochs + n_test
        seconds = (trained * train_flops + evaluated * eval_flops) / (args.mfu * args.peak_tflops * 1e12)
        step = measured.get(setting)
        if step and step.get("batch") == run.dataset.batch_size:  # a measured rate for this setting and batch
            seconds = trained / step["samples_per_s"] + evaluated * eval_flops / (args.mfu * args.peak_tflops * 1e12)
        totals[dataset] += seconds
        rows.append((dataset, setting, fraction, train_flops, eval_flops, trained, evaluated, seconds, step))

    print(f"# mitp cost model: {project.backbone} ({arch.vision_config.num_hidden_layers}+{arch.text_config.num_hidden_layers} blocks), "
          f"{len(rows)} training runs of {args.config}, {epochs} epochs")
    print(f"# FLOPs: torch.utils.flop_counter on the meta device; time at {args.mfu:.0%} MFU of {args.peak_tflops:g} TFLOP/s"
          + (f"; measured rates from {args.measured}" if args.measured else "; no measured GPU step times") + "\n")
    print("| data set | setting | train fraction | GFLOP / train sample | GFLOP / eval sample | samples trained | samples evaluated | measured step | GPU-hours |")
    print("|---|---|---|---|---|---|---|---|---|")
    for dataset, setting, fraction, train_flops, eval_flops, trained, evaluated, seconds, step in rows:
        shown = f"{step['step_s'] * 1e3:.0f} ms @ {step['batch']}" if step else "-"
        print(f"| {dataset} | {setting} | {fraction:g} | {train_flops / 1e9:.1f} | {eval_flops / 1e9:.1f} | {trained:,} | {evaluated:,} | {shown} | {seconds / 3600:.2f} |")
    print()
    for dataset, seconds in totals.items():
        print(f"{dataset}: {seconds / 3600:.1f} GPU-hours")
    print(f"whole grid: {sum(totals.values()) / 3600:.1f} GPU-hours at {args.mfu:.0%} MFU")


if __name__ == "__main__":
    sys.exit(main())
