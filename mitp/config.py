"""Typed, frozen configuration for mitp, defined once and checked before any work starts.

`config.yaml` holds the paper's whole setup: the backbone, per-data-set hyper-parameters, the training
options, a grid of named settings and the workflow's runs. The pydantic models below are its only
definition: validation is strict (a YAML string is never quietly read as a number, unknown keys are
refused), the Snakemake schema `workflow/schemas/config.schema.yaml` is generated from them
(`python -m mitp.config > workflow/schemas/config.schema.yaml`; a test keeps the two equal), and every bad
value raises `ConfigError` with one line naming the key, the value and what is allowed. `resolve_run`
turns one (data set, setting) pair into a `RunConfig`, the single object the model, trainer and evaluator read.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, get_args

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    PrivateAttr,
    Tag,
    ValidationError,
    model_validator,
)

from .errors import MitpError

# ---------------------------------------------------------------------------------------------------
# the choices

Variant = Literal["mitp", "prompts-only", "mlp-interaction", "p-clip", "linear-probe"]
SimilarityKind = Literal["cos", "mmd", "cov-pearson"]
Gate = Literal["softmax", "sigmoid"]
HubMap = Literal["token", "pairwise"]  # what the hub's similarity compares: matching tokens, or every token pair
HubScale = Literal["fixed", "learned"]  # the similarity maps as they are (paper), or times a learned scale
# How logits are read (docs/decisions.md): image + caption embeddings (fused), the image embedding alone,
# or the text tower once per class on the caption plus the class prompt (per-class).
HeadKind = Literal["fused", "image", "per-class"]
Task = Literal["single-label", "multi-label"]
Source = Literal["prepared", "synthetic"]
Precision = Literal["auto", "bf16", "fp32"]
LayerAlias = Literal["best", "best-small", "all"]
Tracker = Literal["tensorboard", "wandb", "mlflow"]  # accelerate's trackers; tensorboard is offline and installed

VARIANTS: tuple[str, ...] = get_args(Variant)
HEADS: tuple[str, ...] = get_args(HeadKind)
VARIANTS_WITHOUT_LAYERS = ("linear-probe",)
READING_NAME = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")
MAX_LAYER = 1000  # no CLIP has more blocks; bounds what a config can ask the model to build


class ConfigError(MitpError, ValueError):
    """A configuration value is missing, unknown or out of range; the message names the key."""


class _KeyedValueError(ValueError):
    """A cross-field rule's failure, naming the field (under the model being validated) it is about."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


# ---------------------------------------------------------------------------------------------------
# value types shared by the models


def _strictly_increasing(layers: tuple[int, ...]) -> tuple[int, ...]:
    if list(layers) != sorted(set(layers)):
        raise ValueError(f"layer numbers must be strictly increasing, got {list(layers)}")
    return layers


def _a_backbone(name: str) -> str:
    if not name:
        raise ValueError("must be a Hugging Face CLIP name, a local path or 'preset:<name>'")
    return name


def _a_reading_name(name: str) -> str:
    if not READING_NAME.match(name) or "frac" in name:
        raise ValueError(f"a reading name is lower-case words joined by '-' (and never 'frac'), got {name!r}")
    return name


def _a_fraction(share: float) -> float:
    if not 0 < share <= 1:
        raise ValueError(f"must be in (0, 1], got {share}")
    return share


def _a_template(template: str) -> str:
    if "{}" not in template:
        raise ValueError(f"each template must contain '{{}}' for the class name, got {template!r}")
    try:
        template.format("class name")
    except (ValueError, IndexError, KeyError) as err:
        raise ValueError(f"{template!r} is not a valid template ({err}); write literal braces as '{{{{' and '}}}}'") from err
    return template


PositiveInt = Annotated[int, Field(ge=1)]
NonNegativeInt = Annotated[int, Field(ge=0)]
PositiveFloat = Annotated[float, Field(gt=0)]
Seed = Annotated[int, Field(ge=0)]  # numpy's generators take no negative seed
LayerNumber = Annotated[int, Field(ge=1, le=MAX_LAYER)]  # 1 = the first transformer block, as in the paper
# YAML gives lists where the models keep tuples (frozen, hashable): the container is lax, its items strict.
Layers = Annotated[tuple[LayerNumber, ...], Field(strict=False, min_length=1), AfterValidator(_strictly_increasing)]
ResolvedLayers = Annotated[tuple[LayerNumber, ...], Field(strict=False)]  # () = P-CLIP's `all`, or none
LayersOrAlias = Annotated[
    Annotated[Layers, Tag("list")] | Annotated[LayerAlias, Tag("alias")],
    Discriminator(lambda value: "alias" if isinstance(value, str) else "list"),
]
Template = Annotated[str, AfterValidator(_a_template)]
Fraction = Annotated[float, Field(json_schema_extra={"exclusiveMinimum": 0, "maximum": 1}), AfterValidator(_a_fraction)]
Backbone = Annotated[str, AfterValidator(_a_backbone)]
ReadingName = Annotated[str, Field(json_schema_extra={"pattern": READING_NAME.pattern}), AfterValidator(_a_reading_name)]


class _Section(BaseModel):
    """A block of config.yaml: strict types, no unknown keys, frozen once read."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, raw: Any) -> Any:
        """Name the allowed keys next to an unknown one (pydantic alone says only 'extra input')."""
        if isinstance(raw, dict):
            unknown = sorted(str(key) for key in set(raw) - set(cls.model_fields))
            if unknown:
                raise ValueError(f"unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(cls.model_fields))}")
        return raw


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

    def reading(self) -> dict[str, Any]:
        """How this run reads the paper's open points, for result.json, the report and bundle.json."""
        exchange = {"mitp": "memory-hub", "mlp-interaction": "mlp", "prompts-only": "none"}.get(self.variant, "none")
        reading: dict[str, Any] = {"exchange": exchange, "head": "linear" if self.variant == "linear-probe" else self.head}
        if exchange == "memory-hub":
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
# loading, and errors in one line


class _Loader(yaml.SafeLoader):
    """YAML 1.1 reads `2e-4` (no dot) as a string; here it is the number everyone means."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def _mapping_without_duplicates(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    """YAML lets a later key silently replace an earlier one (`lr: 2e-4` ... `lr: 9.0`); a config must not."""
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise ConfigError(f"key {key!r} appears twice in one mapping (lines {seen[key]} and {key_node.start_mark.line + 1}): keep one")
        seen[key] = key_node.start_mark.line + 1
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates)


MAX_CONFIG_BYTES = 4 << 20  # config.yaml is a few kB
MAX_YAML_VALUES = 200_000  # values once aliases (*name) are expanded: the paper's config has about 1,000


def read_yaml(text: str) -> Any:
    """Parse YAML with the project's loader, refusing documents whose aliases expand beyond MAX_YAML_VALUES
    (a "billion laughs" config would otherwise take all memory before any key is checked)."""
    if len(text) > MAX_CONFIG_BYTES:
        raise ConfigError(f"the config has {len(text):,} characters; a config holds at most {MAX_CONFIG_BYTES:,}")
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        size = _expanded_size(node, {})
        if size > MAX_YAML_VALUES:
            raise ConfigError(f"the config's aliases (*name) expand it to {size:,} values; a config holds at most {MAX_YAML_VALUES:,}")
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _expanded_size(node: yaml.Node, seen: dict[int, int]) -> int:
    """How many values `node` becomes once every alias is expanded (aliases share node objects: memoised)."""
    if id(node) in seen:
        return seen[id(node)]
    seen[id(node)] = 1  # a recursive alias counts once while its size is computed
    if isinstance(node, yaml.SequenceNode):
        size = 1 + sum(_expanded_size(child, seen) for child in node.value)
    elif isinstance(node, yaml.MappingNode):
        size = 1 + sum(_expanded_size(key, seen) + _expanded_size(value, seen) for key, value in node.value)
    else:
        size = 1
    seen[id(node)] = size
    return size


def read_yaml_mapping(path: str | Path, what: str, max_bytes: int, not_a_mapping: str) -> dict[str, Any]:
    """A small YAML file whose top level is a mapping (a config, a plan), or ConfigError saying why not."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what} file not found: {path}")
    if path.stat().st_size > max_bytes:
        raise ConfigError(f"{path} has {path.stat().st_size:,} bytes; a {what} holds at most {max_bytes:,}")
    try:
        raw = read_yaml(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from err
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: {not_a_mapping}")
    return raw


def load_config(path: str | Path) -> ProjectConfig:
    """Read and validate `config.yaml`; raise ConfigError naming the first bad key."""
    return parse_config(read_yaml_mapping(path, "config", MAX_CONFIG_BYTES, "the top level must be a mapping"))


def parse_config(raw: dict[str, Any]) -> ProjectConfig:
    return validated(ProjectConfig, raw)


_M = TypeVar("_M", bound=BaseModel)


def validated(model: type[_M], raw: Any, key: str = "") -> _M:
    """`model` from `raw`, or ConfigError with the first problem in one line: key, value, what is allowed."""
    try:
        return model.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_one_line(err.errors()[0], raw, key)) from None


_MESSAGES = {
    "float_type": "expected a number",
    "int_type": "expected an integer",
    "string_type": "expected a string",
    "bool_type": "expected true or false",
    "tuple_type": "expected a list",
    "list_type": "expected a list",
    "dict_type": "expected a mapping",
    "model_type": "expected a mapping",
    "missing": "missing required key",
    "extra_forbidden": "unknown key",
    "greater_than_equal": "must be >= {ge}",
    "greater_than": "must be > {gt}",
    "less_than_equal": "must be <= {le}",
    "less_than": "must be < {lt}",
    "too_short": "needs at least {min_length} item(s)",
    "too_long": "allows at most {max_length} item(s)",
    "finite_number": "must be a finite number",
}


def _one_line(error: Any, raw: Any, prefix: str) -> str:
    kind, value, ctx = error["type"], error.get("input"), error.get("ctx") or {}
    parts = _key_parts(error["loc"], raw)
    if kind == "value_error":
        cause = ctx.get("error")
        if isinstance(cause, _KeyedValueError):
            parts = [*parts, *cause.field.split(".")]
        message = str(cause) if cause is not None else error["msg"]
    elif kind == "literal_error":
        allowed = ", ".join(re.findall(r"'([^']*)'", ctx.get("expected", ""))) or ctx.get("expected", "")
        message = f"{_shown(value)} is not one of {allowed}"
    elif kind in ("missing", "extra_forbidden"):
        message = _MESSAGES[kind]
    else:
        bounds = {name: int(v) if isinstance(v, float) and v.is_integer() else v for name, v in ctx.items()}
        message = _MESSAGES.get(kind, error["msg"]).format(**bounds) + f", got {_shown(value)}"
    key = _join([p for p in (prefix, *parts) if p])
    return f"{key}: {message}" if key else message


def _key_parts(loc: Sequence[Any], raw: Any) -> list[str]:
    """The config key of an error location, without pydantic's union tags ('list', 'alias') and '[key]'."""
    parts: list[str] = []
    value = raw
    for part in loc:
        if part == "[key]":
            continue  # the error is about the key itself, already named
        if isinstance(value, dict):
            parts.append(str(part))
            value = value.get(part)
        elif isinstance(value, (list, tuple)) and isinstance(part, int):
            parts.append(f"[{part}]")
            value = value[part] if 0 <= part < len(value) else None
        # anything else is a union member's tag, not a key of the config
    return parts


def _join(parts: list[str]) -> str:
    return ".".join(parts).replace(".[", "[")


def _shown(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ---------------------------------------------------------------------------------------------------
# settings generated from the grid and the readings


READING_BASE = "mitp"  # readings are compared on MITP-base: reading r becomes setting `mitp-<r>`
COMPARED_WITH_READINGS = ("mitp", "mlp-interaction", "prompts-only")  # the exchanges the readings are compared with


def reading_setting(reading: str) -> str:
    return f"{READING_BASE}-{reading}"


def run_seeds(run: str, workflow: dict[str, Any], readings: list[str] | None = None, grid: Sequence[str] = ()) -> list[int]:
    """The seeds the workflow trains `run` with: workflow.seeds (the main rows, e.g. three, for intervals
    over seeds), workflow.grid_seeds for the Fig. 4 grid's settings `grid` (e.g. one: the grid is most of the
    cost), plus workflow.readings_seeds for the readings comparison (MITP under each reading in `readings`,
    default workflow.readings, and the exchanges it is compared with). Used by the Snakefile and the cost
    model alike."""
    if run in grid and run not in workflow["settings"] and workflow.get("grid_seeds"):
        return list(workflow["grid_seeds"])
    readings = workflow.get("readings", []) if readings is None else readings
    compared = {*COMPARED_WITH_READINGS, *(reading_setting(r) for r in readings)}
    extra = workflow.get("readings_seeds") or []
    return list(dict.fromkeys([*workflow["seeds"], *extra])) if run in compared else list(workflow["seeds"])


def expand_readings(readings: dict[str, ReadingConfig], settings: dict[str, SettingConfig]) -> dict[str, SettingConfig]:
    """Every reading becomes a setting `mitp-<reading>`: MITP-base's layers and similarity, read that way."""
    if not readings:
        return {}
    base = settings.get(READING_BASE)
    if base is None:
        raise _KeyedValueError("readings", f"the readings are applied to setting {READING_BASE!r}, which is not defined")
    return {reading_setting(name): base.model_copy(update={"reading": name}) for name in readings}


def expand_grid(grid: Sequence[GridBlock | dict[str, Any]]) -> dict[str, SettingConfig]:
    """The paper's Fig. 4 grid: every layer set x similarity becomes a setting named `l4-5-6-cos`."""
    settings: dict[str, SettingConfig] = {}
    for i, block in enumerate(grid):
        block = block if isinstance(block, GridBlock) else validated(GridBlock, block, f"grid[{i}]")
        for layers in block.layer_sets:
            for similarity in block.similarities:
                name = "l" + "-".join(str(n) for n in layers) + f"-{similarity}"
                settings[name] = SettingConfig(variant="mitp", layers=layers, similarity=similarity)
    return settings


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
    if model.variant in VARIANTS_WITHOUT_LAYERS:
        return
    limit = min(text_layers, vision_layers) if model.variant == "p-clip" else min(text_layers, vision_layers - 1)
    bad = [n for n in model.layers if n > limit]
    if bad:
        raise ConfigError(
            f"layers: {bad} beyond the backbone (text tower has {text_layers} blocks, vision tower "
            f"{vision_layers}); allowed layer numbers are 1..{limit}"
        )


def _resolve_layers(setting: SettingConfig, dataset: DatasetConfig, key: str) -> tuple[int, ...]:
    if setting.variant in VARIANTS_WITHOUT_LAYERS:
        return ()
    if setting.layers == "best":
        return dataset.best_layers
    if setting.layers == "best-small":
        return dataset.small_layers
    if setting.layers == "all":
        if setting.variant != "p-clip":
            raise ConfigError(f"{key}: 'all' is only meaningful for the p-clip variant")
        return ()  # resolved against the backbone by the model
    return tuple(setting.layers)


# ---------------------------------------------------------------------------------------------------
# the Snakemake schema, generated


def snakemake_schema() -> dict[str, Any]:
    """The JSON schema Snakemake validates config.yaml with, generated from `ProjectConfig`: the same
    keys, types, choices and bounds (cross-field rules are mitp's alone). The workflow needs its block."""
    schema = _tidy(ProjectConfig.model_json_schema())
    schema["properties"]["workflow"] = {"$ref": "#/$defs/WorkflowConfig"}
    schema["required"] = sorted({*schema.get("required", []), "workflow"})
    schema["description"] = (
        "mitp project config (config.yaml). GENERATED from mitp/config.py by "
        "`python -m mitp.config > workflow/schemas/config.schema.yaml`: edit the models, not this file."
    )
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}


def _tidy(node: Any) -> Any:
    """Drop pydantic's titles (the keys say it); a dict with a key pattern becomes propertyNames + additionalProperties
    (patternProperties alone would let any other key through)."""
    if isinstance(node, list):
        return [_tidy(item) for item in node]
    if not isinstance(node, dict):
        return node
    tidy = {key: _tidy(value) for key, value in node.items() if key != "title" or not isinstance(value, str)}
    patterns = tidy.pop("patternProperties", None)
    if patterns:
        (pattern, values), = patterns.items()
        tidy.update(propertyNames={"pattern": pattern}, additionalProperties=values)
    return tidy


def schema_yaml() -> str:
    return yaml.safe_dump(snakemake_schema(), sort_keys=False, width=120, default_flow_style=None)


if __name__ == "__main__":
    sys.stdout.write(schema_yaml())
