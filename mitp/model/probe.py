"""The linear probe (Table 2's baseline): frozen CLIP features and a linear head, no prompts."""

from __future__ import annotations

import torch

from .base import PromptedCLIP


class LinearProbeCLIP(PromptedCLIP):
    uses_class_embeddings = False  # the linear head is the classifier

    def prompted_layers(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        return (), ()

    @torch.no_grad()
    def encode(
        self, pixel_values: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self.encode_image_frozen(pixel_values), self.encode_text_frozen(input_ids, attention_mask)  # (B, P) each
