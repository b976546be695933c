"""Training efficiency of MITP against a naive path, measured in the same run on this machine.

The naive path is what a straightforward implementation would do: autograd through the whole backbone
(backbone weights left with requires_grad, so their gradients are computed too), every text block run,
fp32. The efficient path is mitp's default: no autograd below the first interaction layer, no weight
gradients for the frozen backbone, bf16 autocast on GPU (and, under the image head only, text blocks
after the last interaction layer skipped: the fused head needs them).

Each (path, setting) is measured in a fresh subprocess so that peak memory is its own:
    python benchmarks/train_efficiency.py --backbone preset:vit-b-16 --steps 5
Prints a Markdown table with samples/s, peak memory and the ratios efficient / naive.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time

PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}  # dense bf16 tensor-core peaks


def make_naive(model) -> None:
    """The straightforward path the model's shortcuts are measured against: autograd through every
    backbone weight and block (also below the first prompted layer), and the whole text tower run even
    where the head does not read it (its result joins the logits times zero)."""
    import contextlib

    from mitp.model.heads import CAPTION, NO_TEXT, ImageHead

    class RunTextAnyway(ImageHead):
        text_input = CAPTION

        def logits(self, image, text, classes, scale):
            return super().logits(image, None, classes, scale) + 0.0 * text.sum()

    model.clip.requires_grad_(True)
    model._prefix_context = contextlib.nullcontext
    if model.head.text_input == NO_TEXT:
        model.head = RunTextAnyway()


def measure(backbone: str, dataset: str, setting: str, naive: bool, steps: int, batch: int | None) -> dict:
    import torch

    from mitp.config import load_config, resolve_run
    from mitp.model.backbone import crop_size, load_backbone
    from mitp.model.base import classification_loss
    from mitp.train.factory import build_model

    run = resolve_run(load_config("config.yaml"), dataset, setting)
    bb = load_backbone(backbone)
    classes = [f"class {i}" for i in range(run.dataset.num_classes or 8)]
    model = build_model(run, bb, classes)
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    model.to(device)
    if naive:
        make_naive(model)
    optimizer = torch.optim.Adam(model.trainable_parameters().values(), lr=2e-4)
    batch = batch or run.dataset.batch_size
    size = crop_size(bb.clip.config)
    pixels = torch.randn(batch, 3, size, size, device=device)
    ids, mask = bb.tokenizer(["a photo of a dish with some words in the caption"] * batch)
    ids, mask = torch.from_numpy(ids).to(device), torch.from_numpy(mask).to(device)
    labels = torch.randint(0, len(classes), (batch,), device=device)
    use_bf16 = cuda and not naive

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
            logits = model(pixels, ids, mask)
        loss = classification_loss(run.dataset.task, logits, labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        model.clip.zero_grad(set_to_none=True)

    model.train()
    baseline_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # GiB (ru_maxrss is KiB)
    seconds = seconds_per_call(step, steps, cuda)
    result = {
        "setting": setting,
        "path": "naive" if naive else "mitp",
        "batch": batch,
        "step_s": seconds,
        "samples_per_s": batch / seconds,
        "trainable_params": model.count_trainable(),
    }
    if cuda:
        result["peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
        flops = train_flops_per_sample(model, naive) * batch / seconds
        result["tflops"] = flops / 1e12
        name = torch.cuda.get_device_name()
        peak = next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)
        result["mfu"] = flops / (peak * 1e12) if peak and use_bf16 else None
    else:
        peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        result["peak_memory_gib"] = peak_rss
        result["step_memory_gib"] = peak_rss - baseline_rss
    if not naive:
        result.update(measure_eval(model, pixels, ids, mask, steps, use_bf16 or cuda))
    return result


def seconds_per_call(call, steps: int, cuda: bool) -> float:
    """Mean seconds of `call` over `steps` calls after one warm-up, the GPU synchronised around them and its
    peak memory counter reset after the warm-up (so the peak read afterwards is these calls')."""
    import torch

    call()  # warm-up
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(steps):
        call()
    if cuda:
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps


def measure_eval(model, pixels, ids, mask, steps: int, bf16: bool, batch: int = 64) -> dict:
    """Evaluation throughput at the trainer's eval batch (64): no grad, bf16 autocast on a GPU; its peak
    memory apart from training's (the epoch's peak used to include this pass)."""
    import torch

    model.eval()
    repeat = -(-batch // len(pixels))
    pixels, ids, mask = (t.repeat(repeat, *[1] * (t.dim() - 1))[:batch] for t in (pixels, ids, mask))
    cuda = pixels.is_cuda

    def forward():
        with torch.no_grad(), torch.autocast(pixels.device.type, dtype=torch.bfloat16, enabled=bf16):
            model(pixels, ids, mask)

    seconds = seconds_per_call(forward, steps, cuda)
    out = {"eval_batch": batch, "eval_samples_per_s": batch / seconds}
    if cuda:
        out["eval_peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
    return out


def train_flops_per_sample(model, naive: bool) -> float:
    """Matmul FLOPs of one training sample: forward on every block run, plus backward on the blocks
    autograd goes through (input gradients ~1x forward; weight gradients of trained or, naive, all weights).
    Under the fused head the text tower runs to its end, so its blocks after the last interaction layer
    are run and differentiated too; under the image head mitp skips them."""
    text, vision = model.clip.config.text_config, model.clip.config.vision_config
    length = model.prompt_length
    patches = (vision.image_size // vision.patch_size) ** 2 + 1

    def block(tokens: int, width: int, ff: int) -> float:
        return 2 * tokens * (4 * width * width + 2 * width * ff) + 4 * tokens * tokens * width

    text_block = block(77 + length, text.hidden_size, text.intermediate_size)
    vision_block = block(patches + length, vision.hidden_size, vision.intermediate_size)
    first = min(model.text_layer_ids[0], model.vision_layer_ids[0])
    last_text = text.num_hidden_layers - 1 if (naive or model.fused) else model.text_layer_ids[-1]
    forward = (last_text + 1) * text_block + vision.num_hidden_layers * vision_block
    if naive:
        return 3 * forward  # input and weight gradients everywhere
    backward = (last_text + 1 - first) * text_block + (vision.num_hidden_layers - first) * vision_block
    return forward + backward


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="preset:vit-b-16")
    parser.add_argument("--dataset", default="food101")
    parser.add_argument("--settings", default="mitp,mitp-small,prompts-only,p-clip")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--json-out", default=None)
    parser.add_argument("--_child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args._child:  # measure one (setting, path) in this fresh process
        setting, path = args._child.split(":")
        print(json.dumps(measure(args.backbone, args.dataset, setting, path == "naive", args.steps, args.batch)))
        return

    import torch

    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    print(f"# mitp training efficiency: {args.backbone} on {args.dataset}, {device}, torch {torch.__version__}\n")
    rows = []
    for setting in args.settings.split(","):
        pair = {}
        for path in ("mitp", "naive"):
            cmd = [sys.executable, __file__, "--backbone", args.backbone, "--dataset", args.dataset,
                   "--steps", str(args.steps), "--_child", f"{setting}:{path}"]
            if args.batch:
                cmd += ["--batch", str(args.batch)]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            pair[path] = json.loads(out.strip().splitlines()[-1])
        rows.append(pair)
    memory_key = "peak_memory_gib"
    print("| setting | trainable | batch | mitp samples/s | naive samples/s | speed-up | step time ratio | mitp peak GiB | naive peak GiB | peak ratio |"
          + (" step-memory ratio |" if "step_memory_gib" in rows[0]["mitp"] else " MFU |"))
    print("|---" * (11) + "|")
    for pair in rows:
        m, n = pair["mitp"], pair["naive"]
        extra = (f" {m['step_memory_gib'] / n['step_memory_gib']:.2f} |" if m.get("step_memory_gib") and n.get("step_memory_gib")
                 else f" {m['mfu'] * 100:.1f}% |" if m.get("mfu") else " - |")
        print(f"| {m['setting']} | {m['trainable_params']:,} | {m['batch']} | {m['samples_per_s']:.2f} | {n['samples_per_s']:.2f} | "
              f"{m['samples_per_s'] / n['samples_per_s']:.2f}x | {m['step_s'] / n['step_s']:.2f} | {m[memory_key]:.2f} | "
              f"{n[memory_key]:.2f} | {m[memory_key] / n[memory_key]:.2f} |" + extra)
    print("\n| setting | eval batch | eval samples/s (mitp path) | eval peak GiB |\n|---|---|---|---|")
    for pair in rows:
        m = pair["mitp"]
        peak = f"{m['eval_peak_memory_gib']:.2f}" if "eval_peak_memory_gib" in m else "-"
        print(f"| {m['setting']} | {m['eval_batch']} | {m['eval_samples_per_s']:.2f} | {peak} |")
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump({"device": device, "backbone": args.backbone, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
