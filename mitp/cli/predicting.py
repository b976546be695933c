"""Predicting with a bundle: mitp predict, one pair or a batch file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from .common import (
    _fail,
    _model_folder,
    app,
    console,
    stdout,
)


@app.command()
def predict(
    image: Annotated[Path | None, typer.Argument(help="Image file.", show_default=False)] = None,
    text: Annotated[str | None, typer.Argument(help="The caption that goes with the image.", show_default=False)] = None,
    model: Annotated[Path | None, typer.Option("--model", "-m", envvar="MITP_MODEL", help="Bundle or release folder, or a Hugging Face repository ORG/NAME of a release.")] = None,
    top_k: Annotated[int | None, typer.Option("--top-k", "-k", min=1, help="Only the k best labels (default: every label in --json and --batch, the best 5 in the table).", show_default=False)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object on stdout.")] = False,
    provider: Annotated[str, typer.Option(help="auto | cuda | cpu")] = "auto",
    variant: Annotated[str, typer.Option(help="fp32 | fp16 (GPUs) | int8 (CPUs): which of the bundle's models runs.")] = "fp32",
    batch: Annotated[Path | None, typer.Option("--batch", help='JSON lines {"image": ..., "text": ...}; one JSON line out per input.')] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="With --batch: write the JSON lines here instead of stdout.")] = None,
) -> None:
    """Predict the label(s) of an image-caption pair with an exported bundle (onnxruntime; no PyTorch)."""
    from ..runtime.predict import Predictor
    from ..runtime.verify import verified_once

    if model is None:
        model = _default_bundle()
    if batch is None and (image is None or text is None):
        _fail("give an IMAGE and a TEXT, or --batch pairs.jsonl")
    model = _model_folder(model)
    predictor = Predictor(model, provider, variant)
    if verified_once(model, variant):
        console.print(f"verified {escape(str(model))} against its test vectors (first use here)", soft_wrap=True)
    if predictor.note:
        console.print(f"[yellow]note:[/] {predictor.note}", soft_wrap=True)
    if batch is not None:
        failed = _predict_batch(predictor, batch, out, model, top_k)
        raise typer.Exit(1 if failed else 0)
    assert image is not None and text is not None  # checked above, before the bundle loaded
    result = predictor.predict([image], [text])[0]
    if result.truncated:
        console.print(f"[yellow]note:[/] the caption was truncated to {predictor.info.tokenizer['max_length']} tokens")
    if as_json:
        stdout.print_json(json.dumps(result.to_json(predictor.provider, top_k)))
        return
    table = Table(title=f"{predictor.info.dataset}/{predictor.info.setting} on {predictor.provider}")
    table.add_column("label")
    table.add_column("probability", justify="right")
    table.add_column("predicted", justify="center")
    for label, score in result.to_json(predictor.provider, top_k or 5)["scores"].items():
        table.add_row(label, f"{score:.4f}", "*" if label in result.labels else "")
    stdout.print(table)


def _default_bundle() -> Path:
    """The newest bundle under ./results (the workflow's) or ./bundles, said aloud; or how to get one."""
    from ..runtime.predict import find_bundle

    found = find_bundle()
    if found is None:
        _fail(
            "no bundle given and none found under ./results/*/bundles or ./bundles: pass --model <folder written by "
            "`mitp export`> (or set MITP_MODEL); the demo, `snakemake --profile workflow/profiles/demo`, writes them "
            "to results/demo/bundles/<data set>/mitp"
        )
    bundle, count = found
    others = f", the newest of {count}" if count > 1 else ""
    console.print(f"using bundle {bundle}{others} (choose with --model)", soft_wrap=True)
    return bundle


def _predict_batch(predictor, batch: Path, out: Path | None, bundle: Path, top_k: int | None) -> int:
    """Predict every good line of a batch file; report and skip bad ones. Returns how many failed.
    `--out` is written whole at the end (atomically), never in place of the batch file or the bundle."""
    import contextlib
    import sys

    from ..files.atomic import atomic_writer
    from ..files.outputs import claim_file
    from ..files.progress import progress_bar
    from ..runtime.predict import InputError, is_predictions_file, predict_batch_file

    if not batch.is_file():
        raise InputError(f"batch file not found: {batch}")
    if out is not None:
        claim_file(out, inputs=(batch,), within=(bundle,), ours=is_predictions_file)
    lines = batch.read_bytes().splitlines()
    total = sum(1 for line in lines if line.strip())
    with atomic_writer(out) if out else contextlib.nullcontext(sys.stdout) as sink, progress_bar(console) as bar:
        task = bar.add_task("predict", total=total)
        failed = predict_batch_file(
            predictor, lines, batch.parent, lambda record: sink.write(json.dumps(record) + "\n"),
            on_skip=lambda number, err: console.print(f"[bold red]skipped[/] line {number}: {escape(str(err))}", soft_wrap=True),
            on_line=lambda: bar.advance(task),
            top_k=top_k,
        )
    console.print(f"predicted {total - failed} of {total} lines" + (f"; {failed} skipped" if failed else ""))
    return failed
