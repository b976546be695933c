"""Shared fixtures: a tiny random CLIP from the shipped preset, and small configs written per test."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from mitp.backbone import load_backbone

ROOT = Path(__file__).resolve().parents[1]
PROJECT_CONFIG = ROOT / "config.yaml"

torch.set_num_threads(2)


@pytest.fixture
def tiny():
    """A fresh tiny random CLIP (preset:tiny) and its in-process word tokenizer."""
    return load_backbone("preset:tiny", seed=0)


def synthetic_config(
    task: str = "single-label", epochs: int = 2, sizes: dict | None = None, hub_width: int = 16, **dataset
) -> dict:
    """A small project config with one synthetic data set named `toy` and the standard settings."""
    toy = {
        "task": task,
        "source": "synthetic",
        "batch_size": 32,
        "prompt_length": 2,
        "best_layers": [2, 3],
        "small_layers": [3],
        "templates": ["a photo of {}."],
        "epochs": epochs,
        "lr": 3.0e-3,
        "synthetic": {"n_colours": 4, "n_words": 4, "sizes": sizes or {"train": 256, "val": 64, "test": 64}},
        **dataset,
    }
    return {
        "backbone": "preset:tiny",
        "seed": 0,
        "hub": {"width": hub_width},
        "train": {"num_workers": 0, "eval_batch_size": 64},
        "datasets": {"toy": toy},
        "settings": {
            "mitp": {"variant": "mitp", "layers": "best", "similarity": "cos"},
            "mitp-small": {"variant": "mitp", "layers": "best-small"},
            "prompts-only": {"variant": "prompts-only", "layers": "best"},
            "mlp-interaction": {"variant": "mlp-interaction", "layers": "best"},
            "p-clip": {"variant": "p-clip", "layers": "all"},
            "linear-probe": {"variant": "linear-probe"},
            "mitp-mmd": {"variant": "mitp", "layers": [1, 3], "similarity": "mmd"},
            "mitp-cp": {"variant": "mitp", "layers": [1, 3], "similarity": "cov-pearson"},
        },
    }


@pytest.fixture
def write_config(tmp_path):
    def write(raw: dict) -> Path:
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump(raw))
        return path

    return write
