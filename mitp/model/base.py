"""The prompted CLIP that every variant shares: a frozen Hugging Face CLIP, wrapped and never edited.

    image ─ vision embeddings ─ blocks ... ─ CLS ─ proj ─ v ─┐
                                                              ├─ head ─ (+ class bias) ─ logits (B, K)
    text  ─ token embeddings  ─ blocks ... ─ EOS ─ proj ─ t ─┘    │
                              class templates ─ frozen text tower ─ z_k

`PromptedCLIP` holds what the families have in common: the frozen backbone, embedding and pooling, the
explicit attention masks, the unprompted towers (class embeddings z_k, the linear probe), the class prompts
of the per-class head, the head and the multi-label class bias, and the trainable state a checkpoint holds.
A family (mitp.model.temporal, .deep, .probe) adds its trainable prompts in `add_prompt_parameters` and says
how the towers run in `encode`; mitp.config.variants says which family a variant is, and mitp.model.build
builds it. What happens at the hub is an `Exchange` (mitp.model.hub) and how logits are read is a `Head`
(mitp.model.heads), each chosen by config. docs/decisions.md says why each open point of the paper is read
as it is.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import CLIPModel

from ..config import ModelConfig, check_layers_fit, variant
from .backbone import crop_size, towers
from .heads import build_head
from .hub import Exchange
from .sequences import caption_with_class_prompts, text_attention_mask

PROMPT_INIT_STD = 0.02  # paper 4.2: prompts ~ N(0, 0.02)


class PromptedCLIP(nn.Module):
    """The base of every variant: `encode` gives the head its inputs, `forward` reads the logits (Eq. 7)."""

    uses_class_embeddings = True  # the frozen class-template embeddings z_k (not the linear probe)

    def __init__(self, clip: CLIPModel, config: ModelConfig, num_classes: int, eos_token_id: int):
        super().__init__()
        if clip.config._attn_implementation != "sdpa":
            raise ValueError("mitp builds boolean attention masks: load the backbone with attn_implementation='sdpa'")
        self.clip = clip  # frozen, never edited
        self.config = config
        self.spec = variant(config.variant)
        self.num_classes = num_classes
        self.eos_token_id = eos_token_id
        text_cfg, vision_cfg = towers(clip.config)
        self.n_text, self.n_vision = text_cfg.num_hidden_layers, vision_cfg.num_hidden_layers
        self.context_length = text_cfg.max_position_embeddings  # 77: the longest [SOT, caption, EOS]
        check_layers_fit(config, self.n_text, self.n_vision)
        # 0-based indices of the HF blocks that get prompts; config numbers are the paper's (1 = first block)
        self.text_layer_ids, self.vision_layer_ids = self.prompted_layers()
        self.layer_ids = self.text_layer_ids  # the interaction layers (temporal prompts: the same in both towers)

        self.add_prompt_parameters(text_cfg.hidden_size, vision_cfg.hidden_size, config.prompt_length)
        if "hub" not in self._modules:
            self.register_module("hub", None)  # the exchange between interaction layers: the temporal family's
        self.head = build_head(config.effective_head, int(clip.config.projection_dim or 0), num_classes)
        if config.task == "multi-label" and self.spec.learns_class_bias:
            # per-class bias for BCE, initialised from the training data by the trainer (docs/decisions.md)
            self.class_bias = nn.Parameter(torch.zeros(num_classes))
        else:
            self.register_parameter("class_bias", None)

        self.register_buffer("class_embeddings", torch.empty(0), persistent=False)  # z_k: (K, P), normalised
        # per-class head: each class's prompt tokens (no SOT / EOS), padded, and their counts
        self.register_buffer("class_prompt_ids", torch.empty(0, dtype=torch.long), persistent=False)  # (K, C)
        self.register_buffer("class_prompt_lengths", torch.empty(0, dtype=torch.long), persistent=False)  # (K,)

    @property
    def exchange(self) -> Exchange | None:
        """The exchange between interaction layers (registered as `hub`: checkpoints name its tensors so)."""
        return self._modules.get("hub")  # type: ignore[return-value]

    # -----------------------------------------------------------------------------------------------
    # what a family defines

    def prompted_layers(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """0-based blocks of the text and vision towers that get prompts: the config's layers in both."""
        ids = tuple(n - 1 for n in self.config.layers)
        return ids, ids

    def add_prompt_parameters(self, text_dim: int, vision_dim: int, prompt_length: int) -> None:
        """Create the family's trainable prompts (and exchange); called before the head, in this order,
        so that a seed draws the same initial values whatever the family."""

    def encode(
        self, pixel_values: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(v, t): the image embedding (B, P) and what the head reads of the text tower: the caption's
        embedding (B, P), one per class (B, K, P), or None."""
        raise NotImplementedError

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
    # the per-class head's sequences

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
    # prediction (Eq. 7)

    def forward(self, pixel_values: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Class logits (B, K), in fp32 whatever the autocast around the call."""
        if self.uses_class_embeddings and self.class_embeddings.numel() == 0:
            raise RuntimeError("class embeddings are not set: call set_class_embeddings() first")
        image, text = self.encode(pixel_values, input_ids, attention_mask)
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

    def train(self, mode: bool = True) -> PromptedCLIP:
        super().train(mode)
        self.clip.eval()  # the frozen backbone always runs in eval mode
        return self


def classification_loss(task: str, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Eq. 8 (cross-entropy) for single-label, Eq. 9 (binary cross-entropy with logits) for multi-label."""
    if task == "multi-label":
        return nn.functional.binary_cross_entropy_with_logits(logits.float(), labels.float())
    return nn.functional.cross_entropy(logits.float(), labels)
