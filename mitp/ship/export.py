"""Export a trained MITP to a self-describing ONNX bundle, verified against PyTorch before it is written.

The graph is the whole prompted CLIP: both towers, the temporal prompts, the memory hub and the cached
class embeddings, from (pixel_values, input_ids, attention_mask) to class logits, with a dynamic batch.
The bundle is assembled in a temporary folder and swapped into place only after `onnx.checker` and
onnxruntime agree with PyTorch on real inputs at batch 1 and 3 (max abs diff on logits <= tolerance).
Optional reduced-precision variants (fp16 for GPUs, int8 for CPUs) are checked by top-1 agreement. The
inputs are made by the runtime's own preprocessing and tokenizer, the contract (mitp.runtime.bundle) goes
into every model's metadata and into bundle.json, and test vectors let any port check itself.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import __version__
from ..errors import MitpError
from ..files.atomic import atomic_write_json, file_sha256
from ..files.outputs import build_output, claim
from ..model.backbone import hub_id
from ..runtime.bundle import (
    BACKBONE_KEY,
    BUNDLE_FORMAT,
    CONTRACT_FILE,
    MIN_ONNXRUNTIME,
    MODEL_FILE,
    ONNX_IR_VERSION,
    ONNX_OPSET,
    REPORT_FILE,
    TOKENIZER_FILE,
    VARIANT_FILES,
    VECTORS_FILE,
    metadata_props,
    models_entry,
)
from ..runtime.decision import decision_rule, multilabel_decisions
from ..runtime.preprocess import image_rules, load_image, preprocess_image
from ..runtime.verify import vector_sources, write_test_vectors
from ..train.factory import image_size, load_trained
from .weights import by_content, by_name, frozen_hashes, move_backbone, tensor_table

TOLERANCE = 1e-4
VERIFY_BATCHES = (1, 3)
VARIANT_SAMPLES = 32  # pairs on which the fp16 / int8 variants' top-1 is compared with PyTorch's
EXTERNAL_DATA_BYTES = 1 << 30  # weights above this go to model.onnx.data (protobuf caps a file at 2 GB)


class ExportError(MitpError, RuntimeError):
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
    graph = ExportGraph(model).eval()
    writers = {name: writer for name, writer, wanted in (("fp16", write_fp16, fp16), ("int8", write_int8, int8)) if wanted}

    with build_output(out, "bundle", inputs=(Path(checkpoint),)) as tmp:
        pairs, source = verification_pairs(run, size, VARIANT_SAMPLES, tmp / ".generated")
        inputs = runtime_inputs(pairs, backbone.tokenizer, size)
        started = time.perf_counter()
        write_onnx(graph, inputs, tmp / MODEL_FILE)
        export_seconds = time.perf_counter() - started
        contract = bundle_contract(run, state, backbone, size, ["fp32", *writers])
        weights = {"fp32": finish_model(tmp / MODEL_FILE, metadata_props(contract, "fp32"), by_content(frozen_hashes(model)))}
        backbone_names = {t["name"] for t in weights["fp32"]["table"]} if weights["fp32"] else set()
        backbone.tokenizer.save(tmp / TOKENIZER_FILE)

        report: dict[str, Any] = {
            "mitp_version": __version__,
            "dataset": run.dataset_name,
            "setting": run.setting_name,
            "backbone": contract["source"]["backbone"],
            "checkpoint": contract["source"]["checkpoint"],
            "verify_inputs": source,
            "tolerance": tolerance,
            "export_seconds": round(export_seconds, 2),
            "fp32": verify(graph, tmp / MODEL_FILE, inputs, tolerance),
        }
        if writers:
            reference = _run_torch(graph, inputs)  # (N, K), shared by the variants' checks
            for variant, write in writers.items():
                write(tmp / MODEL_FILE, tmp / VARIANT_FILES[variant])
                weights[variant] = finish_model(tmp / VARIANT_FILES[variant], metadata_props(contract, variant), by_name(backbone_names), check=False)
                report[variant] = verify_top1(reference, tmp / VARIANT_FILES[variant], inputs, run.dataset.task == "multi-label")
        vectors = write_test_vectors(tmp, vector_sources(pairs, tmp / ".generated"), backbone.tokenizer, size, ["fp32", *writers])
        shutil.rmtree(tmp / ".generated", ignore_errors=True)
        contract[BACKBONE_KEY] = {variant: entry for variant, entry in weights.items() if entry is not None}
        atomic_write_json(tmp / CONTRACT_FILE, {**contract, "test_vectors": VECTORS_FILE})
        report["test_vectors"] = len(vectors)
        atomic_write_json(tmp / REPORT_FILE, report)
    return report


def bundle_contract(run, state: dict[str, Any], backbone, size: int, variants: list[str]) -> dict[str, Any]:
    """What another program needs to use the bundle, and what produced it (no path of this machine)."""
    config = run.to_dict()
    config["dataset"].pop("data_dir", None)
    if Path(run.backbone).is_dir():
        config["backbone"] = f"local folder {Path(run.backbone).name!r}"
    max_length, classes = backbone.tokenizer.info.max_length, list(state["classes"])
    return {
        "mitp_bundle_format": BUNDLE_FORMAT,
        "mitp_version": __version__,
        "requires": {"onnxruntime": f">={MIN_ONNXRUNTIME}", "onnx_ir_version": ONNX_IR_VERSION, "opset": ONNX_OPSET},
        "dataset": run.dataset_name,
        "setting": run.setting_name,
        "reading": run.model.reading(),  # how this model reads the paper's open points (docs/readings.md)
        "task": run.dataset.task,
        "labels": classes,
        "decision": {**decision_rule(run.dataset.task), "labels": "labels[i] is the class of logits[:, i]"},
        "inputs": {
            "pixel_values": {"shape": ["batch", 3, size, size], "dtype": "float32"},
            "input_ids": {"shape": ["batch", max_length], "dtype": "int64"},
            "attention_mask": {"shape": ["batch", max_length], "dtype": "int64"},
        },
        "outputs": {"logits": {"shape": ["batch", len(classes)], "dtype": "float32"}},
        "models": models_entry(variants),
        "image": image_rules(size),
        "tokenizer": backbone.tokenizer.rules(TOKENIZER_FILE),
        "source": {
            "backbone": config["backbone"],
            "backbone_hub_id": hub_id(run.backbone),  # the frozen CLIP's Hugging Face id, or null
            "checkpoint": {"epoch": state["epoch"], "model_sha256": file_sha256(Path(state["checkpoint"]) / "model.safetensors")},
            "run_config": config,
        },
    }


def verification_pairs(run, size: int, count: int, scratch: Path) -> tuple[list[tuple[Path, str]], str]:
    """Up to `count` real (image file, caption) pairs of the data set (test, else val split); generated
    ones, written under `scratch`, when no prepared data are on disk."""
    import pyarrow.parquet as pq

    data_dir = Path(run.dataset.data_dir) if run.dataset.data_dir else None
    for split in ("test", "val"):
        path = data_dir / f"{split}.parquet" if data_dir else None
        if path is None or not path.is_file():
            continue
        table = pq.read_table(path, columns=["image", "text"]).to_pydict()
        if len(table["image"]) >= max(VERIFY_BATCHES):
            pairs = [(data_dir / image, text) for image, text in zip(table["image"][:count], table["text"][:count], strict=True)]
            return pairs, f"{run.dataset_name} {split} split, first {len(pairs)} pairs"
    from PIL import Image

    scratch.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    pairs = []
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, (size + 7 * i, size + 3, 3), dtype=np.uint8)).save(scratch / f"{i}.png")
        pairs.append((scratch / f"{i}.png", f"caption number {i}"))
    return pairs, "generated (no prepared data found)"


def runtime_inputs(pairs: list[tuple[Path, str]], tokenizer, size: int) -> dict[str, np.ndarray]:
    """Model inputs made by the runtime's own preprocessing and tokenizer: what `mitp predict` feeds."""
    pixels = np.stack([preprocess_image(load_image(image), size) for image, _ in pairs])  # (N, 3, S, S)
    ids, mask = tokenizer([text for _, text in pairs])  # (N, 77) each
    return {"pixel_values": pixels, "input_ids": ids, "attention_mask": mask}


def write_onnx(graph: torch.nn.Module, inputs: dict[str, np.ndarray], path: Path) -> None:
    """torch.onnx.export with the dynamo exporter, opset 18 and a dynamic batch dimension (checked once
    the metadata are in, by `finish_model`)."""
    example = tuple(torch.from_numpy(inputs[k][:2]) for k in ("pixel_values", "input_ids", "attention_mask"))
    batch = torch.export.Dim("batch", min=1, max=4096)
    program = torch.onnx.export(
        graph,
        example,
        dynamo=True,
        opset_version=ONNX_OPSET,
        input_names=["pixel_values", "input_ids", "attention_mask"],
        output_names=["logits"],
        dynamic_shapes={"pixel_values": {0: batch}, "input_ids": {0: batch}, "attention_mask": {0: batch}},
        optimize=True,
        verbose=False,
    )
    if program is None:
        raise RuntimeError("torch.onnx.export returned no ONNX program")
    program.save(str(path))


def finish_model(path: Path, props: dict[str, str], backbone: Callable[[Any], bool], check: bool = True) -> dict[str, Any] | None:
    """Give a saved graph the bundle contract as metadata and ONNX IR version 9 (onnxruntime >= 1.17 loads
    it; the exporter writes IR 10, which needs 1.18, and uses nothing of IR 10), move the initializers that
    `backbone` says are the frozen backbone's to their own file (mitp.ship.weights), then check it with
    onnx.checker. Returns the backbone file's entry, or None. The fp16 converter leaves its casts out of
    topological order, which the checker rejects and onnxruntime accepts: the variants are checked by
    running them instead (verify_top1)."""
    import onnx

    model = onnx.load(str(path))
    _strip_node_metadata(model.graph)
    _set_metadata(model, props)
    if model.ir_version > ONNX_IR_VERSION:
        model.ir_version = ONNX_IR_VERSION
    # value_info entries for weights only repeat the initializers' shapes, and they break onnxruntime 1.31's
    # quantizer (the `gpu` extra): it transposes a Gemm weight in place and trips over the stale shape.
    weights = {t.name for t in model.graph.initializer}
    shapes = [v for v in model.graph.value_info if v.name not in weights]
    del model.graph.value_info[:]
    model.graph.value_info.extend(shapes)
    backbone_file = move_backbone(model, path.parent, backbone)
    large = sum(t.ByteSize() for t in model.graph.initializer) > EXTERNAL_DATA_BYTES  # the task's own, inline as a rule
    for stale in path.parent.glob(path.name + ".data"):
        stale.unlink()
    onnx.save(model, str(path), save_as_external_data=large, location=path.name + ".data" if large else None)
    if check:
        onnx.checker.check_model(str(path), full_check=True)
    if backbone_file is not None:
        backbone_file["table"] = tensor_table(model, backbone_file["file"])
    return backbone_file


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


def _strip_node_metadata(graph) -> None:
    """Drop the exporter's per-node metadata (stack traces with the exporting machine's absolute paths, FX
    names, scopes): about 0.9 MB per graph that runs no differently without it and must not leave the
    machine inside a shared bundle. Subgraphs (If/Loop bodies) are cleaned too."""
    for node in graph.node:
        del node.metadata_props[:]
        for attribute in node.attribute:
            if attribute.g.node:
                _strip_node_metadata(attribute.g)
            for subgraph in attribute.graphs:
                _strip_node_metadata(subgraph)


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

