"""The stand-in backbone for the offline twins: a small CLIP, contrastively pre-trained on the CPU.

Random CLIP weights know nothing, so class-template embeddings would be noise. The stand-in is the
`tiny` architecture preset trained for a few CPU minutes with CLIP's own contrastive loss
(`CLIPModel(..., return_loss=True)`) on rendered pairs where *both* factors of a twin class, the
colour and the pattern, are visible in the image and named in the caption. Otherwise the text tower
learns to ignore the factor that twin images do not show, and class embeddings of different classes
coincide (see docs/decisions.md §9). The result is saved with `save_pretrained` plus its `tokenizer.json`, and
loads like any Hugging Face backbone: `--backbone <dir>`.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..data.twins import COLOURS, FOOD_WORDS, GREY, MOVIE_WORDS, NLI_WORDS, PATTERNS, render, vocabulary
from ..files.outputs import build_output, claim
from ..runtime.preprocess import preprocess_image
from ..runtime.tokenizer import ClipTokenizer, build_word_tokenizer
from .backbone import crop_size, preset_config


@dataclass(frozen=True)
class StandinConfig:
    preset: str = "tiny"
    steps: int = 500
    batch_size: int = 128
    lr: float = 2e-3
    warmup: int = 30
    pool_size: int = 6000
    seed: int = 0


TEMPLATES = ("{}", "{}", "a photo of {}, a type of food.", "a poster of a {} movie.", "the image and the sentence are in {}.")
VERDICTS = ("entailment", "neutral", "contradiction")


@dataclass(frozen=True)
class Scene:
    colour: str
    patterns: tuple[str, ...]


def render_pool(rng: np.random.Generator, n: int, image_size: int) -> tuple[np.ndarray, list[Scene]]:
    """n rendered scenes (n, 3, S, S), CLIP-normalised; one in five is grey, as twin images are."""
    images, scenes = [], []
    for _ in range(n):
        patterns = tuple(str(p) for p in rng.choice(PATTERNS, rng.integers(1, 3), replace=False))
        colour = GREY if rng.random() < 0.2 else str(rng.choice(COLOURS))
        images.append(preprocess_image(Image.fromarray(render(list(patterns), colour, rng)), image_size))
        scenes.append(Scene(colour, patterns))
    return np.stack(images), scenes


def caption(rng: np.random.Generator, scene: Scene) -> str:
    """A caption naming the scene's colour and pattern(s) (a grey scene may go unnamed), wrapped in
    filler or a twin template; one in six is a verdict on a claim, as SNLI-VE hypotheses are."""
    pattern_words = " and ".join(scene.patterns)
    if rng.random() < 1 / 6:
        key = _verdict(rng, scene)
    elif scene.colour == GREY and rng.random() < 0.5:
        key = pattern_words
    else:
        key = f"{scene.colour} {pattern_words}"
    template = TEMPLATES[rng.integers(len(TEMPLATES))]
    if template != "{}":
        return template.format(key)
    words = list(rng.choice((FOOD_WORDS, MOVIE_WORDS, NLI_WORDS)[rng.integers(3)], rng.integers(0, 4)))
    words.insert(int(rng.integers(0, len(words) + 1)), key)
    return " ".join(words)


def _verdict(rng: np.random.Generator, scene: Scene) -> str:
    """A claim and whether the image supports it: a pattern shown (entailment) or not (contradiction),
    or a colour of a grey image (neutral)."""
    choice = rng.integers(3)
    if choice == 0 and scene.colour == GREY:
        return f"{rng.choice(COLOURS)} neutral"
    if choice == 1:
        return f"{rng.choice(scene.patterns)} entailment"
    absent = [p for p in PATTERNS if p not in scene.patterns]
    return f"{rng.choice(absent)} contradiction"


def pretrain_standin(out: Path, config: StandinConfig = StandinConfig(), log=print) -> dict[str, float]:
    """Train the stand-in CLIP and write it (save_pretrained + tokenizer.json) atomically to `out`."""
    from transformers import CLIPModel

    claim(Path(out), "standin")
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    tokenizer = build_word_tokenizer(vocabulary())
    arch = preset_config(config.preset)
    arch._attn_implementation = "sdpa"
    clip = CLIPModel(arch).train()
    image_size = crop_size(arch)
    optimizer = torch.optim.AdamW(clip.parameters(), lr=config.lr, weight_decay=0.05)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: _lr_factor(step, config))
    start, losses = time.perf_counter(), []
    pool, scenes = render_pool(rng, config.pool_size, image_size)  # (P, 3, S, S)
    for step in range(config.steps):
        index = rng.choice(len(scenes), config.batch_size, replace=False)
        ids, mask = tokenizer([caption(rng, scenes[i]) for i in index])  # (B, 77) each
        length = int(mask.sum(axis=1).max())  # the longest caption: padding past it is never attended to
        ids, mask = ids[:, :length], mask[:, :length]  # (B, T), a sixth of the text tower's work
        loss = clip(
            input_ids=torch.from_numpy(ids),
            attention_mask=torch.from_numpy(mask),
            pixel_values=torch.from_numpy(pool[index]),
            return_loss=True,
        ).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
        if (step + 1) % 50 == 0:
            log(f"stand-in step {step + 1}/{config.steps}: contrastive loss {np.mean(losses[-50:]):.3f}")
    summary = {"final_loss": float(np.mean(losses[-50:])), "seconds": time.perf_counter() - start, "steps": config.steps}
    save_standin(clip.eval(), tokenizer, out)
    return summary


def _lr_factor(step: int, config: StandinConfig) -> float:
    if step < config.warmup:
        return (step + 1) / config.warmup
    progress = (step - config.warmup) / max(1, config.steps - config.warmup)
    return 0.5 * (1 + math.cos(math.pi * progress))


def save_standin(clip, tokenizer: ClipTokenizer, out: Path) -> None:
    """save_pretrained + tokenizer.json into a temporary folder, then swap it in (never half-written)."""
    with build_output(out, "standin") as tmp:
        clip.save_pretrained(tmp)
        tokenizer.save(tmp / "tokenizer.json")
