"""MITP on a frozen Hugging Face CLIP, read top to bottom.

    image ─ vision embeddings ─ blocks 1..l0-1 ─┐                 ┌─ [CLS, p_v, patches] ─ ... ─ last block ─ CLS ─ proj ─ v ─┐
                                                 ├─ interaction layers (lockstep) ─ hub ─┤                                    ├─ fused head ─ logits
    text  ─ token embeddings  ─ blocks 1..l0-1 ─┘   [SOT, p_t, tokens, EOS, pad]         └─ [SOT, p_t, tokens] ─ ... ─ EOS ─ t ─┘       │
                                                                                        class templates ─ frozen text tower ─ z_k ─┘

At an interaction layer l the prompts of both towers are inserted after CLS/SOT, the frozen block runs,
and the block's OUTPUT at the prompt positions (p-hat, Eq. 2) goes to the shared memory hub, whose result
becomes the prompts of the next interaction layer. Layers between interaction layers (extraction layers)
run without prompts. After the last interaction layer the hub output is inserted at the next block of
BOTH towers and carried to their ends (docs/decisions.md §4).

What happens at the hub is an `Exchange` (mitp.model.hub: the memory hub, the MLP exchange, none) and how
logits are read is a `Head` (mitp.model.heads: fused, image, per-class, linear), each chosen by config: a
reading of the paper is a small module plus a config value. The head says what it needs of the text
tower: the prompted caption's embedding (fused), nothing (image: text blocks after the last interaction
layer are skipped), or one pass per class over the caption followed by the class prompt (per-class: the
text prompts each interaction layer received from the caption's pass are inserted at the same layers of
every class pass, and the hub's last output is carried to its end, so one hub run serves all K passes).
The class embeddings z_k are the frozen, unprompted text tower on hand-written templates, computed once.

Variants: `mitp` (memory hub), `prompts-only` (temporal prompts, no exchange), `mlp-interaction` (naive
MLP exchange), `p-clip` (deep prompt tuning of every block of each tower) and `linear-probe` (frozen
features + a linear head). docs/decisions.md says why each open point of the paper is read as it is.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from transformers import CLIPConfig, CLIPModel

from ..config import ModelConfig, check_layers_fit
from .backbone import crop_size, text_eos_id, towers
from .heads import NO_TEXT, PER_CLASS, build_head
from .hub import build_exchange

PROMPT_INIT_STD = 0.02  # paper 4.2: prompts ~ N(0, 0.02)
PROMPTED_VARIANTS = ("mitp", "prompts-only", "mlp-interaction")


class MITPModel(nn.Module):
    def __init__(self, clip: CLIPModel, config: ModelConfig, num_classes: int, eos_token_id: int):
        super().__init__()
        if clip.config._attn_implementation != "sdpa":
            raise ValueError("mitp builds boolean attention masks: load the backbone with attn_implementation='sdpa'")
        self.clip = clip  # frozen, never edited
        self.config = config
        self.num_classes = num_classes
        self.eos_token_id = eos_token_id
        text_cfg, vision_cfg = towers(clip.config)
        self.n_text, self.n_vision = text_cfg.num_hidden_layers, vision_cfg.num_hidden_layers
        self.context_length = text_cfg.max_position_embeddings  # 77: the longest [SOT, caption, EOS]
        d_t, d_v, L = text_cfg.hidden_size, vision_cfg.hidden_size, config.prompt_length
        variant = config.variant

        check_layers_fit(config, self.n_text, self.n_vision)
        # 0-based indices of the HF blocks that get prompts; config numbers are the paper's (1 = first block).
        # P-CLIP's `all` (no numbers) means every block of each tower: 12 text + 24 vision on ViT-L/14.
        if variant == "p-clip" and not config.layers:
            self.text_layer_ids, self.vision_layer_ids = tuple(range(self.n_text)), tuple(range(self.n_vision))
        else:
            self.text_layer_ids = self.vision_layer_ids = tuple(n - 1 for n in config.layers)
        self.layer_ids = self.text_layer_ids  # the interaction layers (MITP variants: the same in both towers)

        if variant in PROMPTED_VARIANTS:
            self.text_prompts = nn.Parameter(torch.randn(L, d_t) * PROMPT_INIT_STD)  # p_t^{l0}
            self.text_to_vision_prompts = nn.Linear(d_t, d_v)  # Eq. 1: p_v^{l0} = W p_t^{l0} + b
        self.hub = build_exchange(config, d_t, d_v)  # the interaction step; None for p-clip and linear-probe
        if variant == "p-clip":
            self.deep_text_prompts = nn.Parameter(torch.randn(len(self.text_layer_ids), L, d_t) * PROMPT_INIT_STD)
            self.deep_vision_prompts = nn.Parameter(torch.randn(len(self.vision_layer_ids), L, d_v) * PROMPT_INIT_STD)
        self.head = build_head(variant, config.head, int(clip.config.projection_dim or 0), num_classes)
        if config.task == "multi-label" and variant != "linear-probe":
            # per-class bias for BCE, initialised from the training data by the trainer (docs/decisions.md)
            self.class_bias = nn.Parameter(torch.zeros(num_classes))
        else:
            self.register_parameter("class_bias", None)

        self.register_buffer("class_embeddings", torch.empty(0), persistent=False)  # z_k: (K, P), normalised
        # per-class head: each class's prompt tokens (no SOT / EOS), padded, and their counts
        self.register_buffer("class_prompt_ids", torch.empty(0, dtype=torch.long), persistent=False)  # (K, C)
        self.register_buffer("class_prompt_lengths", torch.empty(0, dtype=torch.long), persistent=False)  # (K,)

    # -----------------------------------------------------------------------------------------------
    # shortcuts into the frozen backbone

    @property
    def text_layers(self) -> nn.ModuleList:
        return self.clip.text_model.encoder.layers

    @property
    def vision_layers(self) -> nn.ModuleList:
        return self.clip.vision_model.encoder.layers

    @property
    def prompt_length(self) -> int:
        return self.config.prompt_length

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
    # frozen towers without prompts (class embeddings, linear probe, parity with HF CLIP)

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

    @torch.no_grad()
    def set_class_embeddings(self, template_ids: torch.Tensor, template_mask: torch.Tensor, templates_per_class: int) -> None:
        """Eq. 7's z_k: the frozen text tower on hand-written templates, averaged per class, cached.

        `template_ids` is (K * T, 77), class-major (all templates of class 0 first)."""
        if template_ids.shape[0] != self.num_classes * templates_per_class:
            raise ValueError(f"expected {self.num_classes} x {templates_per_class} templates, got {template_ids.shape[0]}")
        embeds = torch.cat([
            self.encode_text_frozen(ids, mask)
            for ids, mask in zip(template_ids.split(256), template_mask.split(256), strict=True)
        ])  # (K * T, P)
        embeds = nn.functional.normalize(embeds.float(), dim=-1).view(self.num_classes, templates_per_class, -1)
        self.class_embeddings = nn.functional.normalize(embeds.mean(dim=1), dim=-1)  # (K, P)

    @torch.no_grad()
    def set_class_prompts(self, ids: torch.Tensor, mask: torch.Tensor) -> None:
        """The per-class head's class prompts: one tokenized prompt per class, (K, T) with SOT and EOS,
        kept without them (K, C) with their lengths (K,), to follow each caption."""
        lengths = mask.sum(dim=-1) - 2  # (K,): tokens between SOT and EOS
        if ids.shape[0] != self.num_classes:
            raise ValueError(f"expected {self.num_classes} class prompts, got {ids.shape[0]}")
        if int(lengths.max()) > ids.shape[1] - 3:
            raise ValueError(f"a class prompt of {int(lengths.max())} tokens leaves no room for the caption")
        self.class_prompt_ids = ids[:, 1:1 + max(1, int(lengths.max()))].long().clone()  # (K, C)
        self.class_prompt_lengths = lengths.long()

    def max_class_cosine(self) -> float:
        """The highest cosine between two classes' template embeddings. Near 1, Eq. 7 cannot tell
        those classes apart whatever the prompts do (docs/decisions.md §9): a sign of a backbone or templates
        that do not know the class names."""
        if self.class_embeddings.shape[0] < 2:
            return float("nan")
        cosine = self.class_embeddings @ self.class_embeddings.T  # (K, K)
        cosine.fill_diagonal_(-1.0)
        return float(cosine.max())

    # -----------------------------------------------------------------------------------------------
    # MITP: temporal prompts and the memory hub

    def _initial_prompts(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        p_t = self.text_prompts.unsqueeze(0).expand(batch, -1, -1)  # (B, L, d_t)
        p_v = self.text_to_vision_prompts(p_t)  # (B, L, d_v), Eq. 1
        return p_t, p_v

    def _mitp_encode(
        self, pixel_values: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(v, t): the prompted towers' projected CLS (B, P) and what the head reads of the text tower:
        the caption's EOS embedding (B, P), one per class (B, K, P), or None."""
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
            assert self.hub is not None  # an interaction variant always has its exchange
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

    def _class_sequences(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.class_prompt_ids.numel() == 0:
            raise RuntimeError("class prompts are not set: call set_class_prompts() first")
        # A batch trimmed to its longest caption (mitp.data.dataset.collate_pairs) gets back the room a class prompt
        # needs, up to the text context: each caption is then cut exactly where it would be at full length.
        room = min(self.context_length, input_ids.shape[1] + self.class_prompt_ids.shape[1]) - input_ids.shape[1]
        if room > 0:
            input_ids = nn.functional.pad(input_ids, (0, room), value=self.eos_token_id)  # (B, T + room)
            attention_mask = nn.functional.pad(attention_mask, (0, room), value=0)
        ids, mask = caption_with_class_prompts(
            input_ids, attention_mask, self.class_prompt_ids, self.class_prompt_lengths, self.eos_token_id
        )  # (B, K, T) each
        return ids.flatten(0, 1), mask.flatten(0, 1)

    # -----------------------------------------------------------------------------------------------
    # P-CLIP: deep prompt tuning of both towers, no interaction

    def _deep_prompted_tower(self, layers, layer_ids, h, prompts: torch.Tensor, plain_mask, prompt_mask) -> torch.Tensor:
        """Fresh learned prompts replace the prompt slots at every prompted layer (VPT-deep)."""
        slot = {layer_id: k for k, layer_id in enumerate(layer_ids)}
        has_prompts = False
        for i, layer in enumerate(layers):
            if i in slot:
                p = prompts[slot[i]].unsqueeze(0).expand(h.shape[0], -1, -1)  # (B, L, d)
                h = replace_prompts(h, p) if has_prompts else insert_prompts(h, p)
                has_prompts = True
            h = layer(h, prompt_mask if has_prompts else plain_mask)
        return h

    def _pclip_encode(
        self, pixel_values: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        h_v = self._deep_prompted_tower(
            self.vision_layers, self.vision_layer_ids, self._embed_image(pixel_values), self.deep_vision_prompts, None, None
        )
        image = self._pool_image(h_v)  # (B, P)
        if self.head.text_input == NO_TEXT:
            return image, None
        if self.head.text_input == PER_CLASS:
            input_ids, attention_mask = self._class_sequences(input_ids, attention_mask)  # (B*K, T) each
        plain, prompted = text_attention_mask(attention_mask, 0), text_attention_mask(attention_mask, self.prompt_length)
        h_t = self._deep_prompted_tower(
            self.text_layers, self.text_layer_ids, self._embed_text(input_ids), self.deep_text_prompts, plain, prompted
        )
        text = self._pool_text(h_t, input_ids, self.prompt_length)  # (B, P) or (B*K, P)
        return image, text.view(image.shape[0], self.num_classes, -1) if self.head.text_input == PER_CLASS else text

    # -----------------------------------------------------------------------------------------------
    # prediction (Eq. 7)

    def forward(self, pixel_values: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Class logits (B, K), in fp32 whatever the autocast around the call."""
        text: torch.Tensor | None
        if self.config.variant == "linear-probe":
            with torch.no_grad():
                image = self.encode_image_frozen(pixel_values)
                text = self.encode_text_frozen(input_ids, attention_mask)
        else:
            if self.class_embeddings.numel() == 0:
                raise RuntimeError("class embeddings are not set: call set_class_embeddings() first")
            encode = self._pclip_encode if self.config.variant == "p-clip" else self._mitp_encode
            image, text = encode(pixel_values, input_ids, attention_mask)
        logits = self.head(image, text, self.class_embeddings, self.clip.logit_scale.exp())  # (B, K), fp32
        if self.class_bias is not None:
            logits = logits + self.class_bias.float()
        return logits

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

    def train(self, mode: bool = True) -> MITPModel:
        super().train(mode)
        self.clip.eval()  # the frozen backbone always runs in eval mode
        return self


def effective_parameter_names(config: ModelConfig, arch: CLIPConfig, num_classes: int) -> set[str]:
    """The trainable parameters of `config` on backbone `arch` that receive a gradient. Which ones a
    gradient reaches depends on the wiring (layer counts, prompt slots, head), not on widths, so it is
    found on a width-8 twin of `arch` with the same layer counts: a tenth of a second even for ViT-L/14."""
    twin = copy.deepcopy(arch)
    text, vision = towers(twin)
    for tower in (text, vision):
        tower.hidden_size, tower.intermediate_size, tower.num_attention_heads = 8, 8, 1
    vision.image_size = vision.patch_size  # one patch
    twin.projection_dim = text.projection_dim = vision.projection_dim = 8
    twin._attn_implementation = "sdpa"
    config = config.model_copy(update={"hub": config.hub.model_copy(update={"width": 2, "mmd_features": 2})})
    model = MITPModel(CLIPModel(twin).requires_grad_(False), config, num_classes, text_eos_id(arch))
    model.class_embeddings = nn.functional.normalize(torch.randn(num_classes, 8), dim=-1)
    model.class_prompt_ids = torch.zeros(num_classes, 1, dtype=torch.long)  # one token per class prompt
    model.class_prompt_lengths = torch.ones(num_classes, dtype=torch.long)
    return model.train().parameters_receiving_gradients()


def classification_loss(task: str, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Eq. 8 (cross-entropy) for single-label, Eq. 9 (binary cross-entropy with logits) for multi-label."""
    if task == "multi-label":
        return nn.functional.binary_cross_entropy_with_logits(logits.float(), labels.float())
    return nn.functional.cross_entropy(logits.float(), labels)


# ---------------------------------------------------------------------------------------------------
# sequence helpers: prompts live right after CLS (vision) or SOT (text)


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
