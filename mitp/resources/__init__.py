"""Files that ship inside the package, so that an installed mitp works outside a clone: the paper's full
config (`config.yaml`, also the clone's top-level config), the offline demo's config (`demo.yaml`) and the
paper's numbers (`paper.yaml`). `mitp init` writes editable copies where the user wants them."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

CONFIG, DEMO_CONFIG, PAPER = "config.yaml", "demo.yaml", "paper.yaml"


def resource(name: str) -> Path:
    """The path of a packaged file (a real file: the package is installed unzipped)."""
    return Path(str(files(__name__) / name))


def default_config(explicit: Path | None) -> tuple[Path, bool]:
    """The config a command reads: `--config` if given, else ./config.yaml, else the packaged one.
    Returns (path, whether it is the packaged default)."""
    if explicit is not None:
        return explicit, False
    if Path("config.yaml").is_file():
        return Path("config.yaml"), False
    return resource(CONFIG), True
