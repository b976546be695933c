"""The parameter budget of a run: trainable, effective (reached by a gradient) and frozen counts, on the
backbone's architecture with no weights downloaded (the model is built on the meta device)."""

from __future__ import annotations

from typing import Any

import torch
from transformers import CLIPModel

from ..config import RunConfig
from ..data.dataset import num_classes
from .backbone import architecture_config, text_eos_id
from .build import effective_parameter_names, prompted_clip


def parameter_budget(run: RunConfig) -> dict[str, Any]:
    """Build the model on the meta device (no weights, no memory) and count its parameters, all of them
    and those that receive a gradient in this setting."""
    arch = architecture_config(run.backbone)
    arch._attn_implementation = "sdpa"
    with torch.device("meta"):
        clip = CLIPModel(arch).requires_grad_(False)
        model = prompted_clip(clip, run.model, num_classes(run), text_eos_id(arch))
    effective = effective_parameter_names(run.model, arch, num_classes(run))
    by_module: dict[str, int] = {}
    for name, param in model.trainable_parameters().items():
        by_module[name.split(".")[0]] = by_module.get(name.split(".")[0], 0) + param.numel()
    return {
        "dataset": run.dataset_name,
        "setting": run.setting_name,
        "variant": run.model.variant,
        "head": run.model.effective_head,
        "layers": [i + 1 for i in model.layer_ids],
        "text_layers": [i + 1 for i in model.text_layer_ids],
        "vision_layers": [i + 1 for i in model.vision_layer_ids],
        "similarity": run.model.similarity if model.spec.exchange == "memory-hub" else "-",
        "reading": run.model.reading(),
        "prompt_length": run.model.prompt_length,
        "backbone": run.backbone,
        "trainable_params": model.count_trainable(),
        "effective_trainable_params": sum(p.numel() for name, p in model.trainable_parameters().items() if name in effective),
        "backbone_params": model.count_backbone(),
        "trainable_by_module": by_module,
    }
