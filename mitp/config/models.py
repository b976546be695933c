"""The blocks of config.yaml as strict, frozen pydantic models, and the one-run models (ModelConfig,
RunConfig) that the model, trainer and evaluator read. The Fig. 4 grid and the readings expand into
settings here, so a ProjectConfig knows every setting a run can name."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Annotated, Any, Literal

from pydantic import Field, PrivateAttr, model_validator

from .types import (
    Backbone,
    ConfigError,
    Fraction,
    Gate,
    HeadKind,
    HubMap,
    HubScale,
    Layers,
    LayersOrAlias,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    Precision,
    ReadingName,
    ResolvedLayers,
    Seed,
    SimilarityKind,
    Source,
    Task,
    Template,
    Tracker,
    Variant,
    _KeyedValueError,
    _Section,
)
from .validation import validated
from .variants import variant

# ---------------------------------------------------------------------------------------------------
# the blocks of config.yaml


class HubConfig(_Section):
    width: PositiveInt = 168  # hidden width of every hub MLP; 168 puts MITP-base at ~2.0M params on ViT-L/14
    map: HubMap = "token"  # token: one score per prompt token; pairwise: an L x L map between the tokens
    gate: Gate = "softmax"  # paper Eq. 5 (softmax over the L prompt tokens) or per-element sigmoid
    scale: HubScale = "fixed"  # fixed: the paper's maps; learned: maps times exp(s), s learned from log(1 / 0.07)
    mmd_features: PositiveInt = 64  # random Fourier features of the linear-time MMD estimator
    mmd_bandwidth: PositiveFloat = 1.0  # Gaussian kernel bandwidth (sigma) of the MMD similarity


class HubOverrides(_Section):
    """A reading's changes to the project's hub: only the keys it names."""

    width: PositiveInt | None = None
    map: HubMap | None = None
    gate: Gate | None = None
    scale: HubScale | None = None
    mmd_features: PositiveInt | None = None
    mmd_bandwidth: PositiveFloat | None = None


class TrainConfig(_Section):
    optimizer: Literal["adam"] = "adam"
    lr: PositiveFloat = 2e-4
    weight_decay: Annotated[float, Field(ge=0)] = 0.0
    epochs: PositiveInt = 10
    eval_batch_size: PositiveInt = 64
    num_workers: NonNegativeInt = 4
    precision: Precision = "auto"  # auto: bf16 autocast on GPU, fp32 on CPU
    max_steps_per_epoch: PositiveInt | None = None  # cap for smoke runs and benchmarks; None = whole epoch
    fraction: Fraction = 1.0  # stratified share of the training split (paper Table 3)
    grad_clip: PositiveFloat | None = None
    keep_checkpoints: PositiveInt = 1  # epoch checkpoints kept besides the best one
    # Multi-label class bias: initialised from the training data, then trained at its own rate (at the
    # prompts' 2e-4 Adam moves it by ~1 in a whole MM-IMDB training; docs/decisions.md §7).
    class_bias_lr: PositiveFloat = 1e-2
    # Trackers that get loss, learning rate, validation metrics, gate statistics and throughput (accelerate's
    # log_with): [tensorboard] writes event files to <run>/logs, offline; wandb and mlflow need their packages.
    log_with: Annotated[tuple[Tracker, ...], Field(strict=False)] = ()


class SplitSizes(_Section):
    train: PositiveInt = 512
    val: PositiveInt = 128
    test: PositiveInt = 128


class SyntheticConfig(_Section):
    """Options of the in-process synthetic task (`mitp.data.synthetic`), for tests and benchmarks."""

    n_colours: Annotated[int, Field(ge=1, le=6)] = 4
    n_words: Annotated[int, Field(ge=1, le=6)] = 4
    noise: Annotated[float, Field(ge=0)] = 0.8
    sizes: SplitSizes = SplitSizes()


class DatasetConfig(_Section):
    task: Task
    source: Source = "prepared"
    data_dir: str = ""
    batch_size: PositiveInt = 32
    prompt_length: PositiveInt = 3
    best_layers: Layers = (4, 5, 6)
    small_layers: Layers = (5,)
    templates: Annotated[tuple[Template, ...], Field(strict=False, min_length=1)] = ("a photo of {}.",)
    num_classes: PositiveInt | None = None  # checked against classes.json; lets `mitp info` count without data
    epochs: PositiveInt | None = None  # overrides train.epochs for this data set
    lr: PositiveFloat | None = None  # overrides train.lr for this data set
    synthetic: SyntheticConfig = SyntheticConfig()

    @model_validator(mode="after")
    def _a_prepared_set_has_a_folder(self) -> DatasetConfig:
        if self.source == "prepared" and not self.data_dir:
            raise _KeyedValueError("data_dir", "required for a prepared data set")
        if self.task == "single-label" and self.num_classes == 1:
            raise _KeyedValueError("num_classes", "a single-label data set needs at least 2 classes, got 1")
        return self


class SettingConfig(_Section):
    variant: Variant
    layers: LayersOrAlias = "best"
    similarity: SimilarityKind = "cos"
    head: HeadKind | None = None  # None: the project's `head`
    reading: str | None = None  # a named reading (config `readings`) applied over the project's hub and head


class ReadingConfig(_Section):
    """One reading of the paper's open points: overrides of the hub's keys and of the head."""

    hub: HubOverrides = HubOverrides()
    head: HeadKind | None = None


class GridBlock(_Section):
    """The paper's Fig. 4 grid: every layer set x similarity becomes a setting named `l4-5-6-cos`."""

    layer_sets: list[Layers] = []
    similarities: list[SimilarityKind] = Field(default_factory=lambda: list[SimilarityKind](["cos"]))


class JobResources(_Section):
    threads: PositiveInt
    mem_mb: Annotated[int, Field(ge=100)]
    runtime: PositiveInt  # minutes


class StageResources(_Section):
    """What each job of a stage needs; executors map these (Slurm: --cpus-per-task, --mem, --time)."""

    train: JobResources
    evaluate: JobResources
    export: JobResources
    prepare: JobResources
    light: JobResources


class Fractions(_Section):
    datasets: list[str]
    percents: list[Annotated[int, Field(ge=1, le=99)]]


class WorkflowConfig(_Section):
    """The `workflow:` block: which runs the Snakefile makes and what each job needs (docs/workflow.md)."""

    results: str
    datasets: Annotated[list[str], Field(min_length=1)]
    settings: list[str]
    grid_datasets: list[str]
    fractions: Fractions
    seeds: Annotated[list[Seed], Field(min_length=1)]
    readings: list[str] = []
    readings_seeds: list[Seed] = []
    grid_seeds: list[Seed] = []  # the Fig. 4 grid's seeds; [] = seeds
    export: list[str]
    export_fp16: bool
    export_int8: bool
    gpus_per_run: NonNegativeInt
    gpus: dict[str, PositiveInt] = {}
    gpu_slots_per_gpu: PositiveInt = 1
    image_size: PositiveInt | None = None
    resources: StageResources
    standin: str = ""
    standin_steps: PositiveInt = 500
    epochs: PositiveInt | None = None
    # >1: a training job trains up to this many single-GPU runs of one data set in one process (mitp
    # train-runs), paying the start-up once; 1: one run per job (a cluster's one-GPU-per-job layout)
    runs_per_job: PositiveInt = 1


class ScoreConfig(_Section):
    """The `score:` block: a collection the workflow's `score` target scores, one job per input shard."""

    input: Annotated[str, Field(min_length=1)]  # a file or folder, as `mitp score` takes it
    model: Annotated[str, Field(min_length=1)]  # a bundle folder or release
    out: str = ""  # default: <workflow.results>/scores
    variant: Literal["fp32", "fp16", "int8"] = "fp32"
    batch_size: PositiveInt = 32
    gpus: NonNegativeInt = 1  # per job (0: CPU jobs)


class ProjectConfig(_Section):
    """The whole `config.yaml`: everything needed to resolve any (data set, setting) run."""

    backbone: Backbone = "openai/clip-vit-large-patch14"
    seed: Seed = 0
    head: HeadKind = "fused"
    hub: HubConfig = HubConfig()
    train: TrainConfig = TrainConfig()
    datasets: Annotated[dict[str, DatasetConfig], Field(min_length=1)]
    settings: dict[str, SettingConfig] = {}
    grid: list[GridBlock] = []
    readings: dict[ReadingName, ReadingConfig] = {}
    workflow: WorkflowConfig | None = None
    score: ScoreConfig | None = None
    _runs: dict[str, SettingConfig] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _settings_and_runs_agree(self) -> ProjectConfig:
        """Grid and readings become settings; every name the workflow uses must exist."""
        for name, setting in self.settings.items():
            if setting.reading is not None and setting.reading not in self.readings:
                allowed = ", ".join(self.readings) or "none are defined under readings"
                raise _KeyedValueError(f"settings.{name}.reading", f"{setting.reading!r} is not a reading of this config; allowed: {allowed}")
        runs = dict(self.settings)
        for name, setting in {**expand_grid(self.grid), **expand_readings(self.readings, self.settings)}.items():
            if name in runs:
                raise _KeyedValueError("grid", f"setting {name!r} (from grid or readings) is also defined under settings")
            runs[name] = setting
        if not runs:
            raise _KeyedValueError("settings", "at least one setting must be configured")
        self._runs.update(runs)
        if self.workflow is not None:
            self._check_workflow(self.workflow)
        return self

    def _check_workflow(self, workflow: WorkflowConfig) -> None:
        references: dict[str, tuple[list[str], str, dict[str, Any]]] = {
            "datasets": (workflow.datasets, "datasets", self.datasets),
            "grid_datasets": (workflow.grid_datasets, "datasets", self.datasets),
            "fractions.datasets": (workflow.fractions.datasets, "datasets", self.datasets),
            "settings": (workflow.settings, "settings", self._runs),
            "export": (workflow.export, "settings", self._runs),
            "gpus": (list(workflow.gpus), "settings", self._runs),
            "readings": (workflow.readings, "readings", self.readings),
        }
        for key, (names, block, defined) in references.items():
            missing = [name for name in names if name not in defined]
            if missing:
                raise _KeyedValueError(f"workflow.{key}", f"{', '.join(map(repr, missing))} not under {block}; defined: {', '.join(defined) or 'none'}")

    @property
    def runs(self) -> dict[str, SettingConfig]:
        """Every setting a run can name: `settings`, the grid's and the readings'."""
        return self._runs

    def dataset(self, name: str) -> DatasetConfig:
        if name not in self.datasets:
            raise ConfigError(f"unknown data set {name!r}; allowed: {', '.join(self.datasets)}")
        return self.datasets[name]

    def setting(self, name: str) -> SettingConfig:
        if name not in self._runs:
            raise ConfigError(f"unknown setting {name!r}; allowed: {', '.join(self._runs)}")
        return self._runs[name]


# ---------------------------------------------------------------------------------------------------
# what one run reads


class ModelConfig(_Section):
    """What the model needs to build itself: one setting on one data set, layers resolved."""

    variant: Variant
    layers: ResolvedLayers  # 1-based transformer block numbers, as in the paper
    similarity: SimilarityKind
    prompt_length: PositiveInt
    task: Task
    hub: HubConfig = HubConfig()
    head: HeadKind = "fused"  # how the logits are read (docs/decisions.md); linear-probe has its own head

    @property
    def effective_head(self) -> str:
        """The head the logits are read with: the configured one, or the variant's own (linear probe)."""
        return variant(self.variant).head(self.head)

    def reading(self) -> dict[str, Any]:
        """How this run reads the paper's open points, for result.json, the report and bundle.json."""
        spec = variant(self.variant)
        reading: dict[str, Any] = {"exchange": spec.exchange, "head": self.effective_head}
        if spec.exchange == "memory-hub":
            reading.update(map=self.hub.map, gate=self.hub.gate, scale=self.hub.scale, similarity=self.similarity)
        return reading


class RunConfig(_Section):
    """One (data set, setting) run, fully resolved; saved beside every checkpoint."""

    backbone: Backbone
    seed: Seed
    dataset_name: str
    dataset: DatasetConfig
    setting_name: str
    setting: SettingConfig
    model: ModelConfig
    train: TrainConfig

    @property
    def epochs(self) -> int:
        return self.dataset.epochs if self.dataset.epochs is not None else self.train.epochs

    @property
    def lr(self) -> float:
        return self.dataset.lr if self.dataset.lr is not None else self.train.lr

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump()

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> RunConfig:
        return validated(cls, raw)


# ---------------------------------------------------------------------------------------------------
# settings generated from the grid and the readings


READING_BASE = "mitp"  # readings are compared on MITP-base: reading r becomes setting `mitp-<r>`
COMPARED_WITH_READINGS = ("mitp", "mlp-interaction", "prompts-only")  # the exchanges the readings are compared with


def reading_setting(reading: str) -> str:
    return f"{READING_BASE}-{reading}"


def expand_readings(readings: dict[str, ReadingConfig], settings: dict[str, SettingConfig]) -> dict[str, SettingConfig]:
    """Every reading becomes a setting `mitp-<reading>`: MITP-base's layers and similarity, read that way."""
    if not readings:
        return {}
    base = settings.get(READING_BASE)
    if base is None:
        raise _KeyedValueError("readings", f"the readings are applied to setting {READING_BASE!r}, which is not defined")
    return {reading_setting(name): base.model_copy(update={"reading": name}) for name in readings}


def grid_setting(layers: Sequence[int], similarity: str) -> str:
    """The name the Fig. 4 grid gives its MITP setting at these layers and similarity: `l4-5-6-cos`."""
    return "l" + "-".join(str(n) for n in layers) + f"-{similarity}"


def expand_grid(grid: Sequence[GridBlock | dict[str, Any]]) -> dict[str, SettingConfig]:
    """The paper's Fig. 4 grid: every layer set x similarity becomes a setting named `l4-5-6-cos`."""
    settings: dict[str, SettingConfig] = {}
    for i, block in enumerate(grid):
        block = block if isinstance(block, GridBlock) else validated(GridBlock, block, f"grid[{i}]")
        for layers in block.layer_sets:
            for similarity in block.similarities:
                settings[grid_setting(layers, similarity)] = SettingConfig(variant="mitp", layers=layers, similarity=similarity)
    return settings
