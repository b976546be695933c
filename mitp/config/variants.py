"""The model variants, named once: what each is built from and what it needs.

Every other module asks this registry instead of testing a variant's name. A variant is a `family` (the
module of mitp.model that builds it), an `exchange` (what happens to the prompts between interaction
layers, mitp.model.hub), what its `layers` mean, and whether it brings its own head:

    name              family     exchange     layers        head
    mitp              temporal   memory-hub   interaction   the configured one
    prompts-only      temporal   none         interaction   the configured one
    mlp-interaction   temporal   mlp          interaction   the configured one
    p-clip            deep       none         every-block   the configured one
    linear-probe      probe      none         none          linear (its own, with its bias)

`interaction` layers are the paper's l: both towers get prompts there, and the vision tower needs one more
block after the last to receive the hub's output. `every-block` layers are VPT-deep's prompted blocks
(`all`, or a list, in each tower). Torch-free: the config, the report and the workflow read it too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Family = Literal["temporal", "deep", "probe"]
ExchangeKind = Literal["memory-hub", "mlp", "none"]
LayerNeeds = Literal["interaction", "every-block", "none"]


@dataclass(frozen=True)
class VariantSpec:
    name: str
    family: Family
    exchange: ExchangeKind
    layers: LayerNeeds
    own_head: str | None = None  # a head the variant always reads logits with, whatever the config's `head`

    def head(self, configured: str) -> str:
        """The head this variant reads logits with, given the config's."""
        return self.own_head or configured

    @property
    def has_layers(self) -> bool:
        return self.layers != "none"

    @property
    def has_interaction(self) -> bool:
        """Temporal prompts carried from one interaction layer to the next (the readings compare these)."""
        return self.family == "temporal"

    @property
    def learns_class_bias(self) -> bool:
        """Multi-label runs learn a per-class bias, except where the head has its own (linear)."""
        return self.own_head is None

    def layer_limit(self, text_layers: int, vision_layers: int) -> int:
        """The highest layer number a setting may name on a backbone with these block counts."""
        if self.layers == "every-block":
            return min(text_layers, vision_layers)
        return min(text_layers, vision_layers - 1)  # the hub's last output enters the next vision block


VARIANTS: dict[str, VariantSpec] = {
    spec.name: spec
    for spec in (
        VariantSpec("mitp", "temporal", "memory-hub", "interaction"),
        VariantSpec("prompts-only", "temporal", "none", "interaction"),
        VariantSpec("mlp-interaction", "temporal", "mlp", "interaction"),
        VariantSpec("p-clip", "deep", "none", "every-block"),
        VariantSpec("linear-probe", "probe", "none", "none", own_head="linear"),
    )
}


def variant(name: str) -> VariantSpec:
    """The registry's entry for `name` (a validated config's variant always has one)."""
    if name not in VARIANTS:
        raise KeyError(f"unknown variant {name!r}; known: {', '.join(VARIANTS)}")
    return VARIANTS[name]
