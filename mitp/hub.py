"""The memory hub (paper Eq. 4-6) and the naive MLP exchange of the Table 2 ablation.

Both take the prompt-position outputs of one interaction layer, text (B, L, d_t) and vision (B, L, d_v),
and return the prompts of the next one. One instance is shared by all interaction layers, so the
trainable parameter count does not grow with the number of layers.
"""

from __future__ import annotations

import torch
from torch import nn

from .similarity import TokenSimilarity


def two_layer_mlp(d_in: int, width: int, d_out: int) -> nn.Sequential:
    """Linear-GELU-Linear: the paper's 'two-layer MLP' projections."""
    return nn.Sequential(nn.Linear(d_in, width), nn.GELU(), nn.Linear(width, d_out))


class MemoryHub(nn.Module):
    """Consolidation and activation of temporal prompts, for m in {t, v} and m' the other modality:

        p~_m'   = MLP_{m'->m}(p_m')                          projection into m's space
        map_mm  = ReLU(sim(W_m p_m, p_m))                    intra-modality correspondence (B, L)
        map_mm' = ReLU(sim(p_m, p~_m'))                      inter-modality correspondence (B, L)
        z, r    = gate(map_mm), gate(map_mm')                softmax over the L tokens (paper) or sigmoid
        p_m'    = z * p_m + (1 - z) * r * p~_m'              next layer's prompts (Eq. 6)
    """

    def __init__(
        self,
        text_dim: int,
        vision_dim: int,
        width: int,
        similarity: str = "cos",
        gate: str = "softmax",
        mmd_features: int = 64,
        mmd_bandwidth: float = 1.0,
    ):
        super().__init__()
        if gate not in ("softmax", "sigmoid"):
            raise ValueError(f"unknown gate {gate!r}; allowed: softmax, sigmoid")
        self.vision_to_text = two_layer_mlp(vision_dim, width, text_dim)
        self.text_to_vision = two_layer_mlp(text_dim, width, vision_dim)
        self.text_intra = two_layer_mlp(text_dim, width, text_dim)  # W_t of Eq. 4
        self.vision_intra = two_layer_mlp(vision_dim, width, vision_dim)  # W_v of Eq. 4
        self.similarity = TokenSimilarity(similarity, mmd_features, mmd_bandwidth)
        self.gate = gate
        self.record_stats = False
        self.stats: dict[str, torch.Tensor] = {}

    def forward(self, p_t: torch.Tensor, p_v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        v_in_t = self.vision_to_text(p_v)  # (B, L, d_t)
        t_in_v = self.text_to_vision(p_t)  # (B, L, d_v)
        next_t = self._activate(p_t, v_in_t, self.text_intra, "text")
        next_v = self._activate(p_v, t_in_v, self.vision_intra, "vision")
        return next_t, next_v

    def _activate(self, p: torch.Tensor, other: torch.Tensor, intra: nn.Module, name: str) -> torch.Tensor:
        map_self = torch.relu(self.similarity(intra(p), p, within_modality=True))  # (B, L)
        map_cross = torch.relu(self.similarity(p, other, within_modality=False))  # (B, L)
        z = self._gate(map_self).unsqueeze(-1).to(p.dtype)  # (B, L, 1)
        r = self._gate(map_cross).unsqueeze(-1).to(p.dtype)  # (B, L, 1)
        if self.record_stats:
            self._record(name, z, r, map_self, map_cross)
        return z * p + (1 - z) * r * other  # (B, L, d)

    def _gate(self, scores: torch.Tensor) -> torch.Tensor:
        return torch.softmax(scores, dim=-1) if self.gate == "softmax" else torch.sigmoid(scores)

    @torch.no_grad()
    def _record(self, name: str, z, r, map_self, map_cross) -> None:
        """Gate ranges and the share of all-zero maps (ReLU of all-negative similarities: no gradient
        reaches W_m through them). Read by the trainer for its logs."""
        self.stats[f"{name}_z_min"] = z.min().float()
        self.stats[f"{name}_z_max"] = z.max().float()
        self.stats[f"{name}_r_min"] = r.min().float()
        self.stats[f"{name}_r_max"] = r.max().float()
        self.stats[f"{name}_zero_map_self"] = (map_self.amax(dim=-1) == 0).float().mean()
        self.stats[f"{name}_zero_map_cross"] = (map_cross.amax(dim=-1) == 0).float().mean()


class MLPInteraction(nn.Module):
    """Table 2 Model 2: prompts exchanged through plain MLPs, no memory strategy.

    p_m' = p_m + MLP_{m'->m}(p_m'): each modality keeps its own prompt and adds the other one's,
    projected; there is no similarity map and no activation gate.
    """

    def __init__(self, text_dim: int, vision_dim: int, width: int):
        super().__init__()
        self.vision_to_text = two_layer_mlp(vision_dim, width, text_dim)
        self.text_to_vision = two_layer_mlp(text_dim, width, vision_dim)

    def forward(self, p_t: torch.Tensor, p_v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return p_t + self.vision_to_text(p_v), p_v + self.text_to_vision(p_t)
