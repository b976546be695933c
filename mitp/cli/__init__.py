"""The `mitp` command line (Typer + Rich): `app` is the entry point.

One module per group of commands; importing them here, in this order, registers the commands in the
order `mitp --help` lists them. Heavy libraries (torch, transformers) are imported inside the commands
that need them, so that `mitp --help` and the ONNX predict path start fast.
"""

from . import project, training, predicting, scoring, serving, reporting, bundles, datasets, releases, backbones  # noqa: F401, I001  (registration order)
from .common import app

__all__ = ["app"]
