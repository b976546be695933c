
import pytest
import torch

from mitp.config import HubConfig, ModelConfig
from mitp.model.base import classification_loss
from mitp.model.build import effective_parameter_names, prompted_clip
from mitp.model.sequences import caption_with_class_prompts, insert_prompts, text_attention_mask

CAPTIONS = ["a photo of red alpha", "the caption says blue beta and some very old words", "dot"]


def make_model(backbone, variant="mitp", layers=(2, 3), similarity="cos", task="single-label", classes=4, length=2, head="fused", map="token"):
    config = ModelConfig(
        variant=variant, layers=layers, similarity=similarity, prompt_length=length, task=task, hub=HubConfig(width=16, map=map), head=head
    )
    torch.manual_seed(0)
    model = prompted_clip(backbone.clip, config, classes, backbone.tokenizer.info.eos_token_id)
    ids, mask = backbone.tokenizer([f"a photo of class {k}" for k in ("one", "two", "three", "four")[:classes]])
    model.set_class_embeddings(torch.from_numpy(ids), torch.from_numpy(mask), 1)
    if head == "per-class":
        model.set_class_prompts(torch.from_numpy(ids), torch.from_numpy(mask))
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


@pytest.mark.parametrize(
    "variant, head",
    [("mitp", "fused"), ("mitp", "image"), ("mitp", "per-class"), ("mlp-interaction", "fused"), ("p-clip", "per-class"), ("linear-probe", "fused")],
)
def test_a_batch_cut_to_its_longest_caption_gives_the_logits_of_the_padded_batch(tiny, variant, head):
    """Training and evaluation batches are cut to their longest caption (mitp.data.dataset.collate_pairs); the
    logits must be those of the 77-token batch, also under the per-class head when a caption nearly fills
    the context and has to be cut for its class prompt."""
    from mitp.data.dataset import collate_pairs

    model = make_model(tiny, variant=variant, head=head).eval()
    nearly_full = " ".join(["alpha"] * 74)  # 74 words + SOT + EOS: the class prompt must cut it
    for captions in (CAPTIONS, [*CAPTIONS, nearly_full]):
        ids, mask = text_batch(tiny, captions)
        items = [{"input_ids": i, "attention_mask": m, "labels": torch.tensor(0)} for i, m in zip(ids, mask, strict=True)]
        batch = collate_pairs(items)
        longest = int(mask.sum(dim=1).max())
        assert batch["input_ids"].shape == batch["attention_mask"].shape == (len(captions), longest)
        pixels = images(len(captions))
        with torch.no_grad():
            full, cut = model(pixels, ids, mask), model(pixels, batch["input_ids"], batch["attention_mask"])
        assert (full - cut).abs().max() <= 1e-4, (captions[-1][:20], (full - cut).abs().max())


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
        image, text = model.encode(pixels, ids, mask)
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
        ("mitp", (3,), "image", ("hub.vision_to_text", "hub.text_intra")),  # docs/decisions.md §4: nowhere to go
        ("mlp-interaction", (1, 3), "fused", ()),
        ("p-clip", (), "fused", ()),
        ("p-clip", (), "image", ("deep_text_prompts",)),
        ("mitp", (2, 3), "per-class", ()),
        ("mitp", (3,), "per-class", ()),  # the hub's last text output reaches every class pass
        ("p-clip", (), "per-class", ()),
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


def test_class_sequences_put_the_class_prompt_after_the_caption_and_keep_it_whole():
    sot, eos = 9, 8
    ids = torch.tensor([[sot, 1, 2, eos, 0, 0, 0, 0], [sot, 1, 2, 3, 4, 5, 6, eos]])  # (B=2, T=8): short, full
    mask = torch.tensor([[1, 1, 1, 1, 0, 0, 0, 0], [1] * 8])
    class_ids = torch.tensor([[20, 21], [30, 0]])  # class 0: two tokens, class 1: one (padded)
    out, out_mask = caption_with_class_prompts(ids, mask, class_ids, torch.tensor([2, 1]), eos)
    assert out.shape == out_mask.shape == (2, 2, 8)
    assert out[0, 0].tolist() == [sot, 1, 2, 20, 21, eos, eos, eos] and out_mask[0, 0].tolist() == [1] * 6 + [0] * 2
    assert out[0, 1].tolist() == [sot, 1, 2, 30, eos, eos, eos, eos] and out_mask[0, 1].tolist() == [1] * 5 + [0] * 3
    # a caption that fills the context is cut so that the class prompt and EOS stay
    assert out[1, 0].tolist() == [sot, 1, 2, 3, 4, 20, 21, eos] and out_mask[1, 0].tolist() == [1] * 8
    assert out[1, 1].tolist() == [sot, 1, 2, 3, 4, 5, 30, eos]


@pytest.mark.parametrize("variant, layers", [("mitp", (2, 3)), ("prompts-only", (3,)), ("p-clip", ())])
def test_the_per_class_head_reads_one_text_pass_per_class(tiny, variant, layers):
    """Logit k depends on class k's prompt alone, and the caption reaches every logit."""
    model = make_model(tiny, variant, layers, head="per-class").eval()
    ids, mask = text_batch(tiny)
    pixels = images(3)
    with torch.no_grad():
        logits = model(pixels, ids, mask)
        assert logits.shape == (3, 4)
        model.class_prompt_ids[0, 0] = tiny.tokenizer.tokenizer.token_to_id("blue")  # change class 0's prompt
        changed = model(pixels, ids, mask)
        other_caption = model(pixels, ids.flip(0), mask.flip(0))
    assert not torch.allclose(changed[:, 0], logits[:, 0])
    assert torch.equal(changed[:, 1:], logits[:, 1:])
    assert (other_caption[0] - changed[0]).abs().min() > 1e-6  # image 0 with caption 2 instead of caption 0: every class moves


@pytest.mark.parametrize("map", ["token", "pairwise"])
def test_both_hub_readings_run_in_the_model_and_differ(tiny, map):
    ids, mask = text_batch(tiny)
    with torch.no_grad():
        logits = make_model(tiny, map=map)(images(3), ids, mask)
        other = make_model(tiny, map="pairwise" if map == "token" else "token")(images(3), ids, mask)
    assert logits.shape == (3, 4) and torch.isfinite(logits).all()
    assert not torch.allclose(logits, other)
