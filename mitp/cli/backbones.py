"""Backbones: mitp fetch-backbone and pretrain-standin (the demo's stand-in CLIP)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .common import (
    TRAINING_LIBRARIES,
    _fail,
    _require,
    app,
    console,
)


@app.command("fetch-backbone")
def fetch_backbone_command(
    name: Annotated[str, typer.Argument(help="Hugging Face CLIP name, e.g. openai/clip-vit-large-patch14.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder to save it in (weights, config, tokenizer.json).")],
) -> None:
    """Save a hub backbone into a local folder, once, for machines without internet (HF_HUB_OFFLINE=1)."""
    _require(*TRAINING_LIBRARIES)
    from ..model.backbone import fetch_backbone

    fetch_backbone(name, out)
    console.print(f"[bold green]backbone[/] {name} saved in {out}; pass --backbone {out} (works with HF_HUB_OFFLINE=1)")


@app.command("pretrain-standin")
def pretrain_standin(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the stand-in CLIP (save_pretrained + tokenizer.json).")],
    steps: Annotated[int, typer.Option(help="Contrastive training steps.")] = 500,
    batch_size: Annotated[int, typer.Option("--batch-size")] = 128,
    seed: Annotated[int, typer.Option()] = 0,
) -> None:
    """Pre-train the small stand-in CLIP of the offline twins on the CPU (a few minutes)."""
    _require(*TRAINING_LIBRARIES)
    if steps < 1 or batch_size < 2:
        _fail("--steps must be >= 1 and --batch-size >= 2")
    from ..model.standin import StandinConfig
    from ..model.standin import pretrain_standin as run_pretraining

    summary = run_pretraining(out, StandinConfig(steps=steps, batch_size=batch_size, seed=seed), log=console.print)
    console.print(f"[bold green]stand-in CLIP[/] in {out}: loss {summary['final_loss']:.3f} after {steps} steps, {summary['seconds']:.0f} s")
