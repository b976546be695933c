"""The exchanges between interaction layers and the memory hub's two readings, pinned on small tensors."""

import math

import pytest
import torch

from mitp.config import HubConfig, ModelConfig, variant
from mitp.model.hub import GateStatistics, MemoryHub, MLPExchange, NoExchange, build_exchange
from mitp.model.similarity import EPS, MMDSimilarity, Similarity, covariance


def hub(map="token", similarity="cos", gate="softmax", scale="fixed", dims=(6, 6)):
    torch.manual_seed(0)
    return MemoryHub(text_dim=dims[0], vision_dim=dims[1], width=4, similarity=similarity, map=map, gate=gate, scale=scale)


def prompts(batch=2, length=3, dims=(6, 6), seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, length, dims[0], generator=g), torch.randn(batch, length, dims[1], generator=g)


def cos(a, b):
    return float(torch.dot(a, b) / (a.norm() * b.norm()))


def test_token_reading_follows_equation_six():
    h = hub("token")
    p_t, p_v = prompts()
    other = h.vision_to_text(p_v)
    z = torch.softmax(torch.relu(torch.cosine_similarity(h.text_intra(p_t), p_t, dim=-1)), dim=-1)[..., None]  # (B, L, 1)
    r = torch.softmax(torch.relu(torch.cosine_similarity(p_t, other, dim=-1)), dim=-1)[..., None]
    expected = z * p_t + (1 - z) * r * other
    assert torch.allclose(h(p_t, p_v, layer=4)[0], expected, atol=1e-5)


def test_pairwise_reading_follows_equation_six_token_by_token():
    """Written out with loops: map[i, j] = ReLU(cos(a_i, b_j)); z, r softmax over j;
    p_next_i = sum_j z_ij p_j + sum_j (1 - z_ij) r_ij o_j."""
    h = hub("pairwise")
    p_t, p_v = prompts()
    with torch.no_grad():
        ours = h(p_t, p_v, layer=4)[0]
        intra, other = h.text_intra(p_t), h.vision_to_text(p_v)
    batch, length, _ = p_t.shape
    for b in range(batch):
        z = torch.tensor([[max(0.0, cos(intra[b, i], p_t[b, j])) for j in range(length)] for i in range(length)]).softmax(-1)
        r = torch.tensor([[max(0.0, cos(p_t[b, i], other[b, j])) for j in range(length)] for i in range(length)]).softmax(-1)
        for i in range(length):
            expected = sum(z[i, j] * p_t[b, j] + (1 - z[i, j]) * r[i, j] * other[b, j] for j in range(length))
            assert torch.allclose(ours[b, i], expected, atol=1e-5)


@pytest.mark.parametrize("kind", ["cos", "mmd", "cov-pearson"])
@pytest.mark.parametrize("within", [True, False])
def test_the_pairwise_map_compares_every_token_pair_and_its_diagonal_is_the_token_reading(kind, within):
    a, b = prompts(batch=2, length=4, dims=(16, 16))
    pairwise = Similarity(kind, "pairwise", mmd_features=32)(a, b, within_modality=within)  # (B, L, L)
    token = Similarity(kind, "token", mmd_features=32)
    assert pairwise.shape == (2, 4, 4)
    assert torch.allclose(torch.diagonal(pairwise, dim1=-2, dim2=-1), token(a, b, within_modality=within), atol=1e-5)
    for i, j in [(0, 3), (2, 1)]:  # entry [i, j] is token i of a against token j of b
        entry = token(a[:, i:i + 1], b[:, j:j + 1], within_modality=within)[:, 0]
        assert torch.allclose(pairwise[:, i, j], entry, atol=1e-5)


def test_similarities_match_their_definitions():
    a = torch.randn(2, 3, 50)
    cp = Similarity("cov-pearson")
    assert torch.allclose(cp(a, 3 * a + 1, within_modality=False), torch.ones(2, 3), atol=1e-4)  # Pearson
    assert torch.allclose(cp(a, a, within_modality=True), a.var(dim=-1, unbiased=False), atol=1e-5)  # covariance
    assert torch.allclose(Similarity("cos")(a, 2 * a, within_modality=True), torch.ones(2, 3), atol=1e-5)
    assert torch.allclose(Similarity("mmd")(a, a, within_modality=True), torch.ones(2, 3))


def exact_mmd_similarity(x: torch.Tensor, y: torch.Tensor, sigma: float) -> float:
    """The O(d^2) definition: exp(-MMD^2) between two 1-D samples with a Gaussian kernel."""

    def k(u, v):
        return torch.exp(-((u[:, None] - v[None, :]) ** 2) / (2 * sigma**2)).mean()

    return math.exp(-float(k(x, x) + k(y, y) - 2 * k(x, y)))


def test_linear_time_mmd_matches_the_exact_statistic():
    mmd = MMDSimilarity(num_features=8192, bandwidth=1.0, seed=0)
    g = torch.Generator().manual_seed(1)
    for shift, scale in [(0.0, 1.0), (0.5, 1.0), (1.5, 2.0)]:
        x = torch.randn(256, generator=g)
        y = torch.randn(256, generator=g) * scale + shift
        approx = float(mmd(x.view(1, 1, -1), y.view(1, 1, -1)))
        assert approx == pytest.approx(exact_mmd_similarity(x, y, 1.0), abs=0.03)


@pytest.mark.parametrize("map", ["token", "pairwise"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_similarities_stay_finite_and_exact_in_half_precision(map, dtype):
    """Activations near 300: their covariance (9e4) overflows fp16, so every score is computed in fp32."""
    a, b = (300 + 20 * torch.randn(2, 3, 64)), (300 + 20 * torch.randn(2, 3, 64))
    for kind in ("cos", "mmd", "cov-pearson"):
        sim = Similarity(kind, map)
        for within in (True, False):
            half = sim(a.to(dtype), b.to(dtype), within_modality=within)
            full = sim(a.to(dtype).float(), b.to(dtype).float(), within_modality=within)
            assert half.dtype == torch.float32 and torch.isfinite(half).all(), (kind, within)
            assert torch.equal(half, full), (kind, within)
    assert float(covariance(a, a).min()) > 65504 / 300  # the case is real: far beyond fp16 for a product of two


@pytest.mark.parametrize("map", ["token", "pairwise"])
def test_the_gradient_near_a_zero_vector_stays_bounded(map):
    for kind in ("cos", "cov-pearson"):
        a = (1e-7 * torch.randn(1, 3, 32)).requires_grad_()
        b = torch.randn(1, 3, 32)
        Similarity(kind, map)(a, b, within_modality=False).sum().backward()
        assert torch.isfinite(a.grad).all() and float(a.grad.abs().max()) <= 3 / EPS * 3, kind


@pytest.mark.parametrize("map", ["token", "pairwise"])
@pytest.mark.parametrize("similarity", ["cos", "mmd", "cov-pearson"])
@pytest.mark.parametrize("gate", ["softmax", "sigmoid"])
def test_every_reading_runs_and_its_gates_are_observed_per_layer(map, similarity, gate):
    h = hub(map, similarity, gate, dims=(8, 12))
    h.observer = GateStatistics()
    p_t, p_v = prompts(batch=4, dims=(8, 12))
    for layer in (4, 5):
        next_t, next_v = h(p_t, p_v, layer=layer)
        assert next_t.shape == p_t.shape and next_v.shape == p_v.shape
        assert torch.isfinite(next_t).all() and torch.isfinite(next_v).all()
    summary, means = h.observer.summary(), h.observer.means()
    assert set(summary) == {"4.text", "4.vision", "5.text", "5.vision"}  # one row per layer and modality
    shape = [3, 3] if map == "pairwise" else [3]
    assert torch.tensor(means["5.vision.z"]).shape == torch.Size(shape)
    if gate == "softmax":  # z sums to 1 over the tokens a row corresponds to: its mean over elements is 1/L
        assert summary["4.text"]["z_mean"] == pytest.approx(1 / 3, abs=1e-6)


def test_gate_statistics_are_the_mean_spread_and_zero_share_over_samples():
    stats = GateStatistics()
    z = torch.tensor([[0.2, 0.8], [0.4, 0.6], [0.6, 0.4]])  # (B=3, L=2)
    r = torch.full((3, 2), 0.5)
    maps = torch.tensor([[0.0, 0.0], [0.1, 0.0], [0.0, 0.0]])  # samples 0 and 2 have all-zero maps
    stats.observe("4.text", z[:2], r[:2], maps[:2], maps[:2] + 1)
    stats.observe("4.text", z[2:], r[2:], maps[2:], maps[2:] + 1)  # two batches add up
    assert stats.means()["4.text.z"] == pytest.approx([0.4, 0.6])
    row = stats.summary()["4.text"]
    assert row["z_spread"] == pytest.approx(z.std(dim=0, unbiased=False).mean().item())
    assert row["r_spread"] == pytest.approx(0.0, abs=1e-7) and row["z_mean"] == pytest.approx(0.5)
    assert row["zero_self_maps"] == pytest.approx(2 / 3) and row["zero_cross_maps"] == 0.0


@pytest.mark.parametrize("map", ["token", "pairwise"])
def test_frozen_gates_replace_every_samples_gates_by_the_training_means(map):
    h = hub(map)
    p_t, p_v = prompts(batch=5)
    h.observer = GateStatistics()
    with torch.no_grad():
        live = h(p_t, p_v, layer=2)
    means = h.observer.means()
    h.observer = None
    h.freeze_gates(means)
    with torch.no_grad():
        frozen = h(p_t, p_v, layer=2)
        other = h.vision_to_text(p_v)
    z, r = torch.tensor(means["2.text.z"]), torch.tensor(means["2.text.r"])
    if map == "pairwise":
        expected = z @ p_t + ((1 - z) * r) @ other
    else:
        expected = z[:, None] * p_t + (1 - z[:, None]) * r[:, None] * other
    assert torch.allclose(frozen[0], expected, atol=1e-5)
    assert not torch.allclose(frozen[0], live[0], atol=1e-4)  # the gates did vary per sample
    h.freeze_gates(None)
    with torch.no_grad():
        assert torch.allclose(h(p_t, p_v, layer=2)[0], live[0])


@pytest.mark.parametrize("map", ["token", "pairwise"])
def test_a_learned_scale_multiplies_the_maps_from_clips_initial_value_and_trains(map):
    fixed, learned = hub(map), hub(map, scale="learned")
    assert float(learned.log_scale.detach().exp()) == pytest.approx(1 / 0.07)
    p_t, p_v = prompts()
    learned.observer, fixed.observer = GateStatistics(), GateStatistics()
    learned(p_t, p_v, layer=1)[0].square().sum().backward()
    assert learned.log_scale.grad is not None and float(learned.log_scale.grad.abs()) > 0
    with torch.no_grad():
        learned.log_scale.zero_()  # scale 1: the paper's maps
        assert torch.allclose(fixed(p_t, p_v, layer=1)[0], learned(p_t, p_v, layer=1)[0], atol=1e-6)


def test_each_variant_gets_its_exchange():
    def config(variant):
        return ModelConfig(variant=variant, layers=(2, 3), similarity="cos", prompt_length=2, task="single-label", hub=HubConfig(width=4))

    def exchange(name):
        return build_exchange(variant(name).exchange, config(name), 8, 8)

    assert isinstance(exchange("mitp"), MemoryHub)
    assert isinstance(exchange("mlp-interaction"), MLPExchange)
    assert isinstance(exchange("prompts-only"), NoExchange)
    assert variant("p-clip").family != "temporal" and variant("linear-probe").family != "temporal"  # no exchange built
    p_t, p_v = prompts()
    assert NoExchange()(p_t, p_v, layer=3) == (p_t, p_v)
