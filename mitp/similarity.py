"""Token-wise similarities of the memory hub (paper Eq. 4): one score per prompt token.

Each function pairs corresponding prompt tokens of two (B, L, d) tensors and returns (B, L).
- `cos`: cosine similarity of the two d-vectors.
- `mmd`: exp(-MMD^2) between the two tokens' value distributions (each token's d values are a sample)
  under a Gaussian kernel. A naive MMD costs O(d^2) per token (8.6 s a step at ViT-L size), so the
  kernel mean embeddings use random Fourier features: O(d * D) with D features and a fixed bandwidth.
- `cov-pearson`: covariance within a modality (intra), Pearson correlation across modalities (inter).
"""

from __future__ import annotations

import math

import torch
from torch import nn

EPS = 1e-6


def cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return nn.functional.cosine_similarity(a, b, dim=-1, eps=EPS)  # (B, L)


def covariance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    a = a - a.mean(dim=-1, keepdim=True)  # (B, L, d)
    b = b - b.mean(dim=-1, keepdim=True)
    return (a * b).mean(dim=-1)  # (B, L)


def pearson(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    a = a - a.mean(dim=-1, keepdim=True)  # (B, L, d)
    b = b - b.mean(dim=-1, keepdim=True)
    return (a * b).sum(dim=-1) / (a.norm(dim=-1) * b.norm(dim=-1) + EPS)  # (B, L)


class MMDSimilarity(nn.Module):
    """exp(-MMD^2) with a Gaussian kernel, estimated through random Fourier features.

    phi(x) = sqrt(2/D) cos(w x + u), w ~ N(0, 1/sigma^2), u ~ U(0, 2 pi); the kernel mean embedding of
    a token is the mean of phi over its d values and MMD^2 ~ ||mu_a - mu_b||^2. The features are fixed
    (drawn from a constant seed), so the similarity has no trainable parameters and exports as constants.
    """

    def __init__(self, num_features: int = 64, bandwidth: float = 1.0, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("freq", torch.randn(num_features, generator=g) / bandwidth, persistent=False)
        self.register_buffer("phase", torch.rand(num_features, generator=g) * 2 * math.pi, persistent=False)
        self.scale = math.sqrt(2.0 / num_features)

    def mean_embedding(self, x: torch.Tensor) -> torch.Tensor:
        features = torch.cos(x.unsqueeze(-1) * self.freq + self.phase)  # (B, L, d, D)
        return self.scale * features.mean(dim=-2)  # (B, L, D)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        diff = self.mean_embedding(a.float()) - self.mean_embedding(b.float())  # (B, L, D)
        return torch.exp(-(diff * diff).sum(dim=-1))  # (B, L)


class TokenSimilarity(nn.Module):
    """The configured similarity, with the intra/inter distinction cov-pearson needs."""

    def __init__(self, kind: str, mmd_features: int = 64, mmd_bandwidth: float = 1.0):
        super().__init__()
        if kind not in ("cos", "mmd", "cov-pearson"):
            raise ValueError(f"unknown similarity {kind!r}; allowed: cos, mmd, cov-pearson")
        self.kind = kind
        self.mmd = MMDSimilarity(mmd_features, mmd_bandwidth) if kind == "mmd" else None

    def forward(self, a: torch.Tensor, b: torch.Tensor, *, within_modality: bool) -> torch.Tensor:
        if self.kind == "cos":
            return cosine(a, b)
        if self.kind == "mmd":
            return self.mmd(a, b)
        return covariance(a, b) if within_modality else pearson(a, b)
