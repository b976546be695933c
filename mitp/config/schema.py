"""The Snakemake schema of config.yaml, generated from ProjectConfig (`python -m mitp.config`)."""

from __future__ import annotations

from typing import Any

import yaml

from .models import ProjectConfig


def snakemake_schema() -> dict[str, Any]:
    """The JSON schema Snakemake validates config.yaml with, generated from `ProjectConfig`: the same
    keys, types, choices and bounds (cross-field rules are mitp's alone). The workflow needs its block."""
    schema = _tidy(ProjectConfig.model_json_schema())
    schema["properties"]["workflow"] = {"$ref": "#/$defs/WorkflowConfig"}
    schema["required"] = sorted({*schema.get("required", []), "workflow"})
    schema["description"] = (
        "mitp project config (config.yaml). GENERATED from mitp/config/models.py by "
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
