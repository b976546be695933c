"""A frozen Hugging Face CLIP, wrapped and never edited: what every prompted model stands on.

`WrappedCLIP` gives the prompted models (mitp.model.base) shortcuts into the backbone's towers (embedding,
blocks, pooling), the towers run without prompts through this module's own block loop (so that a prompted
loop and an unprompted one share every step but the prompts), and the trainable state: everything the
wrapper adds beside `clip.`, which is what a checkpoint holds.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import CLIPModel

from .backbone import crop_size, towers
from .sequences import text_attention_mask


class WrappedCLIP(nn.Module):
    """The frozen backbone (`clip`, registered first) and what reads it; subclasses add the trainable parts."""

    def __init__(self, clip: CLIPModel, eos_token_id: int):
        super().__init__()
        if clip.config._attn_implementation != "sdpa":
            raise ValueError("mitp builds boolean attention masks: load the backbone with attn_implementation='sdpa'")
        self.clip = clip  # frozen, never edited
        self.eos_token_id = eos_token_id
        text_cfg, vision_cfg = towers(clip.config)
        self.n_text, self.n_vision = text_cfg.num_hidden_layers, vision_cfg.num_hidden_layers
        self.text_dim, self.vision_dim = text_cfg.hidden_size, vision_cfg.hidden_size
        self.context_length = text_cfg.max_position_embeddings  # 77: the longest [SOT, caption, EOS]

    # -----------------------------------------------------------------------------------------------
    # shortcuts into the frozen backbone

    @property
    def text_layers(self) -> nn.ModuleList:
        return self.clip.text_model.encoder.layers

    @property
    def vision_layers(self) -> nn.ModuleList:
        return self.clip.vision_model.encoder.layers

    def _embed_text(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.clip.text_model.embeddings(input_ids=input_ids)  # (B, T, d_t)

    def _embed_image(self, pixel_values: torch.Tensor) -> torch.Tensor:
        h = self.clip.vision_model.embeddings(pixel_values)  # (B, 1 + patches, d_v)
        return self.clip.vision_model.pre_layrnorm(h)

    def _pool_text(self, h: torch.Tensor, input_ids: torch.Tensor, num_prompts: int) -> torch.Tensor:
        """Projected text embedding at the first EOS (shifted by the prompts in front of it)."""
        h = self.clip.text_model.final_layer_norm(h)  # (B, S, d_t)
        eos = (input_ids == self.eos_token_id).int().argmax(dim=-1) + num_prompts  # (B,)
        pooled = h[torch.arange(h.shape[0], device=h.device), eos]  # (B, d_t)
        return self.clip.text_projection(pooled)  # (B, P)

    def _pool_image(self, h: torch.Tensor) -> torch.Tensor:
        pooled = self.clip.vision_model.post_layernorm(h[:, 0])  # CLS: (B, d_v)
        return self.clip.visual_projection(pooled)  # (B, P)

    def _prefix_context(self):
        """Blocks below the first prompted layer see no trainable input: no autograd through them."""
        return torch.no_grad()

    # -----------------------------------------------------------------------------------------------
    # the towers without prompts (class embeddings, the linear probe, parity with HF CLIP)

    def encode_text_frozen(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The unprompted text tower through this module's own layer loop: (B, P), not normalised."""
        h = self._embed_text(input_ids)
        mask = text_attention_mask(attention_mask, 0)
        for layer in self.text_layers:
            h = layer(h, mask)
        return self._pool_text(h, input_ids, 0)

    def encode_image_frozen(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The unprompted vision tower through this module's own layer loop: (B, P), not normalised."""
        h = self._embed_image(pixel_values)
        for layer in self.vision_layers:
            h = layer(h, None)
        return self._pool_image(h)

    # -----------------------------------------------------------------------------------------------
    # trainable parameters (what a checkpoint holds)

    def trainable_parameters(self) -> dict[str, nn.Parameter]:
        return {name: p for name, p in self.named_parameters() if p.requires_grad and not name.startswith("clip.")}

    def parameters_receiving_gradients(self) -> set[str]:
        """Names of the trainable parameters that one backward pass reaches (a hub input whose output
        nothing reads gets none)."""
        size = crop_size(self.clip.config)
        pixels = torch.zeros(2, 3, size, size)
        ids = torch.zeros(2, 77, dtype=torch.long)
        ids[:, 1] = self.eos_token_id
        mask = (torch.arange(77) < 2).long().expand(2, -1)  # SOT, EOS
        self(pixels, ids, mask).sum().backward()
        return {name for name, p in self.trainable_parameters().items() if p.grad is not None}

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        return {name: p.detach().cpu().contiguous() for name, p in self.trainable_parameters().items()}

    def load_trainable_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        expected = set(self.trainable_parameters())
        if set(state) != expected:
            missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
            raise ValueError(f"checkpoint does not fit this model: missing {missing}, unexpected {unexpected}")
        params = self.trainable_parameters()
        with torch.no_grad():
            for name, value in state.items():
                if params[name].shape != value.shape:
                    raise ValueError(f"checkpoint tensor {name} has shape {tuple(value.shape)}, model expects {tuple(params[name].shape)}")
                params[name].copy_(value)

    def count_trainable(self) -> int:
        return sum(p.numel() for p in self.trainable_parameters().values())

    def count_backbone(self) -> int:
        return sum(p.numel() for p in self.clip.parameters())

    def train(self, mode: bool = True) -> WrappedCLIP:
        super().train(mode)
        self.clip.eval()  # the frozen backbone always runs in eval mode
        return self
