"""How class logits are read from the prompted towers (paper Eq. 7): one small interface, four heads.

Each head declares what it needs of the text tower (`text_input`) and maps the image embedding v (B, P)
and that text output to logits (B, K). Every head runs in fp32 with autocast off: bf16 logits at CLIP's
scale of 100 come in steps of 0.125-0.25 and flip top-1 on near ties.
- `fused` (default): t = the prompted caption's embedding (B, P); e = normalize(normalize(v) + normalize(t));
  logits = scale x cos(e, z_k), z_k the frozen class-template embeddings.
- `image`: v alone against z_k; the caption reaches v only through the prompts.
- `per-class`: the prompted text tower runs once per class on the caption followed by the class prompt,
  t_k (B, K, P); logits = scale x cos(v, t_k). No cached z_k: the text side is the classifier.
- `linear`: the linear probe's own head on frozen features, [normalize(v), normalize(t)] -> K.
"""

from __future__ import annotations

import torch
from torch import nn

from .amp import autocast_off

CAPTION, PER_CLASS, NO_TEXT = "caption", "per-class", "none"


class Head(nn.Module):
    text_input = CAPTION  # what the text tower must give: the caption's embedding, one per class, or nothing

    def forward(self, image: torch.Tensor, text: torch.Tensor | None, classes: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """image (B, P); text (B, P), (B, K, P) or None; classes z_k (K, P) normalised; scale (): logits (B, K)."""
        with autocast_off(image.device):
            return self.logits(nn.functional.normalize(image.float(), dim=-1), text if text is None else text.float(), classes.float(), scale.float())

    def logits(self, image: torch.Tensor, text: torch.Tensor | None, classes: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class FusedHead(Head):
    def logits(self, image, text, classes, scale):
        fused = nn.functional.normalize(image + nn.functional.normalize(text, dim=-1), dim=-1)  # (B, P)
        return scale * fused @ classes.t()  # (B, K)


class ImageHead(Head):
    text_input = NO_TEXT

    def logits(self, image, text, classes, scale):
        return scale * image @ classes.t()  # (B, K)


class PerClassHead(Head):
    text_input = PER_CLASS

    def logits(self, image, text, classes, scale):
        per_class = nn.functional.normalize(text, dim=-1)  # (B, K, P)
        return scale * (per_class @ image.unsqueeze(-1)).squeeze(-1)  # (B, K)


class LinearHead(Head):
    def __init__(self, embed_dim: int, num_classes: int):
        super().__init__()
        self.linear = nn.Linear(2 * embed_dim, num_classes)

    def logits(self, image, text, classes, scale):
        return self.linear(torch.cat([image, nn.functional.normalize(text, dim=-1)], dim=-1))  # (B, K)


HEADS: dict[str, type[Head]] = {"fused": FusedHead, "image": ImageHead, "per-class": PerClassHead}


def build_head(head: str, embed_dim: int, num_classes: int) -> Head:
    """The head a run reads logits with (ModelConfig.effective_head: the linear probe's is `linear`)."""
    if head == "linear":
        return LinearHead(embed_dim, num_classes)
    return HEADS[head]()
