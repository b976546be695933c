"""Load the frozen CLIP backbone: a Hugging Face name, a local `save_pretrained` folder, or a preset.

Presets are architecture configs shipped inside the package (no weights): `preset:vit-l-14`,
`preset:vit-b-16`, `preset:vit-b-32` and the test-sized `preset:tiny`. They give random-weight models,
so parameter counts, tests and benchmarks work offline. The backbone is never edited: mitp wraps it.

A hub name is read from the local Hugging Face cache when it is there. Otherwise it is downloaded,
after one quick request that turns "no such model" and "no network" into one clear message each
(transformers would retry for half a minute and print pages). With HF_HUB_OFFLINE=1 an uncached name
fails at once. `fetch_backbone` saves a hub backbone into a local folder (weights and tokenizer.json) for
machines that have no internet, such as cluster compute nodes.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import CLIPConfig, CLIPModel, CLIPTextConfig, CLIPVisionConfig

from ..config import ConfigError
from ..files.atomic import atomic_write_json
from ..runtime.tokenizer import ClipTokenizer, build_word_tokenizer, load_tokenizer_file
from .presets import HUB_PRESETS, PRESET_PREFIX, preset_dict

TOKENIZER_FILE = "tokenizer.json"
ORIGIN_FILE = "mitp_backbone.json"  # what `mitp fetch-backbone` saved: {"hub_id": ORG/NAME}


@dataclass
class Backbone:
    clip: CLIPModel
    tokenizer: ClipTokenizer
    spec: str


def preset_config(name: str) -> CLIPConfig:
    """The shipped architecture config of a preset (no weights)."""
    return CLIPConfig.from_dict(preset_dict(name))


def _is_local(spec: str) -> bool:
    return Path(spec).is_dir() or spec.startswith((".", "/", "~"))


def architecture_config(spec: str) -> CLIPConfig:
    """The architecture of a backbone spec without loading weights, offline where possible."""
    if spec.startswith(PRESET_PREFIX):
        return preset_config(spec.removeprefix(PRESET_PREFIX))
    if spec in HUB_PRESETS:
        return preset_config(HUB_PRESETS[spec])
    if _is_local(spec):
        if not (Path(spec) / "config.json").is_file():
            raise ConfigError(f"backbone: {spec} is not a CLIP folder saved with save_pretrained (no config.json)")
        return CLIPConfig.from_pretrained(spec)
    ensure_hub_backbone(spec)
    return CLIPConfig.from_pretrained(spec)


def towers(arch: CLIPConfig) -> tuple[CLIPTextConfig, CLIPVisionConfig]:
    """The text and vision towers' configs, typed (transformers declares them `dict | config | None`)."""
    text, vision = arch.text_config, arch.vision_config
    if not isinstance(text, CLIPTextConfig) or not isinstance(vision, CLIPVisionConfig):
        raise ConfigError("backbone: its config has no text and vision tower configs; is it a CLIP model?")
    return text, vision


def crop_size(arch: CLIPConfig) -> int:
    """The vision tower's square input size in pixels."""
    size = towers(arch)[1].image_size
    if not isinstance(size, int):
        raise ConfigError(f"backbone: the vision tower's image_size is {size!r}; mitp needs one square size")
    return size


def text_eos_id(arch: CLIPConfig) -> int:
    """The text config's eos id (OpenAI's real configs carry a legacy 2 there; the tokenizer's is used to read)."""
    eos = towers(arch)[0].eos_token_id
    return eos if isinstance(eos, int) else 2


def image_size_of(spec: str) -> int:
    return crop_size(architecture_config(spec))


def ensure_hub_backbone(name: str) -> None:
    """Make sure the hub backbone `name` can be loaded: cached, or reachable; a clear ConfigError if not."""
    from huggingface_hub import constants, model_info
    from huggingface_hub.errors import RepositoryNotFoundError

    try:
        CLIPConfig.from_pretrained(name, local_files_only=True)
        return  # in the local cache
    except OSError:
        pass
    parent = Path(name).parent
    if name.startswith(("./", "../", "/", "~")) or Path(name).parts[0] == "models" or (str(parent) != "." and parent.is_dir()):
        raise ConfigError(  # a path whose folder does not exist (yet), not a hub name
            f"backbone {name!r} is not a folder here"
            + (": the demo's stand-in CLIP is made by `mitp pretrain-standin --out models/standin` (the demo workflow runs it)" if "standin" in name else "")
            + "; give an existing save_pretrained folder, a Hugging Face name, or preset:<name>"
        )
    if constants.HF_HUB_OFFLINE:
        raise ConfigError(
            f"backbone {name!r} is neither a local folder nor in the local Hugging Face cache, and HF_HUB_OFFLINE=1 "
            f"forbids downloading it: "
            f"on a machine with internet run `mitp fetch-backbone {name} --out models/<folder>` and pass that folder "
            f"as the backbone, or unset HF_HUB_OFFLINE"
        )
    try:
        model_info(name, timeout=15)
    except RepositoryNotFoundError as err:
        raise ConfigError(f"backbone {name!r} is neither a local folder nor a model on the Hugging Face hub") from err
    except Exception as err:  # connection refused, DNS, timeouts: the hub cannot be reached
        raise ConfigError(
            f"backbone {name!r}: cannot reach the Hugging Face hub ({type(err).__name__}: {err}). If this machine is "
            f"offline, fetch the backbone elsewhere with `mitp fetch-backbone {name} --out models/<folder>` and pass "
            f"the folder; with a cached copy, set HF_HUB_OFFLINE=1"
        ) from err


def load_tokenizer(spec: str) -> ClipTokenizer:
    """The backbone's tokenizer alone (no weights): a preset's word tokenizer, or its tokenizer.json."""
    if spec.startswith(PRESET_PREFIX):
        preset_dict(spec.removeprefix(PRESET_PREFIX))  # an unknown preset fails here
        return build_word_tokenizer()
    if _is_local(spec):
        path = Path(spec) / TOKENIZER_FILE
        if not path.is_file():
            raise ConfigError(f"backbone: {spec} has no {TOKENIZER_FILE} (save one beside the weights, as `mitp fetch-backbone` does)")
        return load_tokenizer_file(path)
    from huggingface_hub import hf_hub_download

    ensure_hub_backbone(spec)
    return load_tokenizer_file(hf_hub_download(spec, TOKENIZER_FILE))


def load_backbone(spec: str, seed: int = 0) -> Backbone:
    """Load a frozen CLIP and its tokenizer. Presets get random weights drawn from `seed`."""
    tokenizer = load_tokenizer(spec)
    if spec.startswith(PRESET_PREFIX):
        config = preset_config(spec.removeprefix(PRESET_PREFIX))
        config._attn_implementation = "sdpa"
        torch.manual_seed(seed)
        clip = CLIPModel(config)
    else:
        architecture_config(spec)  # clear errors for a bad folder or an unreachable hub name
        clip = CLIPModel.from_pretrained(spec, attn_implementation="sdpa")
    text_tower = towers(clip.config)[0]
    if tokenizer.vocab_size > text_tower.vocab_size:
        raise ConfigError(f"backbone: the tokenizer has {tokenizer.vocab_size} tokens but the text tower only {text_tower.vocab_size}")
    return Backbone(freeze(clip), tokenizer, spec)


def fetch_backbone(name: str, out: Path) -> Path:
    """Save hub backbone `name` (weights as safetensors, config, tokenizer.json) into the folder `out`,
    so that machines without internet load it with HF_HUB_OFFLINE=1. Written aside and swapped in."""
    from huggingface_hub import hf_hub_download

    from ..files.outputs import build_output, claim

    claim(Path(out), "backbone", inputs=(Path(name),) if _is_local(name) else ())
    if not _is_local(name):
        ensure_hub_backbone(name)
    tokenizer = Path(name) / TOKENIZER_FILE if _is_local(name) else Path(hf_hub_download(name, TOKENIZER_FILE))
    load_tokenizer_file(tokenizer)  # a tokenizer mitp can use, before the weights are copied
    with build_output(Path(out), "backbone", inputs=(Path(name),) if _is_local(name) else ()) as tmp:
        CLIPModel.from_pretrained(name).save_pretrained(tmp)
        shutil.copyfile(tokenizer, tmp / TOKENIZER_FILE)
        atomic_write_json(tmp / ORIGIN_FILE, {"hub_id": hub_id(name)})
    return Path(out)


def hub_id(spec: str) -> str | None:
    """The Hugging Face id of a backbone's weights: the name itself, the one `mitp fetch-backbone` recorded
    in a local folder, or None (a preset, a folder of unknown origin). Releases name it as their base model."""
    if spec.startswith(PRESET_PREFIX):
        return None
    if not _is_local(spec):
        return spec
    try:
        recorded = json.loads((Path(spec) / ORIGIN_FILE).read_text()).get("hub_id")
    except (OSError, ValueError, AttributeError):
        return None
    return recorded if isinstance(recorded, str) else None


def freeze(clip: CLIPModel) -> CLIPModel:
    """No gradients and eval mode for every backbone weight; mitp trains only its own modules."""
    clip.requires_grad_(False)
    return clip.eval()
