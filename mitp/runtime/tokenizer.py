"""Fixed-length CLIP tokenization on the `tokenizers` library alone (no torch, no transformers).

The same code tokenizes for training and for the ONNX predict path, so both see identical ids. Captions
are cleaned first as OpenAI's CLIP tokenizer does (HTML entities unescaped twice, whitespace runs
collapsed, ends stripped): Food101's captions are web page titles, and "Chicken &amp; Dumplings" would
tokenize unlike "Chicken & Dumplings". Real backbones bring their `tokenizer.json`; random-weight presets
and tests use a small word-level tokenizer built in-process, so nothing needs the network.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

from ..errors import MitpError

CONTEXT_LENGTH = 77  # CLIP's text context

# Special tokens of the in-process word tokenizer; <eot> is not id 2, which transformers treats as a
# legacy CLIP config and would then pool at argmax(input_ids) instead of the first EOS.
WORD_SPECIALS = ("<pad>", "<unk>", "<sot>", "<eot>")

# A small English vocabulary: enough for the synthetic tasks, class templates and smoke tests.
BASIC_WORDS = tuple(
    """a an the of and with on in at to is this that photo picture image of type food dish movie
    poster plot genre about it its which shows showing image premise hypothesis entailment neutral
    contradiction class kind red green blue yellow purple orange white black alpha beta gamma delta
    epsilon zeta eta theta bright dark left right top bottom center square circle stripe dot some
    many few very quite rather plain noisy small large old new one two three four five six seven
    eight nine ten caption text words word says describes reads tells named called label""".split()
)


# A caption whose first 77 words still hold more characters than this is refused by predict and dropped by
# prepare: BPE's cost grows with a word's length squared, and no caption of the data sets comes near it.
MAX_CAPTION_CHARS = 16_384


def clean_caption(text: str) -> str:
    """OpenAI CLIP's basic_clean + whitespace_clean, without ftfy: unescape HTML twice, collapse whitespace."""
    text = html.unescape(html.unescape(text))
    return re.sub(r"\s+", " ", text).strip()


def clean_head(text: str, words: int = CONTEXT_LENGTH) -> str:
    """The cleaned caption cut after its first `words` space-separated words, computed from the head of
    the text only: what the tokenizer sees, whatever the caption's length.

    Why the ids stay identical: every word of a cleaned caption yields at least one token (the pre-tokenizers
    split only at whitespace, punctuation and digits, and cleaning has replaced every character that Python or
    the tokenizer counts as whitespace by one space), so words past the 77th only ever land after the cut at
    77 ids, and a caption that had more than 77 words still has more tokens than fit, so its `truncated` flag
    is kept. Cleaning is local to each raw word (an HTML entity holds no whitespace), so cleaning a head of
    raw words gives the head of the cleaned caption; the head grows until it holds enough words."""
    take = 4 * words
    while True:
        raw = text.split(None, take)  # the first `take` raw words, then the rest as one string
        head = clean_caption(" ".join(raw[:take])).split(" ", words)
        if len(raw) <= take or len(head) > words:
            return " ".join(head[:words])
        take *= 4  # words vanished in cleaning (`&nbsp;` alone): read further


@dataclass(frozen=True)
class TokenizerInfo:
    """What another program needs to tokenize exactly as mitp does (written into ONNX metadata)."""

    max_length: int
    bos_token_id: int
    eos_token_id: int
    pad_token_id: int


class ClipTokenizer:
    """Wraps a `tokenizers.Tokenizer`: pads and truncates every caption to exactly 77 ids."""

    def __init__(self, tokenizer: Tokenizer, bos: str, eos: str, pad: str, max_length: int = CONTEXT_LENGTH):
        self.tokenizer = tokenizer
        found = {name: tokenizer.token_to_id(name) for name in (bos, eos, pad)}
        ids = {name: i for name, i in found.items() if i is not None}
        if len(ids) < len(found):
            raise ValueError(f"tokenizer has no special token(s) {sorted(set(found) - set(ids))}")
        self.info = TokenizerInfo(max_length, ids[bos], ids[eos], ids[pad])
        tokenizer.enable_truncation(max_length)
        tokenizer.enable_padding(length=max_length, pad_id=ids[pad], pad_token=pad)

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    def __call__(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Token ids and attention mask, both int64 of shape (len(texts), 77)."""
        ids, mask, _ = self.encode(texts)
        return ids, mask

    def encode(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Like __call__, plus a bool per text that says whether it was truncated."""
        encodings = self.tokenizer.encode_batch([clean_head(text, self.info.max_length) for text in texts])
        ids = np.array([e.ids for e in encodings], dtype=np.int64)  # (B, 77)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)  # (B, 77)
        truncated = np.array([bool(e.overflowing) for e in encodings])
        return ids, mask, truncated

    def save(self, path: str | Path) -> None:
        self.tokenizer.save(str(path))

    def rules(self, file: str) -> dict[str, object]:
        """How to tokenize exactly as mitp does, as structured fields (bundle contract)."""
        info = self.info
        return {
            "file": file,
            "library": "Hugging Face tokenizers (the file's own normalizer, pre-tokenizer, model and post-processor)",
            "cleaning": {
                "steps": ["HTML-unescape", "HTML-unescape again", "replace each run of whitespace by one space", "strip whitespace at both ends"],
                "whitespace": "characters for which Python's str.isspace() is true: U+0009-000D, U+001C-0020, U+0085, U+00A0, "
                "U+1680, U+2000-200A, U+2028, U+2029, U+202F, U+205F, U+3000",
                "reference": "OpenAI CLIP's basic_clean and whitespace_clean, without ftfy; HTML5 entity rules (Python html.unescape)",
            },
            "add_special_tokens": True,
            "max_length": info.max_length,
            "bos_token_id": info.bos_token_id,
            "eos_token_id": info.eos_token_id,
            "pad_token_id": info.pad_token_id,
            "truncation": "to max_length ids including the start and end tokens: the text is cut, the end token kept",
            "padding": {"side": "right", "to": info.max_length, "id": info.pad_token_id},
            "attention_mask": (
                "1 for the ids of the encoding (start, text, end), 0 for padding; not input_ids != pad_token_id, "
                "since the pad id may equal the end id (it does for OpenAI CLIP)"
            ),
        }


def build_word_tokenizer(words: tuple[str, ...] = BASIC_WORDS) -> ClipTokenizer:
    """A deterministic word-level tokenizer with CLIP's framing ([SOT] words [EOT] pad...)."""
    vocab = {token: i for i, token in enumerate(WORD_SPECIALS)}
    for word in words:
        vocab.setdefault(word.lower(), len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="<sot> $A <eot>", special_tokens=[("<sot>", vocab["<sot>"]), ("<eot>", vocab["<eot>"])]
    )
    return ClipTokenizer(tok, bos="<sot>", eos="<eot>", pad="<pad>")


class TokenizerFileError(MitpError, ValueError):
    """A tokenizer.json that is damaged, missing or not a tokenizers file."""


def load_tokenizer_file(path: str | Path) -> ClipTokenizer:
    """Load a saved `tokenizer.json` (a CLIP BPE tokenizer or a word tokenizer made by mitp)."""
    try:
        tok = Tokenizer.from_file(str(path))
    except Exception as err:  # the tokenizers library raises a bare Exception for a file it cannot parse
        raise TokenizerFileError(f"{path} is not a tokenizers file mitp can read ({str(err)[:160]})") from err
    return _wrap(tok)


def _wrap(tok: Tokenizer) -> ClipTokenizer:
    if tok.token_to_id("<|endoftext|>") is not None:  # OpenAI CLIP BPE: pads with <|endoftext|>
        specials = ("<|startoftext|>", "<|endoftext|>", "<|endoftext|>")
    else:
        specials = ("<sot>", "<eot>", "<pad>")
    missing = [token for token in specials if tok.token_to_id(token) is None]
    if missing:
        raise TokenizerFileError(f"the tokenizer has no {', '.join(dict.fromkeys(missing))} token: not a CLIP tokenizer or one made by mitp")
    return ClipTokenizer(tok, bos=specials[0], eos=specials[1], pad=specials[2])
