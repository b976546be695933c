"""What happens to the prompts between two interaction layers: one small interface, three exchanges.

Every exchange takes the prompt-position outputs of interaction layer `layer` (paper numbering), text
(B, L, d_t) and vision (B, L, d_v), and returns the prompts of the next interaction layer:
- `NoExchange`   Table 2 Model 3 (prompts-only): each modality keeps its own prompts.
- `MLPExchange`  Table 2 Model 2 (mlp-interaction): the other modality's prompts added through an MLP.
- `MemoryHub`    MITP (Eq. 4-6): similarity maps gate how much of each prompt is kept (consolidation) and
                 how much of the other modality is taken in (activation), per sample.
One instance is shared by all interaction layers, so trainable parameters do not grow with their number.
`build_exchange` builds the exchange that the variant registry (mitp.config.variants) names.
"""

from __future__ import annotations

import torch
from torch import nn

from ..config import ModelConfig
from .similarity import Similarity

LEARNED_SCALE_INIT = 1 / 0.07  # hub.scale: learned starts where CLIP's logit scale starts


def two_layer_mlp(d_in: int, width: int, d_out: int) -> nn.Sequential:
    """Linear-GELU-Linear: the paper's 'two-layer MLP' projections."""
    return nn.Sequential(nn.Linear(d_in, width), nn.GELU(), nn.Linear(width, d_out))


class Exchange(nn.Module):
    """The interface: (p_t_hat, p_v_hat) of interaction layer `layer` -> the next layer's (p_t, p_v)."""

    has_gates = False  # True for the memory hub: its gates can be observed and frozen
    observer: GateStatistics | None = None  # the memory hub reports its gates here when set

    def forward(self, p_t: torch.Tensor, p_v: torch.Tensor, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError


class NoExchange(Exchange):
    """Table 2 Model 3: temporal prompts, no interaction."""

    def forward(self, p_t: torch.Tensor, p_v: torch.Tensor, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        return p_t, p_v


class MLPExchange(Exchange):
    """Table 2 Model 2: p_m' = p_m + MLP_{m'->m}(p_m'), no similarity map and no gate."""

    def __init__(self, text_dim: int, vision_dim: int, width: int):
        super().__init__()
        self.vision_to_text = two_layer_mlp(vision_dim, width, text_dim)
        self.text_to_vision = two_layer_mlp(text_dim, width, vision_dim)

    def forward(self, p_t: torch.Tensor, p_v: torch.Tensor, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        return p_t + self.vision_to_text(p_v), p_v + self.text_to_vision(p_t)


class MemoryHub(Exchange):
    """Consolidation and activation of temporal prompts (Eq. 4-6), for m in {t, v} and m' the other:

        o        = MLP_{m'->m}(p_m')                    the other modality, projected into m's space (B, L, d)
        map_self = ReLU(sim(W_m p_m, p_m))              intra-modality correspondence
        map_crs  = ReLU(sim(p_m, o))                    inter-modality correspondence
        z, r     = gate(s * map_self), gate(s * map_crs)   s = 1, or a learned scale (hub.scale: learned)

    `map: token` (the first reading): sim pairs corresponding tokens, maps are (B, L), the softmax runs
    over the L tokens and Eq. 6 is elementwise, broadcast over features:
        p_next = z * p + (1 - z) * r * o                                         (B, L, d)
    `map: pairwise` (paper 3.4's "correspondences between tokens"): sim compares every token with every
    token, maps are (B, L, L) with [i, j] = token i of the first argument against token j of the second,
    the softmax runs over j (the tokens row i may correspond to), and Eq. 6's products become token mixes:
        p_next = z @ p + ((1 - z) * r) @ o                                       (B, L, d)
    Row i keeps its own modality's tokens in the proportions z_i. (1 - z) stays the elementwise
    complement, as written in Eq. 6: the other modality's token j enters row i where it corresponds to i
    (r_ij) and where the own token j does not already stand for i (1 - z_ij). A row-stochastic z has no
    scalar complement, and this keeps every symbol of Eq. 6 while bounding the weight taken in:
    sum_j (1 - z_ij) r_ij lies in [0, 1]. Both readings reduce to a fixed mix when z and r are constant,
    which is what `freeze_gates` tests.
    """

    has_gates = True

    def __init__(
        self,
        text_dim: int,
        vision_dim: int,
        width: int,
        similarity: str = "cos",
        map: str = "token",
        gate: str = "softmax",
        scale: str = "fixed",
        mmd_features: int = 64,
        mmd_bandwidth: float = 1.0,
    ):
        super().__init__()
        if gate not in ("softmax", "sigmoid"):
            raise ValueError(f"unknown gate {gate!r}; allowed: softmax, sigmoid")
        if scale not in ("fixed", "learned"):
            raise ValueError(f"unknown hub scale {scale!r}; allowed: fixed, learned")
        self.vision_to_text = two_layer_mlp(vision_dim, width, text_dim)
        self.text_to_vision = two_layer_mlp(text_dim, width, vision_dim)
        self.text_intra = two_layer_mlp(text_dim, width, text_dim)  # W_t of Eq. 4
        self.vision_intra = two_layer_mlp(vision_dim, width, vision_dim)  # W_v of Eq. 4
        self.similarity = Similarity(similarity, map, mmd_features, mmd_bandwidth)
        self.pairwise = map == "pairwise"
        self.gate = gate
        # A departure from the paper, off by default: a softmax over L values in [0, 1] can only move
        # between weights e^0 and e^1 (with L = 3 a gate stays in [0.21, 0.58]). A learned scale, like
        # CLIP's logit scale and from CLIP's initial value (1 / 0.07), lets the maps decide the gates.
        self.log_scale = nn.Parameter(torch.tensor(LEARNED_SCALE_INIT).log()) if scale == "learned" else None
        self.observer: GateStatistics | None = None  # set by the trainer to log the gates
        self.frozen: dict[str, torch.Tensor] | None = None  # gate -> its training mean (the ablation)

    def forward(self, p_t: torch.Tensor, p_v: torch.Tensor, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        v_in_t = self.vision_to_text(p_v)  # (B, L, d_t)
        t_in_v = self.text_to_vision(p_t)  # (B, L, d_v)
        next_t = self._consolidate_and_activate(p_t, v_in_t, self.text_intra, f"{layer}.text")
        next_v = self._consolidate_and_activate(p_v, t_in_v, self.vision_intra, f"{layer}.vision")
        return next_t, next_v

    def _consolidate_and_activate(self, p: torch.Tensor, other: torch.Tensor, intra: nn.Module, key: str) -> torch.Tensor:
        map_self = torch.relu(self.similarity(intra(p), p, within_modality=True))  # (B, L) or (B, L, L), fp32
        map_cross = torch.relu(self.similarity(p, other, within_modality=False))  # (B, L) or (B, L, L), fp32
        z, r = self._gate(map_self), self._gate(map_cross)  # same shapes, fp32
        if self.observer is not None:
            self.observer.observe(key, z, r, map_self, map_cross)
        if self.frozen is not None:  # the ablation: the same checkpoint with z and r at their training means
            z = self.frozen[f"{key}.z"].to(z).expand_as(z)
            r = self.frozen[f"{key}.r"].to(r).expand_as(r)
        z, r = z.to(p.dtype), r.to(p.dtype)
        if self.pairwise:
            return z @ p + ((1 - z) * r) @ other  # (B, L, L) @ (B, L, d) -> (B, L, d)
        z, r = z.unsqueeze(-1), r.unsqueeze(-1)  # (B, L, 1)
        return z * p + (1 - z) * r * other  # (B, L, d)

    def _gate(self, scores: torch.Tensor) -> torch.Tensor:
        if self.log_scale is not None:
            scores = scores * self.log_scale.float().exp()
        return torch.softmax(scores, dim=-1) if self.gate == "softmax" else torch.sigmoid(scores)

    def freeze_gates(self, means: dict[str, list] | None) -> None:
        """Use these gate values for every sample (None: compute them again); keys as GateStatistics.means()."""
        self.frozen = None if means is None else {key: torch.tensor(value, dtype=torch.float32) for key, value in means.items()}


def build_exchange(kind: str, model_config: ModelConfig, text_dim: int, vision_dim: int) -> Exchange:
    """The exchange `kind` (mitp.config.variants: memory-hub, mlp or none) with the run's hub options."""
    hub = model_config.hub
    if kind == "memory-hub":
        return MemoryHub(
            text_dim, vision_dim, hub.width, model_config.similarity, hub.map, hub.gate, hub.scale, hub.mmd_features, hub.mmd_bandwidth
        )
    if kind == "mlp":
        return MLPExchange(text_dim, vision_dim, hub.width)
    if kind == "none":
        return NoExchange()
    raise ValueError(f"unknown exchange {kind!r}; known: memory-hub, mlp, none")


class GateStatistics:
    """Running statistics of the memory hub's gates, per interaction layer and modality.

    Key `<layer>.<text|vision>.<z|r>` (layer in the paper's numbering). For each gate it keeps the sum and
    sum of squares over samples of every gate element ((L,) or (L, L)), so that
    - `means()` gives the training mean of each element (what the frozen-gate ablation uses),
    - `summary()` gives the mean, the per-sample spread (standard deviation over samples, averaged over
      elements) and the share of samples whose similarity map is all zero (ReLU of all-negative
      similarities: then no gradient reaches W_m through that sample).
    """

    def __init__(self):
        self.sums: dict[str, torch.Tensor] = {}  # key -> tensor [count, sum..., sum of squares...] per gate
        self.zero_maps: dict[str, torch.Tensor] = {}  # `<layer>.<modality>.self|cross` -> [count, zero maps]
        self.shapes: dict[str, tuple[int, ...]] = {}  # key -> one sample's gate shape: (L,) or (L, L)

    @torch.no_grad()
    def observe(self, key: str, z: torch.Tensor, r: torch.Tensor, map_self: torch.Tensor, map_cross: torch.Tensor) -> None:
        for name, gate in (("z", z), ("r", r)):
            self.shapes[f"{key}.{name}"] = tuple(gate.shape[1:])
            flat = gate.detach().double().flatten(1)  # (B, L) or (B, L * L); float64: the spread is a small difference of large sums
            update = torch.cat([flat.new_tensor([flat.shape[0]]), flat.sum(0), (flat * flat).sum(0)])
            self._add(self.sums, f"{key}.{name}", update)
        for name, scores in (("self", map_self), ("cross", map_cross)):
            zero = (scores.detach().flatten(1).amax(dim=1) == 0).double()  # (B,): the whole map is zero
            self._add(self.zero_maps, f"{key}.{name}", torch.stack([zero.new_tensor(float(len(zero))), zero.sum()]))

    @staticmethod
    def _add(store: dict[str, torch.Tensor], key: str, update: torch.Tensor) -> None:
        store[key] = store[key] + update if key in store else update.clone()

    def reduce(self, total) -> None:
        """Sum the counts of every process (`total` sums a tensor over processes)."""
        for store in (self.sums, self.zero_maps):
            for key in sorted(store):
                store[key] = total(store[key])

    def _moments(self, key: str) -> tuple[torch.Tensor, torch.Tensor]:
        values = self.sums[key].double()
        count, rest = values[0], values[1:]
        half = rest.shape[0] // 2
        mean = rest[:half] / count
        variance = (rest[half:] / count - mean * mean).clamp(min=0)
        return mean, variance.sqrt()  # per element

    def means(self) -> dict[str, list]:
        """Training mean of every gate element, shaped like one sample's gate: (L,) or (L, L)."""
        return {key: self._moments(key)[0].view(self.shapes[key]).tolist() for key in sorted(self.sums)}

    def summary(self) -> dict[str, dict[str, float]]:
        """Per `<layer>.<modality>`: mean and spread of z and r, share of all-zero self and cross maps."""
        out: dict[str, dict[str, float]] = {}
        for key in sorted(self.sums):
            where, gate = key.rsplit(".", 1)
            mean, spread = self._moments(key)
            row = out.setdefault(where, {})
            row[f"{gate}_mean"] = float(mean.mean())
            row[f"{gate}_spread"] = float(spread.mean())
        for key in sorted(self.zero_maps):
            where, name = key.rsplit(".", 1)
            count, zero = self.zero_maps[key].double()
            out.setdefault(where, {})[f"zero_{name}_maps"] = float(zero / count)
        return out

    def __bool__(self) -> bool:
        return bool(self.sums)
