"""Typed, frozen configuration for mitp, loaded from YAML and checked before any work starts.

`config.yaml` holds the paper's whole setup: the backbone, per-data-set hyper-parameters, the training
options and a grid of named settings. `resolve_run` turns one (data set, setting) pair into a `RunConfig`,
the single object that the model, trainer and evaluator read. Every bad value raises `ConfigError` with
the key that holds it and the values that would be allowed.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import MitpError

VARIANTS = ("mitp", "prompts-only", "mlp-interaction", "p-clip", "linear-probe")
SIMILARITIES = ("cos", "mmd", "cov-pearson")
GATES = ("softmax", "sigmoid")
HUB_MAPS = ("token", "pairwise")  # what the hub's similarity compares: matching tokens, or every token pair
HUB_SCALES = ("fixed", "learned")  # the similarity maps as they are (paper), or times a learned scale
# How logits are read (docs/decisions.md): image + caption embeddings (fused), the image embedding alone,
# or the text tower once per class on the caption plus the class prompt (per-class).
HEADS = ("fused", "image", "per-class")
READING_NAME = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")
TASKS = ("single-label", "multi-label")
SOURCES = ("prepared", "synthetic")
PRECISIONS = ("auto", "bf16", "fp32")
LAYER_ALIASES = ("best", "best-small", "all")
VARIANTS_WITHOUT_LAYERS = ("linear-probe",)


class ConfigError(MitpError, ValueError):
    """A configuration value is missing, unknown or out of range; the message names the key."""


@dataclass(frozen=True)
class HubConfig:
    width: int = 168  # hidden width of every hub MLP; 168 puts MITP-base at ~2.0M params on ViT-L/14
    map: str = "token"  # token: one score per prompt token; pairwise: an L x L map between the tokens
    gate: str = "softmax"  # paper Eq. 5 (softmax over the L prompt tokens) or per-element sigmoid
    scale: str = "fixed"  # fixed: the paper's maps; learned: maps times exp(s), s learned from 0
    mmd_features: int = 64  # random Fourier features of the linear-time MMD estimator
    mmd_bandwidth: float = 1.0  # Gaussian kernel bandwidth (sigma) of the MMD similarity


@dataclass(frozen=True)
class TrainConfig:
    optimizer: str = "adam"
    lr: float = 2e-4
    weight_decay: float = 0.0
    epochs: int = 10
    eval_batch_size: int = 64
    num_workers: int = 4
    precision: str = "auto"  # auto: bf16 autocast on GPU, fp32 on CPU
    max_steps_per_epoch: int | None = None  # cap for smoke runs and benchmarks; None = whole epoch
    fraction: float = 1.0  # stratified share of the training split to keep (paper Table 3)
    grad_clip: float | None = None
    keep_checkpoints: int = 1  # epoch checkpoints kept besides the best one
    # Multi-label class bias: initialised from the training data, then trained at its own rate (at the
    # prompts' 2e-4 Adam moves it by ~1 in a whole MM-IMDB training; docs/decisions.md §7).
    class_bias_lr: float = 1e-2


@dataclass(frozen=True)
class DatasetConfig:
    task: str
    source: str = "prepared"
    data_dir: str = ""
    batch_size: int = 32
    prompt_length: int = 3
    best_layers: tuple[int, ...] = (4, 5, 6)
    small_layers: tuple[int, ...] = (5,)
    templates: tuple[str, ...] = ("a photo of {}.",)
    num_classes: int | None = None  # checked against classes.json; lets `mitp info` count without data
    epochs: int | None = None  # overrides train.epochs for this data set
    lr: float | None = None  # overrides train.lr for this data set
    synthetic: dict[str, Any] = field(default_factory=dict)  # options of the in-process synthetic task


@dataclass(frozen=True)
class SettingConfig:
    variant: str
    layers: tuple[int, ...] | str = "best"
    similarity: str = "cos"
    head: str | None = None  # None: the project's `head`
    reading: str | None = None  # a named reading (config `readings`) applied over the project's hub and head


@dataclass(frozen=True)
class ReadingConfig:
    """One reading of the paper's open points: overrides of the hub's keys and of the head."""

    hub: dict[str, Any] = field(default_factory=dict)
    head: str | None = None


@dataclass(frozen=True)
class ModelConfig:
    """What the model needs to build itself: one setting on one data set, layers resolved."""

    variant: str
    layers: tuple[int, ...]  # 1-based transformer block numbers, as in the paper
    similarity: str
    prompt_length: int
    task: str
    hub: HubConfig = HubConfig()
    head: str = "fused"  # how the logits are read (docs/decisions.md); linear-probe has its own head

    def reading(self) -> dict[str, Any]:
        """How this run reads the paper's open points, for result.json, the report and bundle.json."""
        exchange = {"mitp": "memory-hub", "mlp-interaction": "mlp", "prompts-only": "none"}.get(self.variant, "none")
        reading: dict[str, Any] = {"exchange": exchange, "head": "linear" if self.variant == "linear-probe" else self.head}
        if exchange == "memory-hub":
            reading.update(map=self.hub.map, gate=self.hub.gate, scale=self.hub.scale, similarity=self.similarity)
        return reading


@dataclass(frozen=True)
class RunConfig:
    """One (data set, setting) run, fully resolved; saved beside every checkpoint."""

    backbone: str
    seed: int
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
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> RunConfig:
        dataset = _build(DatasetConfig, raw["dataset"], "dataset")
        setting = _build(SettingConfig, raw["setting"], "setting")
        model_raw = dict(raw["model"])
        model_raw["hub"] = _build(HubConfig, model_raw.get("hub", {}), "model.hub")
        model = _build(ModelConfig, model_raw, "model")
        return cls(
            backbone=raw["backbone"],
            seed=int(raw["seed"]),
            dataset_name=raw["dataset_name"],
            dataset=dataset,
            setting_name=raw["setting_name"],
            setting=setting,
            model=model,
            train=_build(TrainConfig, raw["train"], "train"),
        )


@dataclass(frozen=True)
class ProjectConfig:
    """The whole `config.yaml`: everything needed to resolve any (data set, setting) run."""

    backbone: str
    seed: int
    hub: HubConfig
    train: TrainConfig
    datasets: dict[str, DatasetConfig]
    settings: dict[str, SettingConfig]
    head: str = "fused"
    readings: dict[str, ReadingConfig] = field(default_factory=dict)

    def dataset(self, name: str) -> DatasetConfig:
        if name not in self.datasets:
            raise ConfigError(f"unknown data set {name!r}; allowed: {', '.join(self.datasets)}")
        return self.datasets[name]

    def setting(self, name: str) -> SettingConfig:
        if name not in self.settings:
            raise ConfigError(f"unknown setting {name!r}; allowed: {', '.join(self.settings)}")
        return self.settings[name]


# ---------------------------------------------------------------------------------------------------
# loading and validation


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


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, lambda loader, node: _mapping_without_duplicates(loader, node))


def read_yaml(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)  # noqa: S506 (a SafeLoader subclass)


def load_config(path: str | Path) -> ProjectConfig:
    """Read and validate `config.yaml`; raise ConfigError naming the first bad key."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        raw = read_yaml(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from err
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    return parse_config(raw)


def parse_config(raw: dict[str, Any]) -> ProjectConfig:
    allowed = {"backbone", "seed", "head", "hub", "train", "datasets", "settings", "grid", "readings", "workflow"}
    _reject_unknown(raw, allowed, "")
    backbone = raw.get("backbone", "openai/clip-vit-large-patch14")
    if not isinstance(backbone, str) or not backbone:
        raise ConfigError("backbone: must be a Hugging Face CLIP name, a local path or 'preset:<name>'")
    head = raw.get("head", "fused")
    if head not in HEADS:
        raise ConfigError(f"head: {head!r} is not one of {', '.join(HEADS)}")
    hub = _build(HubConfig, raw.get("hub") or {}, "hub")
    train = _build(TrainConfig, raw.get("train") or {}, "train")
    _check_hub(hub, "hub")
    _check_train(train, "train")

    datasets_raw = raw.get("datasets") or {}
    if not isinstance(datasets_raw, dict) or not datasets_raw:
        raise ConfigError("datasets: at least one data set must be configured")
    datasets = {name: _parse_dataset(name, value) for name, value in datasets_raw.items()}

    readings = _parse_readings(raw.get("readings") or {}, hub)
    settings_raw = dict(raw.get("settings") or {})
    generated = {**expand_grid(raw.get("grid") or []), **expand_readings(readings, settings_raw)}
    for name, value in generated.items():
        if name in settings_raw:
            raise ConfigError(f"grid/readings: setting {name!r} is also defined under settings")
        settings_raw[name] = value
    settings = {name: _parse_setting(name, value, readings) for name, value in settings_raw.items()}
    if not settings:
        raise ConfigError("settings: at least one setting must be configured")
    return ProjectConfig(
        backbone=backbone,
        seed=_int(raw.get("seed", 0), "seed"),
        hub=hub,
        train=train,
        datasets=datasets,
        settings=settings,
        head=head,
        readings=readings,
    )


READING_BASE = "mitp"  # readings are compared on MITP-base: reading r becomes setting `mitp-<r>`


def reading_setting(reading: str) -> str:
    return f"{READING_BASE}-{reading}"


COMPARED_WITH_READINGS = ("mitp", "mlp-interaction", "prompts-only")  # the exchanges the readings are compared with


def run_seeds(run: str, workflow: dict[str, Any], readings: list[str] | None = None) -> list[int]:
    """The seeds the workflow trains `run` with: workflow.seeds, plus workflow.readings_seeds for the
    readings comparison (MITP under each reading in `readings`, default workflow.readings, and the
    exchanges it is compared with), so that its spread over seeds is measured. Used by the Snakefile and
    the cost model alike."""
    readings = workflow.get("readings", []) if readings is None else readings
    compared = {*COMPARED_WITH_READINGS, *(reading_setting(r) for r in readings)}
    extra = workflow.get("readings_seeds") or []
    return list(dict.fromkeys([*workflow["seeds"], *extra])) if run in compared else list(workflow["seeds"])


def expand_readings(readings: dict[str, ReadingConfig], settings: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every reading becomes a setting `mitp-<reading>`: MITP-base's layers and similarity, read that way."""
    if not readings:
        return {}
    base = settings.get(READING_BASE)
    if not isinstance(base, dict):
        raise ConfigError(f"readings: the readings are applied to setting {READING_BASE!r}, which is not defined")
    return {reading_setting(name): {**base, "reading": name} for name in readings}


def _parse_readings(raw: Any, hub: HubConfig) -> dict[str, ReadingConfig]:
    if not isinstance(raw, dict):
        raise ConfigError("readings: must be a mapping of reading name -> {hub: {...}, head: ...}")
    readings = {}
    for name, value in raw.items():
        key = f"readings.{name}"
        if not isinstance(name, str) or not READING_NAME.match(name) or "frac" in name:
            raise ConfigError(f"{key}: a reading name is lower-case words joined by '-' (and never 'frac'), got {name!r}")
        reading = _build(ReadingConfig, value or {}, key)
        if reading.head is not None and reading.head not in HEADS:
            raise ConfigError(f"{key}.head: {reading.head!r} is not one of {', '.join(HEADS)}")
        _check_hub(_build(HubConfig, {**dataclasses.asdict(hub), **reading.hub}, f"{key}.hub"), f"{key}.hub")
        readings[name] = reading
    return readings


def expand_grid(grid: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The paper's Fig. 4 grid: every layer set x similarity becomes a setting named `l4-5-6-cos`."""
    if not isinstance(grid, list):
        raise ConfigError("grid: must be a list of {layer_sets, similarities} blocks")
    settings: dict[str, dict[str, Any]] = {}
    for i, block in enumerate(grid):
        key = f"grid[{i}]"
        if not isinstance(block, dict):
            raise ConfigError(f"{key}: must be a mapping with layer_sets and similarities")
        _reject_unknown(block, {"layer_sets", "similarities"}, key)
        layer_sets = block.get("layer_sets") or []
        similarities = block.get("similarities") or ["cos"]
        if not isinstance(layer_sets, list) or not all(isinstance(layers, list) for layers in layer_sets):
            raise ConfigError(f"{key}.layer_sets: must be a list of layer lists, e.g. [[4, 5, 6], [6, 8, 10]]")
        if not isinstance(similarities, list) or any(sim not in SIMILARITIES for sim in similarities):
            raise ConfigError(f"{key}.similarities: must be a list drawn from {', '.join(SIMILARITIES)}, got {similarities!r}")
        for layers in layer_sets:
            _check_layer_list(tuple(layers), f"{key}.layer_sets")
            for similarity in similarities:
                name = "l" + "-".join(str(n) for n in layers) + f"-{similarity}"
                settings[name] = {"variant": "mitp", "layers": list(layers), "similarity": similarity}
    return settings


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
    types = {f.name: f.type for f in dataclasses.fields(TrainConfig)}
    _reject_unknown(overrides, set(types), "train")
    checked = {name: _coerce(value, types[name], f"train.{name}") for name, value in overrides.items()}
    train = dataclasses.replace(project.train, **checked)
    _check_train(train, "train")
    if "epochs" in checked:
        dataset = dataclasses.replace(dataset, epochs=None)
    if lr is not None:
        lr = _coerce(lr, "float", "lr")
        if not lr > 0:
            raise ConfigError(f"lr: must be > 0, got {lr}")
        dataset = dataclasses.replace(dataset, lr=lr)
    if backbone is not None and (not isinstance(backbone, str) or not backbone):
        raise ConfigError("backbone: must be a Hugging Face CLIP name, a local path or 'preset:<name>'")
    hub, head = project.hub, setting.head or project.head
    if setting.reading is not None:
        reading = project.readings[setting.reading]
        hub = dataclasses.replace(hub, **reading.hub)
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
    return RunConfig(
        backbone=backbone or project.backbone,
        seed=project.seed if seed is None else _int(seed, "seed"),
        dataset_name=dataset_name,
        dataset=dataset,
        setting_name=setting_name,
        setting=setting,
        model=model,
        train=train,
    )


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


# ---------------------------------------------------------------------------------------------------
# helpers


def _parse_dataset(name: str, raw: Any) -> DatasetConfig:
    key = f"datasets.{name}"
    if not isinstance(raw, dict):
        raise ConfigError(f"{key}: must be a mapping")
    ds = _build(DatasetConfig, dict(raw), key)
    if ds.task not in TASKS:
        raise ConfigError(f"{key}.task: {ds.task!r} is not one of {', '.join(TASKS)}")
    if ds.source not in SOURCES:
        raise ConfigError(f"{key}.source: {ds.source!r} is not one of {', '.join(SOURCES)}")
    if ds.source == "prepared" and not ds.data_dir:
        raise ConfigError(f"{key}.data_dir: required for a prepared data set")
    _positive(ds.batch_size, f"{key}.batch_size")
    _positive(ds.prompt_length, f"{key}.prompt_length")
    _check_layer_list(ds.best_layers, f"{key}.best_layers")
    _check_layer_list(ds.small_layers, f"{key}.small_layers")
    if not ds.templates or any("{}" not in t for t in ds.templates):
        raise ConfigError(f"{key}.templates: each template must contain '{{}}' for the class name")
    for template in ds.templates:
        try:
            template.format("class name")
        except (ValueError, IndexError, KeyError) as err:
            raise ConfigError(f"{key}.templates: {template!r} is not a valid template ({err}); write literal braces as '{{{{' and '}}}}'") from err
    if ds.epochs is not None:
        _positive(ds.epochs, f"{key}.epochs")
    if ds.lr is not None and not ds.lr > 0:
        raise ConfigError(f"{key}.lr: must be > 0, got {ds.lr}")
    if ds.num_classes is not None:
        _positive(ds.num_classes, f"{key}.num_classes")
    if ds.source == "synthetic":
        _check_synthetic(ds.synthetic, f"{key}.synthetic")
    return ds


SYNTHETIC_OPTIONS = {"n_colours": int, "n_words": int, "noise": float, "sizes": dict}


def _check_synthetic(options: dict[str, Any], key: str) -> None:
    _reject_unknown(options, set(SYNTHETIC_OPTIONS), key)
    for name, kind in SYNTHETIC_OPTIONS.items():
        if name in options:
            _coerce(options[name], kind.__name__ if kind is not dict else "dict", f"{key}.{name}")
    for name in ("n_colours", "n_words"):
        if name in options and not 1 <= options[name] <= 6:
            raise ConfigError(f"{key}.{name}: must be 1..6, got {options[name]}")
    sizes = options.get("sizes", {})
    _reject_unknown(sizes, {"train", "val", "test"}, f"{key}.sizes")
    for split, size in sizes.items():
        _positive(size, f"{key}.sizes.{split}")


def _parse_setting(name: str, raw: Any, readings: dict[str, ReadingConfig]) -> SettingConfig:
    key = f"settings.{name}"
    if not isinstance(raw, dict):
        raise ConfigError(f"{key}: must be a mapping")
    setting = _build(SettingConfig, dict(raw), key)
    if setting.variant not in VARIANTS:
        raise ConfigError(f"{key}.variant: {setting.variant!r} is not one of {', '.join(VARIANTS)}")
    if setting.head is not None and setting.head not in HEADS:
        raise ConfigError(f"{key}.head: {setting.head!r} is not one of {', '.join(HEADS)}")
    if setting.reading is not None and setting.reading not in readings:
        allowed = ", ".join(readings) or "none are defined under readings"
        raise ConfigError(f"{key}.reading: {setting.reading!r} is not a reading of this config; allowed: {allowed}")
    if setting.similarity not in SIMILARITIES:
        raise ConfigError(
            f"{key}.similarity: {setting.similarity!r} is not one of {', '.join(SIMILARITIES)}"
        )
    if isinstance(setting.layers, str):
        if setting.layers not in LAYER_ALIASES:
            raise ConfigError(
                f"{key}.layers: {setting.layers!r} is not a list of layer numbers nor one of "
                f"{', '.join(LAYER_ALIASES)}"
            )
    else:
        _check_layer_list(setting.layers, f"{key}.layers")
    return setting


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


def _check_layer_list(layers: tuple[int, ...], key: str) -> None:
    if not layers:
        raise ConfigError(f"{key}: at least one layer number is needed")
    if any(not isinstance(n, int) or isinstance(n, bool) or n < 1 for n in layers):
        raise ConfigError(f"{key}: layer numbers are integers >= 1 (1 = first block), got {list(layers)}")
    if list(layers) != sorted(set(layers)):
        raise ConfigError(f"{key}: layer numbers must be strictly increasing, got {list(layers)}")


def _check_hub(hub: HubConfig, key: str) -> None:
    _positive(hub.width, f"{key}.width")
    _positive(hub.mmd_features, f"{key}.mmd_features")
    if hub.gate not in GATES:
        raise ConfigError(f"{key}.gate: {hub.gate!r} is not one of {', '.join(GATES)}")
    if hub.map not in HUB_MAPS:
        raise ConfigError(f"{key}.map: {hub.map!r} is not one of {', '.join(HUB_MAPS)}")
    if hub.scale not in HUB_SCALES:
        raise ConfigError(f"{key}.scale: {hub.scale!r} is not one of {', '.join(HUB_SCALES)}")
    if not hub.mmd_bandwidth > 0:
        raise ConfigError(f"{key}.mmd_bandwidth: must be > 0, got {hub.mmd_bandwidth}")


def _check_train(train: TrainConfig, key: str) -> None:
    if train.optimizer != "adam":
        raise ConfigError(f"{key}.optimizer: {train.optimizer!r} is not one of adam")
    if not train.lr > 0:
        raise ConfigError(f"{key}.lr: must be > 0, got {train.lr}")
    if not train.class_bias_lr > 0:
        raise ConfigError(f"{key}.class_bias_lr: must be > 0, got {train.class_bias_lr}")
    _positive(train.epochs, f"{key}.epochs")
    _positive(train.eval_batch_size, f"{key}.eval_batch_size")
    _positive(train.keep_checkpoints, f"{key}.keep_checkpoints")
    if train.num_workers < 0:
        raise ConfigError(f"{key}.num_workers: must be >= 0, got {train.num_workers}")
    if train.precision not in PRECISIONS:
        raise ConfigError(f"{key}.precision: {train.precision!r} is not one of {', '.join(PRECISIONS)}")
    if not 0 < train.fraction <= 1:
        raise ConfigError(f"{key}.fraction: must be in (0, 1], got {train.fraction}")
    if train.max_steps_per_epoch is not None:
        _positive(train.max_steps_per_epoch, f"{key}.max_steps_per_epoch")
    if train.grad_clip is not None and not train.grad_clip > 0:
        raise ConfigError(f"{key}.grad_clip: must be > 0 (or null for none), got {train.grad_clip}")
    if not train.weight_decay >= 0:
        raise ConfigError(f"{key}.weight_decay: must be >= 0, got {train.weight_decay}")


def _build(cls: type, raw: Any, key: str) -> Any:
    """Instantiate a config dataclass from a mapping, rejecting unknown keys and wrong types."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{key}: must be a mapping")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    _reject_unknown(raw, set(fields), key)
    values = {}
    for name, value in raw.items():
        values[name] = _coerce(value, fields[name].type, f"{key}.{name}" if key else name)
    try:
        return cls(**values)
    except TypeError as err:
        missing = [f for f, spec in fields.items() if f not in raw and _required(spec)]
        raise ConfigError(f"{key}: missing required key(s) {', '.join(missing)}") from err


def _coerce(value: Any, type_name: Any, key: str) -> Any:
    """Check one value against its field's declared type (YAML gives ints where floats are meant: accepted)."""
    type_name = str(type_name)
    if type_name.endswith(" | None"):
        if value is None:
            return None
        type_name = type_name.removesuffix(" | None")
    if type_name == "int":
        return _int(value, key)
    if type_name == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if type_name == "str":
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    if type_name == "tuple[int, ...] | str" and isinstance(value, str):
        return value
    if type_name.startswith("tuple[int"):
        if not isinstance(value, list) or any(isinstance(v, bool) or not isinstance(v, int) for v in value):
            raise ConfigError(f"{key}: expected a list of integers, e.g. [4, 5, 6], got {value!r}")
        return tuple(value)
    if type_name.startswith("tuple[str"):
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{key}: expected a list of strings, got {value!r}")
        return tuple(value)
    if type_name.startswith("dict") and not isinstance(value, dict):
        raise ConfigError(f"{key}: expected a mapping, got {value!r}")
    return value


def _required(spec: dataclasses.Field) -> bool:
    return spec.default is dataclasses.MISSING and spec.default_factory is dataclasses.MISSING


def _reject_unknown(raw: dict[str, Any], allowed: set[str], key: str) -> None:
    unknown = sorted(set(raw) - allowed)
    if unknown:
        where = f"{key}: " if key else ""
        raise ConfigError(f"{where}unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}")


def _int(value: Any, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    return value


def _positive(value: Any, key: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{key}: must be an integer >= 1, got {value!r}")
