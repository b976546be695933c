"""A training plan: several runs that one process trains in turn (`mitp train-runs PLAN`).

Starting Python and importing torch, Accelerate and transformers' CLIP costs about 5 s per process on a small
CPU, longer than a whole run of the offline demo; a plan pays it once for all its runs. The workflow writes one
plan per packed training job (`workflow.runs_per_job`); a plan is also a plain way to train a sweep by hand:

    runs:
      - {out: runs/food101/mitp/seed0, dataset: food101, setting: mitp, seed: 0}
      - {out: runs/food101/mitp-frac10/seed0, dataset: food101, setting: mitp, seed: 0, fraction: 0.1}

Each run is the run `mitp train --out OUT --dataset D --setting S [--seed N] [--fraction F]` makes, to the
last digit: every run seeds itself, loads its own backbone copy and data, and resumes from its own folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import yaml
from pydantic import Field, model_validator

from ..config import ConfigError, Fraction, Seed, _Section, read_yaml_mapping, validated
from ..files.atomic import atomic_write_text

MAX_PLAN_BYTES = 1 << 20  # a plan of a few hundred runs is a few tens of kB
Name = Annotated[str, Field(min_length=1)]


class PlannedRun(_Section):
    """One run of a plan: the options of `mitp train` that differ between runs."""

    out: Name  # the run's folder, as `mitp train --out`
    dataset: Name
    setting: Name
    seed: Seed | None = None  # None: the config's seed
    fraction: Fraction | None = None  # None: train.fraction


class TrainPlan(_Section):
    """The runs, in the order they are trained; each has a folder of its own."""

    runs: Annotated[list[PlannedRun], Field(min_length=1)]

    @model_validator(mode="after")
    def _one_run_per_folder(self) -> TrainPlan:
        seen: dict[Path, str] = {}
        for run in self.runs:
            folder = Path(run.out).resolve()
            if folder in seen:
                raise ValueError(f"two runs write into one folder: {seen[folder]!r} and {run.out!r}")
            seen[folder] = run.out
        return self


def load_plan(path: str | Path) -> TrainPlan:
    """Read and validate a plan file; raise ConfigError naming the first bad entry."""
    raw = read_yaml_mapping(path, "plan", MAX_PLAN_BYTES, "a plan is a mapping with one key, runs: a list of runs")
    try:
        return validated(TrainPlan, raw)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None


def plan_text(plan: TrainPlan) -> str:
    """The plan as the YAML `load_plan` reads, one run per line, keys left out where they take the default."""
    lines = [yaml.safe_dump(run.model_dump(exclude_none=True), default_flow_style=True, sort_keys=False).strip() for run in plan.runs]
    return "# mitp train-runs: the runs one process trains in turn\nruns:\n" + "".join(f"  - {line}\n" for line in lines)


def write_plan(plan: TrainPlan, path: str | Path) -> bool:
    """Write `plan` to `path` unless the file already says the same; True if it was (re)written."""
    path, text = Path(path), plan_text(plan)
    if path.is_file() and path.read_text() == text:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, text)
    return True
