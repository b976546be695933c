"""The similarities of the memory hub (paper Eq. 4), in two readings of what `sim` compares.

Both take two (B, L, d) tensors of prompt tokens, `a` and `b`:
- `token` reading: corresponding tokens are paired, one score per token: (B, L).
- `pairwise` reading: every token of `a` against every token of `b`, an L x L map: (B, L, L), where
  [.., i, j] compares a_i with b_j (paper 3.4: "analogical mapping ... correspondences between tokens").

The kinds:
- `cos`: cosine similarity of the two d-vectors.
- `mmd`: exp(-MMD^2) between the two tokens' value distributions (each token's d values are a sample)
  under a Gaussian kernel. A naive MMD costs O(d^2) per pair (8.6 s a step at ViT-L size), so the kernel
  mean embeddings use random Fourier features: O(d * D) per token with D features and a fixed bandwidth.
- `cov-pearson`: covariance within a modality (intra), Pearson correlation across modalities (inter).

Numerics: every score is computed in fp32 whatever the autocast around it (fp16 overflows on the
covariance of activations near 300: 300^2 > 65504), and vector norms are smoothed, sqrt(|x|^2 + EPS^2),
so the gradient near a zero vector is bounded by 1 / EPS instead of reaching 1e6.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .amp import autocast_off

EPS = 1e-3  # norm smoothing: gradients of x / |x| stay below 1 / EPS; prompt outputs have norms of 1-1000
MAPS = ("token", "pairwise")
KINDS = ("cos", "mmd", "cov-pearson")


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x * torch.rsqrt((x * x).sum(dim=-1, keepdim=True) + EPS**2)  # (..., d), smooth normalisation


def _centred(x: torch.Tensor) -> torch.Tensor:
    return x - x.mean(dim=-1, keepdim=True)  # (..., d)


def _compare(a: torch.Tensor, b: torch.Tensor, pairwise: bool) -> torch.Tensor:
    """Dot products of matching tokens (B, L) or of every token pair (B, L, L)."""
    return a @ b.transpose(-1, -2) if pairwise else (a * b).sum(dim=-1)


def cosine(a: torch.Tensor, b: torch.Tensor, pairwise: bool = False) -> torch.Tensor:
    return _compare(_unit(a), _unit(b), pairwise)  # (B, L) or (B, L, L)


def covariance(a: torch.Tensor, b: torch.Tensor, pairwise: bool = False) -> torch.Tensor:
    return _compare(_centred(a), _centred(b), pairwise) / a.shape[-1]  # (B, L) or (B, L, L)


def pearson(a: torch.Tensor, b: torch.Tensor, pairwise: bool = False) -> torch.Tensor:
    return _compare(_unit(_centred(a)), _unit(_centred(b)), pairwise)  # (B, L) or (B, L, L)


class MMDSimilarity(nn.Module):
    """exp(-MMD^2) with a Gaussian kernel, estimated through random Fourier features.

    phi(x) = sqrt(2/D) cos(w x + u), w ~ N(0, 1/sigma^2), u ~ U(0, 2 pi); the kernel mean embedding of
    a token is the mean of phi over its d values and MMD^2 ~ ||mu_a - mu_b||^2. The features are fixed
    (drawn from a constant seed), so the similarity has no trainable parameters and exports as constants.
    """

    def __init__(self, num_features: int = 64, bandwidth: float = 1.0, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.freq: torch.Tensor  # (D,) frequencies w
        self.phase: torch.Tensor  # (D,) phases u
        self.register_buffer("freq", torch.randn(num_features, generator=g) / bandwidth, persistent=False)
        self.register_buffer("phase", torch.rand(num_features, generator=g) * 2 * math.pi, persistent=False)
        self.scale = math.sqrt(2.0 / num_features)

    def mean_embedding(self, x: torch.Tensor) -> torch.Tensor:
        features = torch.cos(x.unsqueeze(-1) * self.freq + self.phase)  # (B, L, d, D)
        return self.scale * features.mean(dim=-2)  # (B, L, D)

    def forward(self, a: torch.Tensor, b: torch.Tensor, pairwise: bool = False) -> torch.Tensor:
        mu_a, mu_b = self.mean_embedding(a), self.mean_embedding(b)  # (B, L, D) each
        if pairwise:  # ||mu_a_i - mu_b_j||^2 for every pair, clamped: rounding can make it slightly negative
            squared = (mu_a * mu_a).sum(-1).unsqueeze(-1) + (mu_b * mu_b).sum(-1).unsqueeze(-2) - 2 * mu_a @ mu_b.transpose(-1, -2)
            return torch.exp(-squared.clamp(min=0))  # (B, L, L)
        diff = mu_a - mu_b  # (B, L, D)
        return torch.exp(-(diff * diff).sum(dim=-1))  # (B, L)


class Similarity(nn.Module):
    """The configured similarity `kind` under the configured `map` reading, always in fp32."""

    def __init__(self, kind: str, map: str = "token", mmd_features: int = 64, mmd_bandwidth: float = 1.0):
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"unknown similarity {kind!r}; allowed: {', '.join(KINDS)}")
        if map not in MAPS:
            raise ValueError(f"unknown hub map {map!r}; allowed: {', '.join(MAPS)}")
        self.kind, self.pairwise = kind, map == "pairwise"
        self.mmd = MMDSimilarity(mmd_features, mmd_bandwidth) if kind == "mmd" else None

    def forward(self, a: torch.Tensor, b: torch.Tensor, *, within_modality: bool) -> torch.Tensor:
        """(B, L) scores under the token reading, (B, L, L) under the pairwise one."""
        with autocast_off(a.device):
            a, b = a.float(), b.float()
            if self.kind == "cos":
                return cosine(a, b, self.pairwise)
            if self.mmd is not None:
                return self.mmd(a, b, self.pairwise)
            return covariance(a, b, self.pairwise) if within_modality else pearson(a, b, self.pairwise)

