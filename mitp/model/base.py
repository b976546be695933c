"""The prompted CLIP that every variant shares: a frozen Hugging Face CLIP, wrapped and never edited.

    image ─ vision embeddings ─ blocks ... ─ CLS ─ proj ─ v ─┐
                                                              ├─ head ─ (+ class bias) ─ logits (B, K)
    text  ─ token embeddings  ─ blocks ... ─ EOS ─ proj ─ t ─┘    │
                              class templates ─ frozen text tower ─ z_k

`PromptedCLIP` holds what the families have in common over the wrapped backbone (mitp.model.wrapped: the
towers' shortcuts, the unprompted towers, the trainable state a checkpoint holds): the class embeddings z_k,
the class prompts of the per-class head, the head and the multi-label class bias. A family (mitp.model.temporal, .deep, .probe) adds its trainable prompts in `add_prompt_parameters` and says
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
from .heads import build_head
from .hub import Exchange
from .sequences import caption_with_class_prompts
from .wrapped import WrappedCLIP

PROMPT_INIT_STD = 0.02  # paper 4.2: prompts ~ N(0, 0.02)


class PromptedCLIP(WrappedCLIP):
    """The base of every variant: `encode` gives the head its inputs, `forward` reads the logits (Eq. 7)."""

    uses_class_embeddings = True  # the frozen class-template embeddings z_k (not the linear probe)

    def __init__(self, clip: CLIPModel, config: ModelConfig, num_classes: int, eos_token_id: int):
        super().__init__(clip, eos_token_id)
        self.config = config
        self.spec = variant(config.variant)
        self.num_classes = num_classes
        check_layers_fit(config, self.n_text, self.n_vision)
        # 0-based indices of the HF blocks that get prompts; config numbers are the paper's (1 = first block)
        self.text_layer_ids, self.vision_layer_ids = self.prompted_layers()
        self.layer_ids = self.text_layer_ids  # the interaction layers (temporal prompts: the same in both towers)

        self.add_prompt_parameters(self.text_dim, self.vision_dim, config.prompt_length)
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
    def prompt_length(self) -> int:
        return self.config.prompt_length

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
    # what the head compares against: class embeddings, class prompts

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

def classification_loss(task: str, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Eq. 8 (cross-entropy) for single-label, Eq. 9 (binary cross-entropy with logits) for multi-label."""
    if task == "multi-label":
        return nn.functional.binary_cross_entropy_with_logits(logits.float(), labels.float())
    return nn.functional.cross_entropy(logits.float(), labels)
