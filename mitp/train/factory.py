"""Build a ready-to-run MITP model for a run: backbone, class embeddings, and trained weights if any."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..config import RunConfig
from ..model.backbone import Backbone, crop_size, load_backbone
from ..model.base import PromptedCLIP
from ..model.build import prompted_clip
from ..model.heads import PER_CLASS
from .checkpoint import load_checkpoint, resolve_checkpoint


def build_model(run: RunConfig, backbone: Backbone, classes: list[str]) -> PromptedCLIP:
    """A fresh model (trainable parts drawn from the run's seed) with cached class embeddings."""
    torch.manual_seed(run.seed)
    model = prompted_clip(backbone.clip, run.model, len(classes), backbone.tokenizer.info.eos_token_id)
    templates = run.dataset.templates
    texts = [template.format(class_phrase(name)) for name in classes for template in templates]  # class-major
    ids, mask = backbone.tokenizer(texts)
    model.set_class_embeddings(torch.from_numpy(ids), torch.from_numpy(mask), len(templates))
    if model.head.text_input == PER_CLASS:  # the first template, once per class, follows each caption
        ids, mask = backbone.tokenizer([templates[0].format(class_phrase(name)) for name in classes])
        model.set_class_prompts(torch.from_numpy(ids), torch.from_numpy(mask))
    return model


def class_phrase(name: str) -> str:
    """How a class name reads inside a template: Food101's `apple_pie` becomes `apple pie`."""
    return name.replace("_", " ")


def load_trained(checkpoint: str | Path) -> tuple[PromptedCLIP, RunConfig, Backbone, dict[str, Any]]:
    """Rebuild a trained model from a run directory (its best checkpoint) or a checkpoint directory."""
    directory = resolve_checkpoint(Path(checkpoint))
    trainable, run, state = load_checkpoint(directory)
    backbone = load_backbone(run.backbone, seed=run.seed)
    model = build_model(run, backbone, state["classes"])
    model.load_trainable_state_dict(trainable)
    return model.eval(), run, backbone, {**state, "checkpoint": str(directory)}


def image_size(backbone: Backbone) -> int:
    return crop_size(backbone.clip.config)
