"""`python -m mitp.cli` (what `accelerate launch -m mitp.cli` runs on each process): the `mitp` command."""

from . import app

app()
