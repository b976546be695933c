"""Sequence helpers of the prompted towers: prompts live right after CLS (vision) or SOT (text).

Pure tensor arithmetic, so all of it exports to ONNX."""

from __future__ import annotations

import torch


def insert_prompts(h: torch.Tensor, prompts: torch.Tensor) -> torch.Tensor:
    return torch.cat([h[:, :1], prompts.to(h.dtype), h[:, 1:]], dim=1)  # (B, S + L, d)


def replace_prompts(h: torch.Tensor, prompts: torch.Tensor) -> torch.Tensor:
    return torch.cat([h[:, :1], prompts.to(h.dtype), h[:, 1 + prompts.shape[1]:]], dim=1)  # (B, S, d)


def split_prompts(h: torch.Tensor, num_prompts: int) -> tuple[torch.Tensor, torch.Tensor]:
    prompts = h[:, 1:1 + num_prompts]  # (B, L, d)
    rest = torch.cat([h[:, :1], h[:, 1 + num_prompts:]], dim=1)  # (B, S - L, d)
    return prompts, rest


def text_attention_mask(attention_mask: torch.Tensor, num_prompts: int) -> torch.Tensor:
    """Explicit boolean mask (True = may attend), shape (B, 1, S, S) with S = T + num_prompts.

    Sequence order is [SOT, prompts, tokens..., EOS, pad...]. Token rows are causal over tokens and see
    every prompt; prompt rows see every non-padding token and each other; padding is never attended to.
    Always built explicitly: with SDPA and no padding transformers passes no mask at all, and a manual
    layer loop would silently turn bidirectional.
    """
    valid = attention_mask.bool()  # (B, T)
    batch, length = valid.shape
    causal = torch.ones(length, length, dtype=torch.bool, device=valid.device).tril()  # (T, T)
    tokens = causal.unsqueeze(0) & valid.unsqueeze(1)  # (B, T, T): row i sees valid j <= i
    if num_prompts == 0:
        return tokens.unsqueeze(1)
    token_rows = torch.cat(
        [tokens[:, :, :1], valid.new_ones(batch, length, num_prompts), tokens[:, :, 1:]], dim=2
    )  # (B, T, S)
    prompt_row = torch.cat([valid[:, :1], valid.new_ones(batch, num_prompts), valid[:, 1:]], dim=1)  # (B, S)
    prompt_rows = prompt_row.unsqueeze(1).expand(batch, num_prompts, length + num_prompts)  # (B, L, S)
    full = torch.cat([token_rows[:, :1], prompt_rows, token_rows[:, 1:]], dim=1)  # (B, S, S)
    return full.unsqueeze(1)


def caption_with_class_prompts(
    input_ids: torch.Tensor, attention_mask: torch.Tensor, class_ids: torch.Tensor, class_lengths: torch.Tensor, eos_token_id: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """[SOT, caption, class prompt k, EOS, pad...] for every caption and class: ids and mask, (B, K, T).

    input_ids / attention_mask (B, T) are tokenized captions [SOT, tokens, EOS, pad]; class_ids (K, C)
    the class prompts' tokens without SOT / EOS, class_lengths (K,) how many of each are real. A caption
    is cut where its class prompt would not fit, so the prompt and EOS always stay. Padding is EOS with
    mask 0 (never attended; pooling reads the first EOS). Pure tensor arithmetic: it exports to ONNX."""
    batch, length = input_ids.shape
    classes = class_ids.shape[0]
    caption = attention_mask.sum(dim=-1) - 2  # (B,): tokens between SOT and EOS
    kept = torch.minimum(caption.unsqueeze(1), (length - 2 - class_lengths).unsqueeze(0)).unsqueeze(-1)  # (B, K, 1)
    position = torch.arange(length, device=input_ids.device).view(1, 1, length)  # (1, 1, T)
    in_class = position - kept - 1  # (B, K, T): index into the class prompt where it is >= 0
    lengths = class_lengths.view(1, classes, 1)  # (1, K, 1)
    class_tokens = torch.gather(
        class_ids.unsqueeze(0).expand(batch, -1, -1), 2, in_class.clamp(0, class_ids.shape[1] - 1)
    )  # (B, K, T)
    caption_tokens = input_ids.unsqueeze(1).expand(-1, classes, -1)  # (B, K, T)
    eos = torch.full_like(caption_tokens, eos_token_id)
    ids = torch.where(position <= kept, caption_tokens, torch.where((in_class >= 0) & (in_class < lengths), class_tokens, eos))
    mask = (position <= kept + lengths + 1).to(attention_mask.dtype).expand(batch, -1, -1)  # (B, K, T)
    return ids, mask
