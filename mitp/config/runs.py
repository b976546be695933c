"""One run from the project config: its seeds in the workflow, and its resolved RunConfig."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .models import (
    COMPARED_WITH_READINGS,
    DatasetConfig,
    ModelConfig,
    ProjectConfig,
    RunConfig,
    SettingConfig,
    TrainConfig,
    WorkflowConfig,
    reading_setting,
)
from .types import ConfigError
from .validation import validated
from .variants import VARIANTS, variant


def run_seeds(run: str, workflow: WorkflowConfig, readings: list[str] | None = None, grid: Sequence[str] = ()) -> list[int]:
    """The seeds the workflow trains `run` with: workflow.seeds (the main rows, e.g. three, for intervals
    over seeds), workflow.grid_seeds for the Fig. 4 grid's settings `grid` (e.g. one: the grid is most of the
    cost), plus workflow.readings_seeds for the readings comparison (MITP under each reading in `readings`,
    default workflow.readings, and the exchanges it is compared with). Used by the Snakefile and the cost
    model alike."""
    if run in grid and run not in workflow.settings and workflow.grid_seeds:
        return list(workflow.grid_seeds)
    readings = workflow.readings if readings is None else readings
    compared = {*COMPARED_WITH_READINGS, *(reading_setting(r) for r in readings)}
    if run in compared:
        return list(dict.fromkeys([*workflow.seeds, *workflow.readings_seeds]))
    return list(workflow.seeds)



# ---------------------------------------------------------------------------------------------------
# one run


def resolve_run(
    project: ProjectConfig,
    dataset_name: str,
    setting_name: str,
    *,
    backbone: str | None = None,
    seed: int | None = None,
    lr: float | None = None,
    **train_overrides: Any,
) -> RunConfig:
    """Resolve one run: layer aliases become numbers, per-data-set values override the defaults, and
    command-line overrides (None = not given) are checked like config values. `epochs` and `lr` given
    here win over the data set's own."""
    dataset = project.dataset(dataset_name)
    setting = project.setting(setting_name)
    overrides = {k: v for k, v in train_overrides.items() if v is not None}
    train = validated(TrainConfig, {**project.train.model_dump(), **overrides}, "train") if overrides else project.train
    if "epochs" in overrides:
        dataset = dataset.model_copy(update={"epochs": None})
    if lr is not None:
        dataset = validated(DatasetConfig, {**dataset.model_dump(), "lr": lr})
    hub, head = project.hub, setting.head or project.head
    if setting.reading is not None:
        reading = project.readings[setting.reading]
        hub = hub.model_copy(update=reading.hub.model_dump(exclude_none=True))
        head = reading.head or head
    model = ModelConfig(
        variant=setting.variant,
        layers=_resolve_layers(setting, dataset, f"settings.{setting_name}.layers"),
        similarity=setting.similarity,
        prompt_length=dataset.prompt_length,
        task=dataset.task,
        hub=hub,
        head=head,
    )
    return validated(RunConfig, {
        "backbone": project.backbone if backbone is None else backbone,
        "seed": project.seed if seed is None else seed,
        "dataset_name": dataset_name,
        "dataset": dataset,
        "setting_name": setting_name,
        "setting": setting,
        "model": model,
        "train": train,
    })


def check_layers_fit(model: ModelConfig, text_layers: int, vision_layers: int) -> None:
    """Layer numbers must exist in both towers; for the interaction variants the vision tower also needs
    a block after the last interaction layer to receive the hub's output. Called once the backbone's
    architecture is known. P-CLIP's `all` (empty tuple here) means every block of each tower."""
    spec = variant(model.variant)
    if not spec.has_layers:
        return
    limit = spec.layer_limit(text_layers, vision_layers)
    bad = [n for n in model.layers if n > limit]
    if bad:
        raise ConfigError(
            f"layers: {bad} beyond the backbone (text tower has {text_layers} blocks, vision tower "
            f"{vision_layers}); allowed layer numbers are 1..{limit}"
        )


def _resolve_layers(setting: SettingConfig, dataset: DatasetConfig, key: str) -> tuple[int, ...]:
    spec = variant(setting.variant)
    if not spec.has_layers:
        return ()
    if setting.layers == "best":
        return dataset.best_layers
    if setting.layers == "best-small":
        return dataset.small_layers
    if setting.layers == "all":
        if spec.layers != "every-block":
            every_block = ", ".join(name for name, v in VARIANTS.items() if v.layers == "every-block")
            raise ConfigError(f"{key}: 'all' is only meaningful for the variants that prompt every block ({every_block})")
        return ()  # resolved against the backbone by the model
    return tuple(setting.layers)
