"""Temporal prompts: MITP (the memory hub), prompts-only (no exchange) and mlp-interaction (an MLP exchange).

    image ─ vision embeddings ─ blocks 1..l0-1 ─┐                 ┌─ [CLS, p_v, patches] ─ ... ─ last block ─ CLS ─ proj ─ v ─┐
                                                 ├─ interaction layers (lockstep) ─ hub ─┤                                    ├─ head ─ logits
    text  ─ token embeddings  ─ blocks 1..l0-1 ─┘   [SOT, p_t, tokens, EOS, pad]         └─ [SOT, p_t, tokens] ─ ... ─ EOS ─ t ─┘

At an interaction layer l the prompts of both towers are inserted after CLS/SOT, the frozen block runs,
and the block's OUTPUT at the prompt positions (p-hat, Eq. 2) goes to the shared exchange, whose result
becomes the prompts of the next interaction layer. Layers between interaction layers (extraction layers)
run without prompts. After the last interaction layer the exchange's output is inserted at the next block
of BOTH towers and carried to their ends (docs/decisions.md §4). The three variants differ only by their
exchange (mitp.model.hub). The head says what it needs of the text tower: the prompted caption's
embedding (fused), nothing (image: text blocks after the last interaction layer are skipped), or one pass
per class over the caption followed by the class prompt (per-class: the text prompts each interaction
layer received from the caption's pass are inserted at the same layers of every class pass, and the hub's
last output is carried to its end, so one hub run serves all K passes).
"""

from __future__ import annotations

import torch
from torch import nn

from .base import PROMPT_INIT_STD, PromptedCLIP
from .heads import NO_TEXT, PER_CLASS
from .hub import build_exchange
from .sequences import insert_prompts, split_prompts, text_attention_mask


class TemporalPromptCLIP(PromptedCLIP):
    def add_prompt_parameters(self, text_dim: int, vision_dim: int, prompt_length: int) -> None:
        self.text_prompts = nn.Parameter(torch.randn(prompt_length, text_dim) * PROMPT_INIT_STD)  # p_t^{l0}
        self.text_to_vision_prompts = nn.Linear(text_dim, vision_dim)  # Eq. 1: p_v^{l0} = W p_t^{l0} + b
        self.hub = build_exchange(self.spec.exchange, self.config, text_dim, vision_dim)  # one, shared by every layer

    def _initial_prompts(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        p_t = self.text_prompts.unsqueeze(0).expand(batch, -1, -1)  # (B, L, d_t)
        p_v = self.text_to_vision_prompts(p_t)  # (B, L, d_v), Eq. 1
        return p_t, p_v

    def encode(
        self, pixel_values: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        first, last = self.layer_ids[0], self.layer_ids[-1]
        plain_mask = text_attention_mask(attention_mask, 0)  # (B, 1, T, T)
        prompt_mask = text_attention_mask(attention_mask, self.prompt_length)  # (B, 1, T+L, T+L)

        with self._prefix_context():  # frozen blocks below the first interaction layer
            h_t = self._embed_text(input_ids)  # (B, T, d_t)
            h_v = self._embed_image(pixel_values)  # (B, 1 + patches, d_v)
            for i in range(first):
                h_t = self.text_layers[i](h_t, plain_mask)
                h_v = self.vision_layers[i](h_v, None)

        # Prompt rows of the text tower see every caption token (they acquire the whole caption), so from
        # here on the prompt rows are not causal; token rows stay causal and see the prompts, so the EOS
        # embedding carries what the prompts hold (docs/decisions.md §3).
        p_t, p_v = self._initial_prompts(h_t.shape[0])
        text_prompts_at = {}  # interaction layer -> the text prompts it received (the per-class passes reuse them)
        for i in range(first, last + 1):
            if i not in self.layer_ids:  # extraction layer between two interaction layers
                h_t = self.text_layers[i](h_t, plain_mask)
                h_v = self.vision_layers[i](h_v, None)
                continue
            text_prompts_at[i] = p_t
            h_t = self.text_layers[i](insert_prompts(h_t, p_t), prompt_mask)  # (B, T+L, d_t)
            h_v = self.vision_layers[i](insert_prompts(h_v, p_v), None)  # (B, 1+L+patches, d_v)
            p_t_hat, h_t = split_prompts(h_t, self.prompt_length)  # acquiring: the block's output
            p_v_hat, h_v = split_prompts(h_v, self.prompt_length)
            p_t, p_v = self.hub(p_t_hat, p_v_hat, layer=i + 1)  # the exchange: consolidation and activation

        # The last hub output is carried to the end of both towers (docs/decisions.md §4).
        h_v = insert_prompts(h_v, p_v)
        for i in range(last + 1, self.n_vision):
            h_v = self.vision_layers[i](h_v, None)
        image = self._pool_image(h_v)  # (B, P)

        if self.head.text_input == PER_CLASS:
            return image, self._per_class_text(input_ids, attention_mask, text_prompts_at, p_t)
        if self.head.text_input == NO_TEXT:  # text blocks after the last interaction layer cannot change the logits
            return image, None
        h_t = insert_prompts(h_t, p_t)
        for i in range(last + 1, self.n_text):
            h_t = self.text_layers[i](h_t, prompt_mask)
        return image, self._pool_text(h_t, input_ids, self.prompt_length)  # (B, P), (B, P)

    def _per_class_text(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, prompts_at: dict[int, torch.Tensor], last_prompts: torch.Tensor
    ) -> torch.Tensor:
        """The per-class head's text side, (B, K, P): the prompted text tower once per class on
        [SOT, caption, class prompt k, EOS]. Each interaction layer gets the text prompts that the
        caption's pass gave it, and the hub's last output is carried to the end, as for the caption."""
        ids, mask = self._class_sequences(input_ids, attention_mask)  # (B*K, T) each
        K, L = self.num_classes, self.prompt_length
        plain, prompted = text_attention_mask(mask, 0), text_attention_mask(mask, L)
        first, last = self.layer_ids[0], self.layer_ids[-1]
        with self._prefix_context():
            h = self._embed_text(ids)  # (B*K, T, d_t)
            for i in range(first):
                h = self.text_layers[i](h, plain)
        for i in range(first, last + 1):
            if i not in prompts_at:
                h = self.text_layers[i](h, plain)
                continue
            h = self.text_layers[i](insert_prompts(h, prompts_at[i].repeat_interleave(K, dim=0)), prompted)  # (B*K, T+L, d_t)
            h = split_prompts(h, L)[1]  # the next interaction layer gets the caption pass's prompts
        h = insert_prompts(h, last_prompts.repeat_interleave(K, dim=0))
        for i in range(last + 1, self.n_text):
            h = self.text_layers[i](h, prompted)
        return self._pool_text(h, ids, L).view(input_ids.shape[0], K, -1)  # (B, K, P)
