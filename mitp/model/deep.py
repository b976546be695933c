"""P-CLIP: deep prompt tuning (VPT-deep) of both towers, with no interaction between them.

Fresh learned prompts replace the prompt slots at every prompted block of each tower: every block with
`all` (12 text + 24 vision on ViT-L/14), or the listed layers.
"""

from __future__ import annotations

import torch
from torch import nn

from .base import PROMPT_INIT_STD, PromptedCLIP
from .heads import NO_TEXT, PER_CLASS
from .sequences import insert_prompts, replace_prompts, text_attention_mask


class DeepPromptCLIP(PromptedCLIP):
    def prompted_layers(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        if not self.config.layers:  # `all`: every block of each tower
            return tuple(range(self.n_text)), tuple(range(self.n_vision))
        return super().prompted_layers()

    def add_prompt_parameters(self, text_dim: int, vision_dim: int, prompt_length: int) -> None:
        self.deep_text_prompts = nn.Parameter(torch.randn(len(self.text_layer_ids), prompt_length, text_dim) * PROMPT_INIT_STD)
        self.deep_vision_prompts = nn.Parameter(torch.randn(len(self.vision_layer_ids), prompt_length, vision_dim) * PROMPT_INIT_STD)

    def _deep_prompted_tower(self, layers, layer_ids, h, prompts: torch.Tensor, plain_mask, prompt_mask) -> torch.Tensor:
        """Fresh learned prompts replace the prompt slots at every prompted layer (VPT-deep)."""
        slot = {layer_id: k for k, layer_id in enumerate(layer_ids)}
        has_prompts = False
        for i, layer in enumerate(layers):
            if i in slot:
                p = prompts[slot[i]].unsqueeze(0).expand(h.shape[0], -1, -1)  # (B, L, d)
                h = replace_prompts(h, p) if has_prompts else insert_prompts(h, p)
                has_prompts = True
            h = layer(h, prompt_mask if has_prompts else plain_mask)
        return h

    def encode(
        self, pixel_values: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        h_v = self._deep_prompted_tower(
            self.vision_layers, self.vision_layer_ids, self._embed_image(pixel_values), self.deep_vision_prompts, None, None
        )
        image = self._pool_image(h_v)  # (B, P)
        if self.head.text_input == NO_TEXT:
            return image, None
        if self.head.text_input == PER_CLASS:
            input_ids, attention_mask = self._class_sequences(input_ids, attention_mask)  # (B*K, T) each
        plain, prompted = text_attention_mask(attention_mask, 0), text_attention_mask(attention_mask, self.prompt_length)
        h_t = self._deep_prompted_tower(
            self.text_layers, self.text_layer_ids, self._embed_text(input_ids), self.deep_text_prompts, plain, prompted
        )
        text = self._pool_text(h_t, input_ids, self.prompt_length)  # (B, P) or (B*K, P)
        return image, text.view(image.shape[0], self.num_classes, -1) if self.head.text_input == PER_CLASS else text
