"""Backbone architectures shipped as CLIP configs (no weights), readable without torch or transformers.

`preset:vit-l-14`, `preset:vit-b-16`, `preset:vit-b-32` and the test-sized `preset:tiny` give random-weight
models (mitp.model.backbone), so parameter counts, tests and benchmarks work offline. The OpenAI hub names whose
architecture equals a preset are known here too, so their sizes need no download.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

from ...config import ConfigError

PRESETS = ("vit-l-14", "vit-b-16", "vit-b-32", "tiny")
PRESET_PREFIX = "preset:"
HUB_PRESETS = {
    "openai/clip-vit-large-patch14": "vit-l-14",
    "openai/clip-vit-base-patch16": "vit-b-16",
    "openai/clip-vit-base-patch32": "vit-b-32",
}


def preset_dict(name: str) -> dict[str, Any]:
    """The shipped CLIPConfig of a preset, as a plain dict."""
    if name not in PRESETS:
        raise ConfigError(f"backbone: unknown preset {name!r}; allowed: {', '.join(PRESET_PREFIX + p for p in PRESETS)}")
    return json.loads(resources.files(__name__).joinpath(f"{name}.json").read_text())


def known_image_size(spec: str) -> int | None:
    """The input size of a backbone spec where it is known offline (a preset, an OpenAI name with a preset, a
    folder on disk); None for other hub names."""
    if spec.startswith(PRESET_PREFIX) or spec in HUB_PRESETS:
        config = preset_dict(spec.removeprefix(PRESET_PREFIX) if spec.startswith(PRESET_PREFIX) else HUB_PRESETS[spec])
    elif (Path(spec) / "config.json").is_file():
        config = json.loads((Path(spec) / "config.json").read_text())
    else:
        return None
    return config["vision_config"]["image_size"]
