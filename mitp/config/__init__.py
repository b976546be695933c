"""Typed, frozen configuration for mitp, defined once and checked before any work starts.

`config.yaml` holds the paper's whole setup: the backbone, per-data-set hyper-parameters, the training
options, a grid of named settings and the workflow's runs. The pydantic models (`models`) are its only
definition: validation is strict (a YAML string is never quietly read as a number, unknown keys are
refused), the Snakemake schema `workflow/schemas/config.schema.yaml` is generated from them
(`python -m mitp.config > workflow/schemas/config.schema.yaml`; a test keeps the two equal), and every bad
value raises `ConfigError` with one line naming the key, the value and what is allowed (`validation`).
`resolve_run` (`runs`) turns one (data set, setting) pair into a `RunConfig`, the single object the model,
trainer and evaluator read. The model variants and what each needs are named once, in `variants`.

    types       the choices, shared value types, the strict base block, ConfigError
    variants    the variant registry (torch-free)
    validation  pydantic errors as one line
    models      the blocks of config.yaml; ModelConfig and RunConfig; grid and readings as settings
    loading     safe YAML, load_config
    runs        a run's seeds in the workflow, resolve_run, layer checks
    schema      the generated Snakemake schema
"""

from .loading import MAX_CONFIG_BYTES, load_config, parse_config, read_yaml, read_yaml_mapping
from .models import (
    COMPARED_WITH_READINGS,
    READING_BASE,
    DatasetConfig,
    GridBlock,
    HubConfig,
    ModelConfig,
    ProjectConfig,
    ReadingConfig,
    RunConfig,
    SettingConfig,
    TrainConfig,
    WorkflowConfig,
    expand_grid,
    expand_readings,
    grid_setting,
    reading_setting,
)
from .runs import check_layers_fit, resolve_run, run_seeds
from .schema import schema_yaml, snakemake_schema
from .types import HEADS, READING_NAME, VARIANTS, ConfigError, Fraction, Seed, Variant, _Section
from .validation import validated
from .variants import VariantSpec, variant

__all__ = [
    "COMPARED_WITH_READINGS", "HEADS", "MAX_CONFIG_BYTES", "READING_BASE", "READING_NAME", "VARIANTS", "ConfigError",
    "DatasetConfig", "Fraction", "GridBlock", "HubConfig", "ModelConfig", "ProjectConfig", "ReadingConfig", "RunConfig",
    "Seed", "SettingConfig", "TrainConfig", "Variant", "VariantSpec", "WorkflowConfig", "_Section", "check_layers_fit",
    "expand_grid", "expand_readings", "grid_setting", "load_config", "parse_config", "read_yaml", "read_yaml_mapping", "reading_setting",
    "resolve_run", "run_seeds", "schema_yaml", "snakemake_schema", "validated", "variant",
]
