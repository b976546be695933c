"""The vocabulary of config.yaml: the choices, the value types shared by its blocks, the strict base block
and ConfigError. Everything else in mitp.config is built from these."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, get_args

from pydantic import AfterValidator, BaseModel, ConfigDict, Discriminator, Field, Tag, model_validator

from ..errors import MitpError

# ---------------------------------------------------------------------------------------------------
# the choices

Variant = Literal["mitp", "prompts-only", "mlp-interaction", "p-clip", "linear-probe"]  # = the registry's names (config/variants.py; a test checks)
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
