"""Shared fixtures: a tiny random CLIP from the shipped preset, and small configs written per test."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from mitp.cli import app
from mitp.data.prepare import prepare_dataset
from mitp.data.twins import make_twin
from mitp.model.backbone import load_backbone

from .loopback import Loopback

ROOT = Path(__file__).resolve().parents[1]
PROJECT_CONFIG = ROOT / "config.yaml"

torch.set_num_threads(2)


@pytest.fixture(autouse=True, scope="session")
def _mitp_cache(tmp_path_factory):
    """mitp's user cache (first-use verification stamps) in a temporary folder, never the real home's."""
    mp = pytest.MonkeyPatch()
    mp.setenv("MITP_CACHE", str(tmp_path_factory.mktemp("mitp-cache")))
    yield
    mp.undo()


def pytest_collection_modifyitems(items):
    """Tests that train and export the shared model (the `trained` fixture) are slow: `-m "not slow"` skips them."""
    for item in items:
        if "trained" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)


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


TWIN_SIZES = {"train": 24, "val": 8, "test": 8}  # the suite's standard small twin


@pytest.fixture(scope="session")
def twin_store(tmp_path_factory):
    """Twins generated and prepared once per session, keyed by what made them; tests get copies."""
    return tmp_path_factory.mktemp("twins"), {}


@pytest.fixture
def prepared_twin(twin_store, tmp_path):
    """A factory: `prepared_twin(name, sizes, cache_size=, into=, raw=, prepared=)` copies a twin generated
    into `<into>/<raw>` and prepared into `<into>/<prepared>` (made once per session) and returns the
    prepared folder. Each call gets its own copy, which the test may damage."""
    store, built = twin_store

    def make(name="demo-food101", sizes=None, *, cache_size=None, into=None, raw="raw", prepared="prepared") -> Path:
        sizes = sizes or TWIN_SIZES
        key = (name, tuple(sorted(sizes.items())), cache_size, raw, prepared)
        if key not in built:
            root = store / f"twin{len(built)}"
            make_twin(name, root / raw, sizes=sizes)
            prepare_dataset(name, root / raw, root / prepared, cache_size=cache_size)
            built[key] = root
        into = into or tmp_path / f"twin-{name}-{len(list(tmp_path.glob('twin-*')))}"
        shutil.copytree(built[key], into, symlinks=True, dirs_exist_ok=True)
        return into / prepared

    return make


@pytest.fixture
def loopback():
    """A factory of loopback HTTP servers (tests.loopback.Loopback), each closed after the test."""
    started: list[Loopback] = []

    def start() -> Loopback:
        started.append(Loopback())
        return started[-1]

    yield start
    for server in started:
        server.close()


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """A tiny MITP trained one short epoch on a small prepared food twin, and its exported bundle."""
    root = tmp_path_factory.mktemp("export")
    make_twin("demo-food101", root / "raw", sizes={"train": 60, "val": 20, "test": 12})  # session-wide: built once
    prepare_dataset("demo-food101", root / "raw", root / "food")
    config = {
        "backbone": "preset:tiny",
        "hub": {"width": 16},
        "train": {"num_workers": 0, "epochs": 1, "eval_batch_size": 32},
        "datasets": {"food": {
            "task": "single-label", "data_dir": str(root / "food"), "batch_size": 16, "prompt_length": 2,
            "best_layers": [2, 3], "small_layers": [3], "templates": ["a photo of {}."], "lr": 3e-3,
        }},
        "settings": {"mitp": {"variant": "mitp", "layers": "best"}, "mitp-small": {"variant": "mitp", "layers": "best-small"}},
    }
    (root / "config.yaml").write_text(yaml.safe_dump(config))
    runner = CliRunner()
    result = runner.invoke(app, ["train", "-c", str(root / "config.yaml"), "-d", "food", "-s", "mitp", "--out", str(root / "run"), "--no-progress"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["export", "--checkpoint", str(root / "run"), "--out", str(root / "bundle"), "--fp16", "--int8"])
    assert result.exit_code == 0, result.output
    # another task on the same frozen backbone (a preset's weights are drawn from the seed, as at 0 above)
    result = runner.invoke(app, ["train", "-c", str(root / "config.yaml"), "-d", "food", "-s", "mitp-small", "--out", str(root / "other-run"), "--no-progress"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["export", "--checkpoint", str(root / "other-run"), "--out", str(root / "other-bundle")])
    assert result.exit_code == 0, result.output
    return root
