"""Export a trained MITP to a self-describing ONNX bundle, verified against PyTorch before it is written.

The graph is the whole prompted CLIP: both towers, the temporal prompts, the memory hub and the cached
class embeddings, from (pixel_values, input_ids, attention_mask) to class logits, with a dynamic batch.
The bundle is assembled in a temporary folder and renamed into place only after `onnx.checker` and
onnxruntime agree with PyTorch on real inputs at batch 1 and 3 (max abs diff on logits <= tolerance).
Optional reduced-precision variants (fp16 for GPUs, int8 for CPUs) are checked by top-1 agreement.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import __version__
from .atomic import atomic_write_json, build_directory
from .factory import image_size, load_trained
from .outputs import claim, mark
from .runtime.bundle import (
    BUNDLE_FORMAT,
    MODEL_FILE,
    REPORT_FILE,
    TOKENIZER_FILE,
    VARIANT_FILES,
    BundleInfo,
    metadata_props,
)
from .runtime.decision import decision_rule, multilabel_decisions
from .runtime.preprocess import CLIP_MEAN, CLIP_STD

TOLERANCE = 1e-4
VERIFY_BATCHES = (1, 3)
VARIANT_SAMPLES = 32  # pairs on which the fp16 / int8 variants' top-1 is compared with PyTorch's
EXTERNAL_DATA_BYTES = 1 << 30  # weights above this go to model.onnx.data (protobuf caps a file at 2 GB)


class ExportError(RuntimeError):
    """The exported graph failed a check; nothing was written."""


class ExportGraph(torch.nn.Module):
    """The exported signature: three named inputs, one `logits` output."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values, input_ids, attention_mask)  # (B, K)


def export_bundle(
    checkpoint: Path, out: Path, fp16: bool = False, int8: bool = False, tolerance: float = TOLERANCE
) -> dict[str, Any]:
    """Write the bundle for `checkpoint` (a run directory or checkpoint folder) to `out`; returns the report.
    `fp16` / `int8` also write the half-precision (GPU) / int8-weight (CPU) variants."""
    claim(out, "bundle", inputs=(Path(checkpoint),))
    model, run, backbone, state = load_trained(checkpoint)
    size = image_size(backbone)
    inputs, source = verification_inputs(run, backbone, size, VARIANT_SAMPLES)
    graph = ExportGraph(model).eval()
    writers = {name: writer for name, writer, wanted in (("fp16", write_fp16, fp16), ("int8", write_int8, int8)) if wanted}

    with build_directory(out) as tmp:
        mark(tmp, "bundle")
        started = time.perf_counter()
        write_onnx(graph, inputs, tmp / MODEL_FILE)
        export_seconds = time.perf_counter() - started
        info = bundle_info(run, state["classes"], backbone, size)
        _add_metadata(tmp / MODEL_FILE, info, {"source_config": run.to_dict(), "checkpoint": state["checkpoint"]})
        backbone.tokenizer.save(tmp / TOKENIZER_FILE)

        report: dict[str, Any] = {
            "mitp_version": __version__,
            "dataset": run.dataset_name,
            "setting": run.setting_name,
            "backbone": run.backbone,
            "checkpoint": state["checkpoint"],
            "verify_inputs": source,
            "tolerance": tolerance,
            "export_seconds": round(export_seconds, 2),
            "fp32": verify(graph, tmp / MODEL_FILE, inputs, tolerance),
        }
        reference = _run_torch(graph, inputs) if writers else None  # (N, K), shared by the variants' checks
        for variant, write in writers.items():
            write(tmp / MODEL_FILE, tmp / VARIANT_FILES[variant])
            report[variant] = verify_top1(reference, tmp / VARIANT_FILES[variant], inputs, info.task == "multi-label")
        atomic_write_json(tmp / REPORT_FILE, report)
    return report


def bundle_info(run, classes: list[str], backbone, size: int) -> BundleInfo:
    tok = backbone.tokenizer.info
    return BundleInfo(
        labels=list(classes),
        task=run.dataset.task,
        decision=decision_rule(run.dataset.task),
        image={
            "size": size,
            "resize": "shorter side to size, bicubic",
            "crop": "center size x size",
            "scale": "1/255",
            "mean": list(CLIP_MEAN),
            "std": list(CLIP_STD),
            "layout": "NCHW RGB float32",
        },
        tokenizer={
            "file": TOKENIZER_FILE,
            "max_length": tok.max_length,
            "pad_token_id": tok.pad_token_id,
            "bos_token_id": tok.bos_token_id,
            "eos_token_id": tok.eos_token_id,
            "truncation": "to max_length, keeping the end-of-text token",
        },
        dataset=run.dataset_name,
        setting=run.setting_name,
        mitp_version=__version__,
        bundle_format=BUNDLE_FORMAT,
    )


def verification_inputs(run, backbone, size: int, count: int) -> tuple[dict[str, np.ndarray], str]:
    """Up to `count` real pairs from the data set (test, else val split); generated ones when no data are on disk."""
    from .data import DataError, build_split

    for split in ("test", "val"):
        try:
            dataset = build_split(run, split, backbone.tokenizer, size)
        except (DataError, FileNotFoundError, OSError):
            continue
        if len(dataset) >= max(VERIFY_BATCHES):
            items = [dataset[i] for i in range(min(count, len(dataset)))]
            arrays = {key: torch.stack([item[key] for item in items]).numpy() for key in ("pixel_values", "input_ids", "attention_mask")}
            return arrays, f"{run.dataset_name} {split} split, first {len(items)} pairs"
    rng = np.random.default_rng(0)
    ids, mask = backbone.tokenizer([f"caption number {i}" for i in range(count)])
    pixels = rng.normal(0, 1, (count, 3, size, size)).astype(np.float32)
    return {"pixel_values": pixels, "input_ids": ids, "attention_mask": mask}, "generated (no prepared data found)"


def write_onnx(graph: torch.nn.Module, inputs: dict[str, np.ndarray], path: Path) -> None:
    """torch.onnx.export with the dynamo exporter and a dynamic batch dimension (checked once the
    metadata are in, by `_add_metadata`)."""
    example = tuple(torch.from_numpy(inputs[k][:2]) for k in ("pixel_values", "input_ids", "attention_mask"))
    batch = torch.export.Dim("batch", min=1, max=4096)
    program = torch.onnx.export(
        graph,
        example,
        dynamo=True,
        input_names=["pixel_values", "input_ids", "attention_mask"],
        output_names=["logits"],
        dynamic_shapes={"pixel_values": {0: batch}, "input_ids": {0: batch}, "attention_mask": {0: batch}},
        optimize=True,
        verbose=False,
    )
    program.save(str(path))


def _add_metadata(path: Path, info: BundleInfo, extra: dict[str, Any]) -> None:
    import onnx

    model = onnx.load(str(path))
    _set_metadata(model, metadata_props(info, extra))
    # value_info entries for weights only repeat the initializers' shapes, and they break onnxruntime 1.31's
    # quantizer (the `gpu` extra): it transposes a Gemm weight in place and trips over the stale shape.
    weights = {t.name for t in model.graph.initializer}
    shapes = [v for v in model.graph.value_info if v.name not in weights]
    del model.graph.value_info[:]
    model.graph.value_info.extend(shapes)
    large = sum(t.ByteSize() for t in model.graph.initializer) > EXTERNAL_DATA_BYTES
    for stale in path.parent.glob(path.name + ".data"):
        stale.unlink()
    onnx.save(model, str(path), save_as_external_data=large, location=path.name + ".data" if large else None)
    onnx.checker.check_model(str(path), full_check=True)


def _cpu_session(path: Path):
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _run_onnx(session, inputs: dict[str, np.ndarray]) -> np.ndarray:
    """Logits from an onnxruntime session; inputs stay float32 for the fp16 variant too (keep_io_types)."""
    feeds = {i.name: inputs[i.name] for i in session.get_inputs()}
    return np.asarray(session.run(["logits"], feeds)[0], dtype=np.float32)


@torch.no_grad()
def _run_torch(graph: torch.nn.Module, inputs: dict[str, np.ndarray]) -> np.ndarray:
    return graph(*(torch.from_numpy(inputs[k]) for k in ("pixel_values", "input_ids", "attention_mask"))).float().numpy()


def verify(graph: torch.nn.Module, path: Path, inputs: dict[str, np.ndarray], tolerance: float) -> dict[str, Any]:
    """onnxruntime (CPU) against PyTorch at each verification batch size; raises ExportError beyond tolerance."""
    session, by_batch = _cpu_session(path), {}
    for batch in VERIFY_BATCHES:
        part = {k: v[:batch] for k, v in inputs.items()}
        diff = float(np.abs(_run_onnx(session, part) - _run_torch(graph, part)).max())
        by_batch[str(batch)] = diff
        if not diff <= tolerance:
            raise ExportError(f"onnxruntime and PyTorch logits differ by {diff:.3g} at batch {batch} (tolerance {tolerance:g})")
    return {"max_abs_diff": max(by_batch.values()), "max_abs_diff_by_batch": by_batch, "provider": "CPUExecutionProvider"}


def write_fp16(source: Path, target: Path) -> None:
    """A float16 copy for GPUs; inputs and outputs stay float32 so callers feed the same arrays."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load(str(source)), keep_io_types=True)
    onnx.save(model, str(target))


def write_int8(source: Path, target: Path) -> None:
    """An int8 copy for CPUs: MatMul weights quantized once, activations on the fly (dynamic quantization,
    so no calibration data). Weights use 7 bits (reduce_range) so the u8 x s8 kernels of AVX2 / AVX-512
    CPUs without VNNI cannot saturate their 16-bit sums."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # quantize_dynamic logs a root-level hint to pre-process the model first; that pre-processing
    # (symbolic shape inference) fails on the dynamo-exported graph, and the graph quantizes without it.
    logging.disable(logging.WARNING)
    try:
        quantize_dynamic(source, target, weight_type=QuantType.QInt8, reduce_range=True, op_types_to_quantize=["MatMul"])
    finally:
        logging.disable(logging.NOTSET)
    _keep_only_json_metadata(target)


def _keep_only_json_metadata(path: Path) -> None:
    """The quantizer tags its output with `onnx.infer: onnxruntime.quant`, which is not JSON; the bundle
    contract promises JSON values, so the tag goes."""
    import onnx

    model = onnx.load(str(path))
    _set_metadata(model, {p.key: p.value for p in model.metadata_props if p.key != "onnx.infer"})
    onnx.save(model, str(path))


def _set_metadata(model, props: dict[str, str]) -> None:
    """Make `props` the ONNX model's whole `metadata_props`."""
    del model.metadata_props[:]
    for key, value in props.items():
        model.metadata_props.add(key=key, value=value)


def verify_top1(reference: np.ndarray, path: Path, inputs: dict[str, np.ndarray], multi_label: bool) -> dict[str, Any]:
    """How often a reduced-precision variant decides like PyTorch's `reference` logits on `inputs`: top-1,
    and for multi-label the per-label decisions (the bundle's rule, sigmoid >= 0.5) too."""
    variant = _run_onnx(_cpu_session(path), inputs)
    result = {
        "top1_agreement": float((reference.argmax(1) == variant.argmax(1)).mean()),
        "max_abs_diff": float(np.abs(reference - variant).max()),
        "samples": len(reference),
    }
    if multi_label:
        result["label_decision_agreement"] = float((multilabel_decisions(reference) == multilabel_decisions(variant)).mean())
    return result

