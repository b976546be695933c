"""What every command shares: the app, the consoles, one-line failures, the config options."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

from ..errors import LIMIT_EXIT_CODE, MitpError, machine_limit

console = Console(stderr=True)
stdout = Console()


class _CommandGroup(TyperGroup):
    """Every command runs inside this: an error the user can act on (mitp.errors.MitpError) or the machine's
    limits (a full disk, a read-only file system) become one line on stderr and an exit code, never a traceback."""

    def invoke(self, ctx: typer.Context) -> Any:  # type: ignore[override]  # typer's Context subclasses its click one
        try:
            return super().invoke(ctx)
        except MitpError as err:
            _fail(str(err), err.exit_code)
        except OSError as err:
            limit = machine_limit(err)
            if limit is None:
                raise
            _fail(limit, LIMIT_EXIT_CODE)


app = typer.Typer(
    cls=_CommandGroup, help="MITP: memory-inspired temporal prompt interaction on frozen CLIP.", no_args_is_help=True, add_completion=False
)

ConfigOption = Annotated[
    Path | None, typer.Option("--config", "-c", help="Project config (YAML); default ./config.yaml, else the packaged one.", show_default=False)
]
DatasetOption = Annotated[str, typer.Option("--dataset", "-d", help="Data set name from the config.")]
BackboneOption = Annotated[str | None, typer.Option("--backbone", help="Override the backbone: HF name, local folder or preset:<name>.")]


def _fail(message: str, code: int = 2) -> NoReturn:
    console.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)
    raise typer.Exit(code)


TRAINING_LIBRARIES = ("torch", "transformers", "accelerate", "safetensors", "yaml", "pyarrow", "onnx")


def _require(*modules: str, extra: str = "train") -> None:
    """Stop with a clear message when a command needs libraries that this install left out (the runtime-only
    install, `pip install ".[cpu]"`, has `mitp predict` and `mitp bundle verify` alone)."""
    from importlib.util import find_spec

    missing = [m for m in modules if find_spec(m) is None]
    if missing:
        _fail(
            f"this command needs {', '.join(missing)}, which this install does not have: add the {extra!r} extra, e.g. "
            f"python -m pip install -e \".[{extra}]\" in a clone of mitp, or \"<mitp wheel>[{extra}]\""
        )


def _claim_gpu_slot() -> None:
    """In a local workflow run, take this job's GPU slot before CUDA starts (mitp.train.gpus)."""
    from ..train.gpus import claim_gpu_slot

    device = claim_gpu_slot()
    if device is not None:
        console.print(f"GPU slot claimed: CUDA_VISIBLE_DEVICES={device}")


def _config_path(config: Path | None) -> Path:
    """--config, ./config.yaml, or the packaged config (said once, so that nobody edits the wrong file)."""
    from ..resources import default_config

    path, packaged = default_config(config)
    if packaged:
        console.print(f"using the packaged config ({path}); `mitp init` writes an editable config.yaml here", soft_wrap=True)
    return path


def _resolve(config: Path | None, dataset: str, setting: str, backbone: str | None, seed: int | None = None, **overrides: Any):
    from ..config import load_config, resolve_run

    return resolve_run(load_config(_config_path(config)), dataset, setting, backbone=backbone, seed=seed, **overrides)


def _model_folder(model: Path) -> Path:
    """A bundle or release folder as given, or a release on the Hugging Face Hub (ORG/NAME, not a folder
    here) downloaded into the Hub's cache (HF_HUB_OFFLINE=1 reads the cache only)."""
    from ..ship.hf import model_folder

    return model_folder(model)
