"""Setting up and inspecting a project: init, version, info."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from .. import __version__
from .common import (
    TRAINING_LIBRARIES,
    BackboneOption,
    ConfigOption,
    DatasetOption,
    _config_path,
    _require,
    app,
    console,
    stdout,
)


@app.command()
def init(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder to write config.yaml into.")] = Path("."),
    demo: Annotated[bool, typer.Option("--demo", help="The offline demo's config (twins, stand-in CLIP) instead of the paper's.")] = False,
) -> None:
    """Write an editable config.yaml (the paper's setup, or the demo's) into a folder; never over an existing one."""
    from ..files.atomic import atomic_write_text
    from ..files.outputs import OutputError
    from ..resources import CONFIG, DEMO_CONFIG, resource

    target = out / "config.yaml"
    if target.exists() or target.is_symlink():
        raise OutputError(f"{target} exists and is left as it is: edit it, or name another folder with --out")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(target, resource(DEMO_CONFIG if demo else CONFIG).read_text())
    console.print(f"[bold green]wrote[/] {target}: the {'offline demo' if demo else 'paper'}'s setup; every mitp command here reads it")


@app.command()
def version() -> None:
    """Print the mitp version."""
    stdout.print(__version__)


@app.command()
def info(
    config: ConfigOption = None,
    dataset: DatasetOption = "food101",
    setting: Annotated[str | None, typer.Option("--setting", "-s", help="Setting name; all settings if omitted.")] = None,
    backbone: BackboneOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Trainable and backbone parameter counts, built on the backbone's architecture with no download."""
    _require(*TRAINING_LIBRARIES)
    from ..config import load_config, resolve_run
    from ..model.budget import parameter_budget

    project = load_config(_config_path(config))  # read once for every setting
    names = [setting] if setting else list(project.runs)
    rows = [parameter_budget(resolve_run(project, dataset, name, backbone=backbone)) for name in names]
    if as_json:
        stdout.print_json(json.dumps(rows[0] if setting else rows))
        return
    table = Table(title=f"mitp parameter budget: {dataset} on {rows[0]['backbone']}")
    table.add_column("setting", no_wrap=True)
    for column in ("variant", "head", "layers (text / vision)", "similarity"):
        table.add_column(column)
    table.add_column("trainable", justify="right", no_wrap=True)
    table.add_column("effective", justify="right", no_wrap=True)
    table.add_column("share", justify="right", no_wrap=True)
    for row in rows:
        table.add_row(
            row["setting"], row["variant"], row["head"], _layers_text(row), row["similarity"],
            f"{row['trainable_params']:,}", f"{row['effective_trainable_params']:,}",
            f"{100 * row['trainable_params'] / row['backbone_params']:.3f}%",
        )
    stdout.print(table)
    stdout.print(f"backbone parameters (frozen): {rows[0]['backbone_params']:,}")
    stdout.print("effective: the trainable parameters that receive a gradient in that setting")


def _layers_text(row: dict[str, Any]) -> str:
    """"4-6", "2,4,6", or "1-12 / 1-24" where the towers differ (P-CLIP)."""
    text, vision = row["text_layers"], row["vision_layers"]
    if not text and not vision:
        return "-"
    return _span(text) if text == vision else f"{_span(text)} / {_span(vision)}"


def _span(layers: list[int]) -> str:
    consecutive = len(layers) > 2 and layers == list(range(layers[0], layers[-1] + 1))
    return f"{layers[0]}-{layers[-1]}" if consecutive else ",".join(map(str, layers))
