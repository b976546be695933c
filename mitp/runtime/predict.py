"""Predict with an exported bundle on onnxruntime: no torch, no transformers, so it starts fast.

Images are preprocessed with numpy and Pillow and captions tokenized with `tokenizers`, both exactly as
in training (`mitp.runtime.preprocess`, `mitp.runtime.tokenizer`), following the settings stored in the bundle.
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import MitpError
from .bundle import (
    MAX_TOKENIZER_BYTES,
    MODEL_FILE,
    TOKENIZER_FILE,
    VARIANT_FILES,
    BundleError,
    BundleInfo,
    bundle_file,
    parse_metadata,
    read_contract,
)
from .decision import MULTILABEL_THRESHOLD, SIGMOID_THRESHOLD, sigmoid, softmax
from .preprocess import ImageError, load_image, preprocess_image
from .tokenizer import MAX_CAPTION_CHARS, clean_head, load_tokenizer_file
from .weights import BackboneWeights, TensorCache, session_options, weights_of

PROVIDERS = {"cuda": "CUDAExecutionProvider", "cpu": "CPUExecutionProvider"}
LABEL_SEPARATOR = "|"  # between the labels of a multi-label decision, where it is one string (served, scored)


class InputError(MitpError, ValueError):
    """A caption or batch line that cannot be predicted; the message says why."""


@dataclass
class Prediction:
    labels: list[str]
    scores: dict[str, float]
    truncated: bool

    @property
    def label(self) -> str:
        """The decision as one string: a multi-label model's labels joined by `|` (empty when none passes)."""
        return LABEL_SEPARATOR.join(self.labels)

    def to_json(self, provider: str, top_k: int | None = None) -> dict[str, Any]:
        ranked = sorted(self.scores.items(), key=lambda kv: -kv[1])[: top_k or None]
        return {"labels": self.labels, "scores": dict(ranked), "provider": provider, "truncated": self.truncated}


class Predictor:
    """A loaded bundle: one onnxruntime session plus the bundle's preprocessing and tokenizer."""

    def __init__(self, bundle: str | Path, provider: str = "auto", variant: str = "fp32", shared: TensorCache | None = None):
        """`shared`: a cache through which sessions of bundles with the same backbone share its weights."""
        if variant not in VARIANT_FILES:
            raise InputError(f"unknown variant {variant!r}; allowed: {', '.join(VARIANT_FILES)}")
        bundle = Path(bundle)
        model_path = bundle / VARIANT_FILES[variant]
        for path in (bundle / VARIANT_FILES["fp32"], bundle / TOKENIZER_FILE):
            if not path.is_file():
                raise BundleError(f"{path} not found: is {bundle} a bundle written by `mitp export`?")
        if not model_path.is_file():
            raise BundleError(f"{bundle} has no {variant} variant ({model_path.name}): export it with `mitp export --{variant}`")
        model_path = bundle_file(bundle, VARIANT_FILES[variant], "model")  # a link out of the bundle is refused
        weights = weights_of(bundle, read_contract(bundle), variant)
        self.session, self.provider, self.note = open_session(model_path, provider, weights, shared)
        self.shared = shared  # the session reads the cache's tensors in place: they live as long as it
        self.info: BundleInfo = parse_metadata(self.session.get_modelmeta().custom_metadata_map, str(model_path))
        self.tokenizer = load_tokenizer_file(bundle_file(bundle, TOKENIZER_FILE, "tokenizer file", MAX_TOKENIZER_BYTES))
        expected = self.info.tokenizer["max_length"]
        if self.tokenizer.info.max_length != expected:
            raise BundleError(f"{bundle}: tokenizer length {self.tokenizer.info.max_length} but metadata says {expected}")

    def preprocess(self, image_path: str | Path) -> np.ndarray:
        return preprocess_image(load_image(image_path), self.info.image_size, *self.info.mean_std)

    def tokenize(self, captions: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        for caption in captions:
            check_caption(caption)
        return self.tokenizer.encode(captions)

    def logits(self, pixels: np.ndarray, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        feeds = {"pixel_values": pixels.astype(np.float32), "input_ids": ids.astype(np.int64), "attention_mask": mask.astype(np.int64)}
        return np.asarray(self.session.run(["logits"], feeds)[0], dtype=np.float32)  # (B, K)

    def predict(self, image_paths: list[str | Path], captions: list[str]) -> list[Prediction]:
        """One Prediction per (image, caption) pair; raises ImageError / InputError on bad input."""
        return self.predict_pixels(np.stack([self.preprocess(p) for p in image_paths]), captions)

    def predict_pixels(self, pixels: np.ndarray, captions: list[str]) -> list[Prediction]:
        """Like `predict`, for images already preprocessed: pixels (B, 3, H, W)."""
        ids, mask, truncated = self.tokenize(captions)
        probabilities = self.decide(self.logits(pixels, ids, mask))
        return [self.prediction(row, bool(cut)) for row, cut in zip(probabilities, truncated, strict=True)]

    def decide(self, logits: np.ndarray) -> np.ndarray:
        """Probabilities by the bundle's decision rule: softmax over classes, or a sigmoid per label."""
        return sigmoid(logits) if self.info.decision["rule"] == SIGMOID_THRESHOLD else softmax(logits)

    def prediction(self, probabilities: np.ndarray, truncated: bool) -> Prediction:
        """The chosen label(s) and every label's probability for one row of probabilities."""
        labels = self.info.labels
        scores = {label: float(p) for label, p in zip(labels, probabilities, strict=True)}
        if self.info.decision["rule"] == SIGMOID_THRESHOLD:
            threshold = np.float32(self.info.decision.get("threshold", MULTILABEL_THRESHOLD))
            chosen = [label for label, p in zip(labels, probabilities, strict=True) if p >= threshold]
        else:
            chosen = [labels[int(probabilities.argmax())]]
        return Prediction(chosen, scores, truncated)


def check_caption(caption: object) -> None:
    """A caption mitp can read: text, valid UTF-8, not empty once cleaned (`&nbsp;` or a zero-width space alone is empty), and
    its first 77 words of reasonable length (what the tokenizer sees; the rest is cut before it, at no cost)."""
    if not isinstance(caption, str) or not caption.strip():
        raise InputError("the caption is empty: give the text that goes with the image")
    head = clean_head(caption)
    if any("\ud800" <= ch <= "\udfff" for ch in head):  # bytes that were not UTF-8 (surrogate escapes)
        raise InputError("the caption is not valid UTF-8 text")
    if not any(unicodedata.category(ch)[0] not in "CZ" for ch in head):  # NULs, zero-width spaces, marks of direction
        raise InputError(f"the caption is empty once cleaned ({caption[:40]!r} is only entities, whitespace and invisible characters): give the text that goes with the image")
    if len(head) > MAX_CAPTION_CHARS:
        raise InputError(f"the caption's first words run to {len(head):,} characters without spaces; mitp reads at most {MAX_CAPTION_CHARS:,}")


def open_session(model_path: Path, provider: str = "auto", weights: BackboneWeights | None = None, shared: TensorCache | None = None):
    """(session, provider that actually runs, note for the user). CUDA only where it really runs. The
    model's backbone weights are read from where `weights` found them, through `shared` when given."""
    try:
        import onnxruntime as ort
    except ImportError as err:
        raise BundleError('onnxruntime is not installed: add the "cpu" extra (or "gpu" for CUDA), e.g. python -m pip install ".[cpu]" in a clone of mitp') from err

    if provider not in ("auto", *PROVIDERS):
        raise InputError(f"unknown provider {provider!r}; allowed: auto, cuda, cpu")
    available = ort.get_available_providers()
    note = ""
    if provider in ("auto", "cuda"):
        if PROVIDERS["cuda"] in available:
            preload_cuda_libraries(ort)
            if provider == "auto":  # a failed try is said in one note below, not in onnxruntime's own log lines
                ort.set_default_logger_severity(4)
            try:
                session = _session(ort, model_path, [PROVIDERS["cuda"], PROVIDERS["cpu"]], weights, shared)
                if session.get_providers()[0] == PROVIDERS["cuda"]:
                    return session, PROVIDERS["cuda"], note
                note = (
                    "onnxruntime has the CUDA provider but could not start it (no GPU, or CUDA 13 / cuDNN 9 "
                    "libraries missing: see docs/bundle.md, GPU inference)"
                )
            except Exception as err:  # onnxruntime raises plain RuntimeErrors/Fails for provider problems
                note = f"the CUDA provider failed to start: {err}"
            finally:
                ort.set_default_logger_severity(2)
        else:
            note = "this onnxruntime has no CUDA provider (install the onnxruntime-gpu variant for GPUs)"
        if provider == "cuda":
            raise InputError(f"--provider cuda cannot run here: {note}")
        note = f"running on CPU: {note}" if gpu_present() else ""  # on a machine without a GPU, CPU is no news
    try:
        session = _session(ort, model_path, [PROVIDERS["cpu"]], weights, shared)
    except Exception as err:
        raise BundleError(f"onnxruntime cannot load {model_path}: {err}") from err
    return session, PROVIDERS["cpu"], note


def _session(ort, model_path: Path, providers: list[str], weights: BackboneWeights | None, shared: TensorCache | None):
    if weights is None or (weights.in_bundle and shared is None):  # onnxruntime finds the weights beside the model
        return ort.InferenceSession(str(model_path), providers=providers)
    device = "cuda" if providers[0] == PROVIDERS["cuda"] else "cpu"
    return ort.InferenceSession(model_path.read_bytes(), session_options(ort, weights, shared, device), providers=providers)


def gpu_present() -> bool:
    """Whether this machine has an NVIDIA GPU (its driver's device files), whatever onnxruntime can use."""
    return Path("/dev/nvidiactl").exists() or Path("/proc/driver/nvidia/gpus").is_dir()


def find_bundle(root: Path = Path(".")) -> tuple[Path, int] | None:
    """The bundle a user most likely means when none is named: the newest `mitp export` folder under
    ./results/*/bundles/ (the workflow's) or ./bundles/, and how many there were to choose from."""
    candidates = [
        marker.parent for pattern in ("results/*/bundles/*/*/bundle.json", "results/bundles/*/*/bundle.json", "bundles/*/bundle.json", "bundles/*/*/bundle.json")
        for marker in root.glob(pattern) if (marker.parent / MODEL_FILE).is_file()
    ]
    if not candidates:
        return None
    newest = max(candidates, key=lambda folder: (folder / MODEL_FILE).stat().st_mtime)
    return newest, len(set(candidates))


def preload_cuda_libraries(ort) -> None:
    """Load the CUDA and cuDNN libraries that pip installs (the `gpu` extra, or a CUDA build of torch).

    They live in site-packages, off the loader's path, and this process imports no torch to bring them
    in; without this the CUDA provider fails on a missing libcublasLt even where they are installed."""
    if hasattr(ort, "preload_dlls"):  # onnxruntime >= 1.21
        ort.preload_dlls()


def is_predictions_file(path: Path) -> bool:
    """Whether `path` is empty or holds what `predict --batch --out` writes (its first line a prediction
    record), so that --out replaces only its own kind of file, never an image or a data file."""
    try:
        with open(path, "rb") as f:
            first = f.readline(1 << 20).strip()
        record = json.loads(first) if first else {}
    except (OSError, ValueError):
        return False
    return isinstance(record, dict) and (not first or {"line", "image", "labels", "scores"} <= set(record))


MAX_LINE_BYTES = 8 << 20  # a batch line: a path and a caption, of which the tokenizer reads 77 words
MAX_PATH_CHARS = 4096  # PATH_MAX on Linux


def read_batch_line(line: bytes, base: Path) -> tuple[Path, str]:
    """(image path, text) of one JSON line of a batch file; relative image paths are taken from `base`.
    Every way a line can be bad (size, encoding, JSON, nesting, shape, path) is an InputError for that line."""
    if len(line) > MAX_LINE_BYTES:
        raise InputError(f"the line has {len(line):,} bytes; a batch line holds at most {MAX_LINE_BYTES:,}")
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as err:
        raise InputError(f"not valid UTF-8 ({err.reason} at byte {err.start})") from err
    try:
        record = json.loads(text)
    except json.JSONDecodeError as err:
        raise InputError(f"not valid JSON ({err.msg})") from err
    except RecursionError as err:
        raise InputError("not a batch record: its JSON is nested too deeply") from err
    if not isinstance(record, dict) or not isinstance(record.get("image"), str) or not isinstance(record.get("text"), str):
        raise InputError('expected {"image": "<path>", "text": "<caption>"}')
    if len(record["image"]) > MAX_PATH_CHARS or "\0" in record["image"]:
        raise InputError(f"the image path has {len(record['image']):,} characters or a NUL byte; a path holds at most {MAX_PATH_CHARS:,}")
    image = Path(record["image"])
    return (image if image.is_absolute() else base / image), record["text"]


def predict_batch_file(
    predictor: Predictor,
    lines: list[bytes],
    base: Path,
    emit: Callable[[dict[str, Any]], object],
    on_skip: Callable[[int, Exception], object],
    on_line: Callable[[], object] = lambda: None,
    chunk: int = 32,
    top_k: int | None = None,
) -> int:
    """Predict the JSON lines of a batch file (relative image paths are taken from `base`) in chunks;
    a bad line (malformed, missing or unreadable image, empty caption) goes to `on_skip` and the rest
    is still predicted. Returns the number of skipped lines."""
    pending: list[tuple[int, Path, np.ndarray, str]] = []
    skipped = 0

    def flush() -> None:
        if pending:
            pixels = np.stack([pixels for _, _, pixels, _ in pending])  # (B, 3, H, W)
            predictions = predictor.predict_pixels(pixels, [text for *_, text in pending])
            for (number, image, _, _), prediction in zip(pending, predictions, strict=True):
                emit({"line": number, "image": str(image), **prediction.to_json(predictor.provider, top_k)})
            pending.clear()

    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            image, text = read_batch_line(line, base)
            check_caption(text)
            pending.append((number, image, predictor.preprocess(image), text))
        except (ImageError, InputError) as err:
            skipped += 1
            on_skip(number, err)
        if len(pending) >= chunk:
            flush()
        on_line()
    flush()
    return skipped
