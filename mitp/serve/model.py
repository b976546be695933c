"""One bundle as a served model: KServe's `Model` over `mitp.runtime.Predictor`, with dynamic batching.

The model speaks the Open Inference Protocol's tensors. Inputs: `image` (BYTES, [B], each element an
encoded image file) and `text` (BYTES, [B], UTF-8 captions). Outputs: `logits` (FP32, [B, K]),
`probabilities` (FP32, [B, K], by the bundle's decision rule) and `label` (BYTES, [B]: the decision, the
labels joined by `|` for a multi-label model, empty when no label passes its threshold). Images and
captions follow exactly the rules of `mitp predict` (size limits, EXIF, 77 tokens): the same functions
decode them. A request is checked whole before it queues, so one bad element fails that request with a
400 and a one-line reason naming the element, and never the batch it would have joined. It is admitted
(its rows of the queue's capacity held) before it is decoded, so an overloaded server refuses at once,
and decoding runs on the model's own threads, never on those of the server or of the model call.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from kserve import InferOutput, InferRequest, InferResponse, Model
from kserve.errors import InvalidInput

from ..errors import MitpError
from ..runtime.predict import PROVIDERS, Predictor, check_caption
from ..runtime.preprocess import load_image_bytes, preprocess_image
from ..runtime.verify import verify_bundle
from ..runtime.weights import TensorCache
from .batcher import DynamicBatcher
from .metrics import ServeMetrics

log = logging.getLogger("mitp.serve")
DECODE_THREADS = min(4, os.cpu_count() or 1)  # decoding an image holds at most one full-size copy per thread


# Rows per model call when none is given, by where it runs (BENCHMARKS.md, serving): on a CPU a ViT-L/14 call
# takes as long per row at batch 16 as at 1 or longer, and batch 4 served 5.3 pairs/s against 4.9 and 3.9;
# a GPU is kept busy by larger batches.
DEFAULT_BATCH = {"CPUExecutionProvider": 4, "CUDAExecutionProvider": 16}


@dataclass(frozen=True)
class Batching:
    """How requests are gathered (defaults measured in BENCHMARKS.md, serving)."""

    max_batch_size: int | None = None  # None: DEFAULT_BATCH for the provider that runs the model
    max_delay: float = 0.005  # seconds the oldest request waits for others
    max_queue: int = 256  # rows in progress at most; past it, 503 at once


class BundleNotServed(MitpError):
    """A bundle that failed verification or warm-up: it is not served, and the server says why."""


class BundleModel(Model):
    """A verified, warmed-up bundle behind the v2 protocol; `load()` must succeed before it is ready."""

    def __init__(
        self, name: str, bundle: Path, variant: str = "fp32", provider: str = "auto", batching: Batching = Batching(),
        metrics: ServeMetrics | None = None, shared: TensorCache | None = None,
    ):
        super().__init__(name)
        self.bundle, self.variant, self.provider, self.batching = Path(bundle), variant, provider, batching
        self.shared = shared  # the backbone's tensors, shared with the other bundles of the same backbone
        self.metrics = metrics or ServeMetrics()
        self.predictor: Predictor | None = None
        self.batcher: DynamicBatcher | None = None
        self.max_batch_size = batching.max_batch_size or 1  # the provider's default, once loaded
        self._decoder = ThreadPoolExecutor(DECODE_THREADS, thread_name_prefix=f"mitp-decode-{name}")

    def load(self) -> bool:
        """Open the bundle, verify its test vectors for the variant served, and run it once at full batch.
        On a CPU the session that serves is the one verified (a second one would leave its memory behind)."""
        try:
            predictor = Predictor(self.bundle, self.provider, self.variant, self.shared)
            on_cpu = predictor.provider == PROVIDERS["cpu"]  # else verified on the CPU, where its test vectors were made
            checks = verify_bundle(self.bundle, [self.variant], sessions={self.variant: predictor.session} if on_cpu else None)
            failed = [c for c in checks if not c.ok]
        except (MitpError, OSError, ValueError) as err:
            raise BundleNotServed(f"{self.bundle} is not a bundle that can be served: {err}") from err
        if failed:
            raise BundleNotServed(f"{self.bundle} fails verification ({'; '.join(f'{c.name}: {c.detail}' for c in failed)})")
        self.max_batch_size = self.batching.max_batch_size or min(DEFAULT_BATCH.get(predictor.provider, 4), self.batching.max_queue)
        size = predictor.info.image_size
        ids, mask, _ = predictor.tokenizer.encode(["warm-up"] * self.max_batch_size)
        for rows in sorted({1, self.max_batch_size}):  # the first call of each shape allocates
            try:
                predictor.logits(np.zeros((rows, 3, size, size), np.float32), ids[:rows], mask[:rows])
            except Exception as err:  # onnxruntime's own exception types (out of memory among them), or MemoryError
                raise BundleNotServed(f"{self.bundle} cannot run a batch of {rows} here ({str(err).splitlines()[0][:200]}): lower --max-batch-size") from err
        self.predictor = predictor
        self.ready = True
        return True

    def get_input_types(self) -> list[dict[str, Any]]:
        return [{"name": "image", "datatype": "BYTES", "shape": [-1]}, {"name": "text", "datatype": "BYTES", "shape": [-1]}]

    def get_output_types(self) -> list[dict[str, Any]]:
        k = len(self.labels) if self.predictor is not None else -1
        return [
            {"name": "logits", "datatype": "FP32", "shape": [-1, k]},
            {"name": "probabilities", "datatype": "FP32", "shape": [-1, k]},
            {"name": "label", "datatype": "BYTES", "shape": [-1]},
        ]

    @property
    def labels(self) -> list[str]:
        assert self.predictor is not None
        return self.predictor.info.labels

    async def predict(self, payload: InferRequest, headers: dict[str, str] | None = None) -> InferResponse:
        predictor = self._started()
        images, texts = request_inputs(payload, self.batching.max_queue)
        assert self.batcher is not None
        with self.batcher.admitted(len(images)):
            pixels, ids, mask = await asyncio.get_running_loop().run_in_executor(self._decoder, self._decode, images, texts)
            logits = await self.batcher.infer(pixels, ids, mask)  # (B, K)
        probabilities = predictor.decide(logits).astype(np.float32)  # (B, K)
        labels = np.array([predictor.prediction(row, False).label.encode() for row in probabilities], dtype=object)
        return InferResponse(
            response_id=payload.id or "",
            model_name=self.name,
            infer_outputs=[
                _output("logits", logits.astype(np.float32), "FP32"),
                _output("probabilities", probabilities, "FP32"),
                _output("label", labels, "BYTES"),
            ],
            use_binary_outputs=payload.use_binary_outputs,
            requested_outputs=payload.request_outputs,
        )

    def _started(self) -> Predictor:
        """The predictor, with the batcher started on the serving loop the first time."""
        if self.predictor is None:
            raise RuntimeError(f"model {self.name} is not loaded")
        if self.batcher is None:
            self.batcher = DynamicBatcher(
                self.predictor.logits, self.max_batch_size, self.batching.max_delay, self.batching.max_queue,
                observe=self.metrics.observer(self.name),
            )
            self.batcher.start()
        return self.predictor

    def _decode(self, images: list[bytes], texts: list[bytes]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Pixels (B, 3, H, W) and tokens (B, 77) x 2, or InvalidInput naming the first bad element."""
        assert self.predictor is not None
        info = self.predictor.info
        captions = []
        for i, raw in enumerate(texts):
            try:
                caption = raw.decode("utf-8")
                check_caption(caption)
            except UnicodeDecodeError:
                raise InvalidInput(f"text[{i}]: the caption is not valid UTF-8 text") from None
            except MitpError as err:
                raise InvalidInput(f"text[{i}]: {err}") from None
            captions.append(caption)
        pixels = []
        for i, data in enumerate(images):
            try:
                pixels.append(preprocess_image(load_image_bytes(data, f"image[{i}]"), info.image_size, *info.mean_std))
            except MitpError as err:
                raise InvalidInput(str(err)) from None
        ids, mask, _ = self.predictor.tokenizer.encode(captions)
        return np.stack(pixels), ids, mask

    def stop(self) -> None:
        """Not ready (KServe calls this on SIGTERM, while the requests in flight still finish)."""
        self.ready = False

    def close(self) -> None:
        """After the server has stopped: decodes and model calls not yet begun are dropped, so the
        process exits as soon as those running end."""
        self._decoder.shutdown(wait=False, cancel_futures=True)
        if self.batcher is not None:
            self.batcher.close()


def request_inputs(payload: InferRequest, max_rows: int) -> tuple[list[bytes], list[bytes]]:
    """The request's `image` and `text` elements as bytes, checked for names, types and counts."""
    by_name = {i.name: i for i in payload.inputs}
    if sorted(i.name for i in payload.inputs) != ["image", "text"]:
        raise InvalidInput(f"inputs must be `image` and `text` (BYTES, shape [B]); got {', '.join(i.name for i in payload.inputs) or 'none'}")
    values = {}
    for name, tensor in by_name.items():
        if tensor.datatype != "BYTES" or len(tensor.shape) != 1:
            raise InvalidInput(f"input `{name}` must be BYTES of shape [B]; got {tensor.datatype} of shape {list(tensor.shape)}")
        data = tensor.data if isinstance(tensor.data, list) else tensor.as_numpy().reshape(-1).tolist()
        values[name] = [_element(name, i, v) for i, v in enumerate(data)]
    rows = len(values["image"])
    if rows != len(values["text"]) or rows == 0:
        raise InvalidInput(f"`image` and `text` must hold the same number of elements, at least one; got {rows} and {len(values['text'])}")
    if rows > max_rows:
        raise InvalidInput(f"a request of {rows} pairs is more than this server queues ({max_rows}): send smaller requests")
    return values["image"], values["text"]


def _element(name: str, index: int, value: Any) -> bytes:
    """One element as bytes. Binary-extension elements are bytes already; in a JSON body, a caption is a
    string and an image is its file's base64 (JSON strings cannot hold an image file's bytes)."""
    if isinstance(value, bytes):
        return value
    if not isinstance(value, str):
        shown = "null" if value is None else type(value).__name__
        raise InvalidInput(f"{name}[{index}] must be a string; got {shown}")
    if name == "image":
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidInput(f"image[{index}]: in a JSON body an image is its file's base64; send raw bytes with the binary data extension") from None
    try:
        return value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInput(f"text[{index}] is not valid Unicode text (it holds a lone surrogate)") from None


def _output(name: str, array: np.ndarray, datatype: str) -> InferOutput:
    return InferOutput(name=name, shape=list(array.shape), datatype=datatype, data=array)

