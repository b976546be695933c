import math

import pytest
import torch

from mitp.config import HubConfig, ModelConfig
from mitp.hub import MemoryHub
from mitp.model import MITPModel, classification_loss, effective_parameter_names, insert_prompts, text_attention_mask
from mitp.similarity import MMDSimilarity, TokenSimilarity

CAPTIONS = ["a photo of red alpha", "the caption says blue beta and some very old words", "dot"]


def make_model(backbone, variant="mitp", layers=(2, 3), similarity="cos", task="single-label", classes=4, length=2, head="fused"):
    config = ModelConfig(variant, layers, similarity, length, task, HubConfig(width=16), head=head)
    torch.manual_seed(0)
    model = MITPModel(backbone.clip, config, classes, backbone.tokenizer.info.eos_token_id)
    ids, mask = backbone.tokenizer([f"a photo of class {k}" for k in ("one", "two", "three", "four")[:classes]])
    model.set_class_embeddings(torch.from_numpy(ids), torch.from_numpy(mask), 1)
    return model


def text_batch(backbone, captions=CAPTIONS):
    ids, mask = backbone.tokenizer(captions)
    return torch.from_numpy(ids), torch.from_numpy(mask)


def images(n, seed=0):
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def test_unprompted_loops_reproduce_hf_clip(tiny):
    model = make_model(tiny)
    ids, mask = text_batch(tiny)  # three captions of different lengths: padding is exercised
    pixels = images(3)
    with torch.no_grad():
        ours_text = model.encode_text_frozen(ids, mask)
        hf_text = tiny.clip.get_text_features(input_ids=ids, attention_mask=mask).pooler_output
        ours_image = model.encode_image_frozen(pixels)
        hf_image = tiny.clip.get_image_features(pixel_values=pixels).pooler_output
    assert (ours_text - hf_text).abs().max() <= 1e-5
    assert (ours_image - hf_image).abs().max() <= 1e-5


def test_text_mask_layout():
    attention = torch.tensor([[1, 1, 1, 0, 0]])  # SOT, word, EOS, pad, pad
    mask = text_attention_mask(attention, 2)[0, 0]  # order: SOT, P, P, word, EOS, pad, pad
    assert mask.shape == (7, 7)
    assert mask[1].tolist() == [True, True, True, True, True, False, False]  # prompt rows: all valid tokens
    assert mask[3].tolist() == [True, True, True, True, False, False, False]  # 'word': causal + prompts
    assert mask[0].tolist() == [True, True, True, False, False, False, False]  # SOT sees itself + prompts
    assert not mask[:, 5:].any()  # padding is never attended to


def test_token_rows_stay_causal_and_prompt_rows_see_every_valid_token(tiny):
    """Run a real text block with prompts: changing a later token moves the prompts, not earlier tokens."""
    model = make_model(tiny)
    ids, mask = text_batch(tiny, ["a photo of red alpha"])
    changed = ids.clone()
    changed[0, 4] = tiny.tokenizer.tokenizer.token_to_id("blue")  # token 4 = 'red' (0 = SOT)
    prompts = torch.randn(1, 2, tiny.clip.config.text_config.hidden_size)
    layer, full_mask = model.text_layers[0], text_attention_mask(mask, 2)
    with torch.no_grad():
        out = [layer(insert_prompts(model._embed_text(x), prompts), full_mask)[0] for x in (ids, changed)]
    tokens_before = [0, 3, 4, 5]  # SOT and the tokens 'a', 'photo', 'of' (sequence positions after 2 prompts)
    assert torch.allclose(out[0][tokens_before], out[1][tokens_before], atol=1e-6)
    assert not torch.allclose(out[0][1:3], out[1][1:3], atol=1e-4)  # prompt rows saw the change
    assert not torch.allclose(out[0][6], out[1][6], atol=1e-4)  # so did the later token itself


@pytest.mark.parametrize("variant", ["mitp", "prompts-only", "mlp-interaction", "p-clip", "linear-probe"])
def test_padding_does_not_change_outputs(tiny, variant):
    model = make_model(tiny, variant=variant).eval()
    ids, mask = text_batch(tiny)
    garbage = ids.clone()
    garbage[mask == 0] = 7  # any id at padded positions
    pixels = images(3)
    with torch.no_grad():
        reference = model(pixels, ids, mask)
        assert torch.allclose(reference, model(pixels, garbage, mask), atol=1e-5)
        alone = model(pixels[2:], ids[2:], mask[2:])  # the short caption alone, no longer neighbours
    assert torch.allclose(reference[2:], alone, atol=1e-5)


@pytest.mark.parametrize("variant", ["mitp", "prompts-only", "mlp-interaction", "p-clip", "linear-probe"])
def test_the_caption_reaches_every_prediction_under_the_fused_head(tiny, variant):
    pixels = images(1).expand(2, -1, -1, -1)
    ids, mask = text_batch(tiny, ["red alpha", "blue gamma delta"])
    with torch.no_grad():
        logits = make_model(tiny, variant, layers=() if variant == "p-clip" else (2, 3))(pixels, ids, mask)
    assert not torch.allclose(logits[0], logits[1], atol=1e-5)  # same image, other caption: other logits


@pytest.mark.parametrize("variant, caption_matters", [("mitp", True), ("mlp-interaction", True), ("prompts-only", False), ("p-clip", False)])
def test_under_the_image_head_only_interaction_brings_the_caption(tiny, variant, caption_matters):
    pixels = images(1).expand(2, -1, -1, -1)
    ids, mask = text_batch(tiny, ["red alpha", "blue gamma delta"])
    with torch.no_grad():
        logits = make_model(tiny, variant, layers=() if variant == "p-clip" else (2, 3), head="image")(pixels, ids, mask)
    assert torch.allclose(logits[0], logits[1], atol=1e-6) is not caption_matters


def test_fused_head_is_the_normalised_sum_of_image_and_caption_embeddings(tiny):
    model = make_model(tiny).eval()
    ids, mask = text_batch(tiny)
    pixels = images(3)
    with torch.no_grad():
        image, text = model._mitp_encode(pixels, ids, mask)
        logits = model(pixels, ids, mask)
    unit = torch.nn.functional.normalize
    expected = model.clip.logit_scale.exp() * unit(unit(image, dim=-1) + unit(text, dim=-1), dim=-1) @ model.class_embeddings.T
    assert torch.allclose(logits, expected, atol=1e-5)
    assert text.shape == image.shape == (3, tiny.clip.config.projection_dim)


@pytest.mark.parametrize("variant", ["mitp", "p-clip", "linear-probe"])
def test_the_head_runs_in_fp32_under_bf16_autocast(tiny, variant):
    model = make_model(tiny, variant, layers=() if variant == "p-clip" else (2, 3), task="multi-label").eval()
    ids, mask = text_batch(tiny)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(images(3), ids, mask)
    assert logits.dtype == torch.float32


def test_pclip_prompts_every_block_of_each_tower(tiny):
    model = make_model(tiny, "p-clip", layers=())
    n_text, n_vision = tiny.clip.config.text_config.num_hidden_layers, tiny.clip.config.vision_config.num_hidden_layers
    assert model.deep_text_prompts.shape[0] == n_text and model.deep_vision_prompts.shape[0] == n_vision
    assert model.text_layer_ids == tuple(range(n_text)) and model.vision_layer_ids == tuple(range(n_vision))


@pytest.mark.parametrize(
    "variant, layers, head, unused",
    [
        ("mitp", (2, 3), "fused", ()),
        ("mitp", (3,), "fused", ()),  # the hub's text output is carried to the end of the text tower
        ("mitp", (3,), "image", ("hub.vision_to_text", "hub.text_intra")),  # DESIGN 3.4: nowhere to go
        ("mlp-interaction", (1, 3), "fused", ()),
        ("p-clip", (), "fused", ()),
        ("p-clip", (), "image", ("deep_text_prompts",)),
    ],
)
def test_gradients_reach_only_prompts_hub_and_head(tiny, variant, layers, head, unused):
    model = make_model(tiny, variant, layers, task="multi-label", head=head).train()
    ids, mask = text_batch(tiny)
    logits = model(images(3), ids, mask)
    classification_loss("multi-label", logits, torch.ones_like(logits)).backward()
    trainable = model.trainable_parameters()
    assert all(p.grad is None for p in model.clip.parameters())
    for name, param in model.named_parameters():
        if param.grad is not None:
            assert name in trainable, name
    for name, param in trainable.items():
        if name.startswith(unused):
            assert param.grad is None, name
        else:
            assert param.grad is not None and param.grad.abs().sum() > 0, name
    expected = {name for name in trainable if not name.startswith(unused)}
    assert effective_parameter_names(model.config, tiny.clip.config, model.num_classes) == expected


@pytest.mark.parametrize("similarity", ["cos", "mmd", "cov-pearson"])
@pytest.mark.parametrize("gate", ["softmax", "sigmoid"])
def test_memory_hub_shapes_and_softmax_gate(similarity, gate):
    hub = MemoryHub(text_dim=8, vision_dim=12, width=5, similarity=similarity, gate=gate)
    hub.record_stats = True
    p_t, p_v = torch.randn(4, 3, 8), torch.randn(4, 3, 12)
    next_t, next_v = hub(p_t, p_v)
    assert next_t.shape == p_t.shape and next_v.shape == p_v.shape
    assert torch.isfinite(next_t).all() and torch.isfinite(next_v).all()
    if gate == "softmax":  # z sums to 1 over the L prompt tokens
        assert 0 < float(hub.stats["text_z_min"]) <= 1 / 3 <= float(hub.stats["text_z_max"]) < 1


def test_hub_follows_equation_six():
    """With identical inputs and an identity-like setting the hub output is reproducible by hand."""
    torch.manual_seed(0)
    hub = MemoryHub(text_dim=6, vision_dim=6, width=4, similarity="cos", gate="softmax")
    p_t, p_v = torch.randn(2, 3, 6), torch.randn(2, 3, 6)
    other = hub.vision_to_text(p_v)
    z = torch.softmax(torch.relu(torch.cosine_similarity(hub.text_intra(p_t), p_t, dim=-1)), dim=-1)[..., None]
    r = torch.softmax(torch.relu(torch.cosine_similarity(p_t, other, dim=-1)), dim=-1)[..., None]
    expected = z * p_t + (1 - z) * r * other
    assert torch.allclose(hub(p_t, p_v)[0], expected, atol=1e-6)


def test_similarities():
    a = torch.randn(2, 3, 50)
    sim = TokenSimilarity("cov-pearson")
    assert torch.allclose(sim(a, 3 * a + 1, within_modality=False), torch.ones(2, 3), atol=1e-5)  # Pearson
    assert torch.allclose(sim(a, a, within_modality=True), a.var(dim=-1, unbiased=False), atol=1e-5)  # covariance
    assert torch.allclose(TokenSimilarity("cos")(a, 2 * a, within_modality=True), torch.ones(2, 3), atol=1e-5)
    assert torch.allclose(TokenSimilarity("mmd")(a, a, within_modality=True), torch.ones(2, 3))


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


def test_mitp_small_and_base_have_the_same_trainable_count(tiny):
    assert make_model(tiny, layers=(2, 3)).count_trainable() == make_model(tiny, layers=(3,)).count_trainable()


def test_checkpoint_state_round_trip(tiny):
    model = make_model(tiny, task="multi-label")
    state = model.trainable_state_dict()
    other = make_model(tiny, task="multi-label")
    with torch.no_grad():
        other.text_prompts.add_(1.0)
    other.load_trainable_state_dict(state)
    assert torch.equal(other.text_prompts, model.text_prompts)
    with pytest.raises(ValueError, match="missing"):
        other.load_trainable_state_dict({k: v for k, v in state.items() if k != "class_bias"})
