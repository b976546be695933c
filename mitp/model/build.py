"""Build a variant's model: the registry (mitp.config.variants) names its family, this module maps the
family to its class, the way peft maps a method's config to its module."""

from __future__ import annotations

import copy

import torch
from torch import nn
from transformers import CLIPConfig, CLIPModel

from ..config import ModelConfig, variant
from .backbone import text_eos_id, towers
from .base import PromptedCLIP
from .deep import DeepPromptCLIP
from .probe import LinearProbeCLIP
from .temporal import TemporalPromptCLIP

FAMILIES: dict[str, type[PromptedCLIP]] = {"temporal": TemporalPromptCLIP, "deep": DeepPromptCLIP, "probe": LinearProbeCLIP}


def prompted_clip(clip: CLIPModel, config: ModelConfig, num_classes: int, eos_token_id: int) -> PromptedCLIP:
    """The model of `config.variant` over the frozen `clip` (which it wraps, never edits)."""
    return FAMILIES[variant(config.variant).family](clip, config, num_classes, eos_token_id)


def effective_parameter_names(config: ModelConfig, arch: CLIPConfig, num_classes: int) -> set[str]:
    """The trainable parameters of `config` on backbone `arch` that receive a gradient. Which ones a
    gradient reaches depends on the wiring (layer counts, prompt slots, head), not on widths, so it is
    found on a width-8 twin of `arch` with the same layer counts: a tenth of a second even for ViT-L/14."""
    twin = copy.deepcopy(arch)
    text, vision = towers(twin)
    for tower in (text, vision):
        tower.hidden_size, tower.intermediate_size, tower.num_attention_heads = 8, 8, 1
    vision.image_size = vision.patch_size  # one patch
    twin.projection_dim = text.projection_dim = vision.projection_dim = 8
    twin._attn_implementation = "sdpa"
    config = config.model_copy(update={"hub": config.hub.model_copy(update={"width": 2, "mmd_features": 2})})
    model = prompted_clip(CLIPModel(twin).requires_grad_(False), config, num_classes, text_eos_id(arch))
    model.class_embeddings = nn.functional.normalize(torch.randn(num_classes, 8), dim=-1)
    model.class_prompt_ids = torch.zeros(num_classes, 1, dtype=torch.long)  # one token per class prompt
    model.class_prompt_lengths = torch.ones(num_classes, dtype=torch.long)
    return model.train().parameters_receiving_gradients()
