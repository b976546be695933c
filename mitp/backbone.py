"""Load the frozen CLIP backbone: a Hugging Face name, a local `save_pretrained` folder, or a preset.

Presets are architecture configs shipped inside the package (no weights): `preset:vit-l-14`,
`preset:vit-b-16`, `preset:vit-b-32` and the test-sized `preset:tiny`. They give random-weight models,
so parameter counts, tests and benchmarks work offline. The backbone is never edited: mitp wraps it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import torch
from transformers import CLIPConfig, CLIPModel

from .runtime.tokenizer import ClipTokenizer, build_word_tokenizer, load_hub_tokenizer, load_tokenizer_file

PRESETS = ("vit-l-14", "vit-b-16", "vit-b-32", "tiny")
# Hub names whose architecture equals a preset: their configs (and parameter counts) need no download.
HUB_PRESETS = {
    "openai/clip-vit-large-patch14": "vit-l-14",
    "openai/clip-vit-base-patch16": "vit-b-16",
    "openai/clip-vit-base-patch32": "vit-b-32",
}
PRESET_PREFIX = "preset:"


@dataclass
class Backbone:
    clip: CLIPModel
    tokenizer: ClipTokenizer
    spec: str


def preset_config(name: str) -> CLIPConfig:
    """The shipped architecture config of a preset (no weights)."""
    if name not in PRESETS:
        raise ValueError(f"unknown backbone preset {name!r}; allowed: {', '.join(PRESETS)}")
    text = resources.files("mitp.presets").joinpath(f"{name}.json").read_text()
    return CLIPConfig.from_dict(json.loads(text))


def architecture_config(spec: str) -> CLIPConfig:
    """The architecture of a backbone spec without loading weights, offline where possible."""
    if spec.startswith(PRESET_PREFIX):
        return preset_config(spec.removeprefix(PRESET_PREFIX))
    if spec in HUB_PRESETS:
        return preset_config(HUB_PRESETS[spec])
    return CLIPConfig.from_pretrained(spec)  # local folder, or a config download from the hub


def load_backbone(spec: str, seed: int = 0) -> Backbone:
    """Load a frozen CLIP and its tokenizer. Presets get random weights drawn from `seed`."""
    if spec.startswith(PRESET_PREFIX):
        config = preset_config(spec.removeprefix(PRESET_PREFIX))
        config._attn_implementation = "sdpa"
        torch.manual_seed(seed)
        clip = CLIPModel(config)
        tokenizer = build_word_tokenizer()
    else:
        clip = CLIPModel.from_pretrained(spec, attn_implementation="sdpa")
        local = Path(spec) / "tokenizer.json"
        tokenizer = load_tokenizer_file(local) if local.is_file() else load_hub_tokenizer(spec)
    if tokenizer.vocab_size > clip.config.text_config.vocab_size:
        raise ValueError(
            f"tokenizer has {tokenizer.vocab_size} tokens but the backbone's text tower only "
            f"{clip.config.text_config.vocab_size}"
        )
    return Backbone(freeze(clip), tokenizer, spec)


def freeze(clip: CLIPModel) -> CLIPModel:
    """No gradients and eval mode for every backbone weight; mitp trains only its own modules."""
    clip.requires_grad_(False)
    return clip.eval()


def count_parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
