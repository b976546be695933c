"""The inference bundle's contract, readable from any language (docs/decisions.md §11).

A bundle is a folder:

    model.onnx              inputs pixel_values [B,3,H,W] f32, input_ids [B,77] i64, attention_mask [B,77] i64
                            -> logits [B,K] f32; prompts, hub and class embeddings baked in
    model.fp16.onnx         optional half-precision variant for GPUs
    model.int8.onnx         optional variant for CPUs, MatMul weights in int8
    tokenizer.json          the `tokenizers` file of the backbone
    bundle.json             the contract below as plain JSON (onnxruntime-node and -web expose no ONNX metadata)
    test_vectors/           vectors.json plus the images it names: expected ids, pixels and logits
    export_report.json      how the export was checked against PyTorch

The contract (labels, task, decision rule, image and tokenizer rules as structured fields, the models and
their precision, what produced the bundle, without any path of the exporting machine) is also written
into every model's ONNX `metadata_props`, one JSON value per key, with the file's own `variant`.
This module imports neither torch nor onnx: the exporter writes the contract, predict and verify read it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import MitpError
from ..files.paths import inside
from .decision import SIGMOID_THRESHOLD, decision_rule

BUNDLE_FORMAT = 2  # bumped when the graph's inputs/outputs or the contract change incompatibly
MODEL_FILE, TOKENIZER_FILE, REPORT_FILE, CONTRACT_FILE = "model.onnx", "tokenizer.json", "export_report.json", "bundle.json"
VECTORS_DIR, VECTORS_FILE = "test_vectors", "test_vectors/vectors.json"
BACKBONE_KEY = "backbone_weights"  # bundle.json only: each model's backbone file (mitp.runtime.weights), known once the model is written
VARIANT_FILES = {"fp32": MODEL_FILE, "fp16": "model.fp16.onnx", "int8": "model.int8.onnx"}  # `mitp predict --variant`
VARIANT_PRECISION = {
    "fp32": {"weights": "float32", "compute": "float32", "inputs_outputs": "float32"},
    "fp16": {"weights": "float16", "compute": "float16 (for GPUs)", "inputs_outputs": "float32 (cast inside the graph)"},
    "int8": {
        "weights": "MatMul weights int8 (signed, 7-bit range, one scale per tensor); other weights float32",
        "compute": "MatMul activations quantized to uint8 on the fly, one scale per batch (ONNX dynamic quantization): "
        "results depend a little on the other inputs of the batch",
        "inputs_outputs": "float32",
    },
}
# The oldest onnxruntime that loads the bundle: the graphs are saved as ONNX IR version 9, opset 18.
ONNX_IR_VERSION, ONNX_OPSET, MIN_ONNXRUNTIME = 9, 18, "1.17"
# Bounds on what a bundle's metadata and files may ask for, checked before anything is allocated: the largest
# CLIP crop is 336 px, a tokenizer.json is about 3.6 MB and vectors.json under 1 MB.
MAX_IMAGE_SIZE, MAX_TOKENIZER_BYTES, MAX_VECTORS_BYTES, MAX_TOKENS = 1024, 64 << 20, 64 << 20, 1024
REQUIRED_KEYS = ("mitp_bundle_format", "mitp_version", "labels", "task", "decision", "image", "tokenizer", "dataset", "setting")


class BundleError(MitpError, ValueError):
    """A bundle is missing, incomplete, or from an incompatible mitp version."""


@dataclass(frozen=True)
class BundleInfo:
    labels: list[str]
    task: str  # single-label | multi-label
    decision: dict[str, Any]  # {"rule": "softmax-argmax"} or {"rule": "sigmoid-threshold", "threshold": 0.5}
    image: dict[str, Any]  # mitp.runtime.preprocess.image_rules
    tokenizer: dict[str, Any]  # ClipTokenizer.rules
    dataset: str
    setting: str
    mitp_version: str
    bundle_format: int

    @property
    def image_size(self) -> int:  # checked in 1..MAX_IMAGE_SIZE when the contract was read
        return int(self.image["size"])

    @property
    def mean_std(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        return tuple(self.image["normalize"]["mean"]), tuple(self.image["normalize"]["std"])


def metadata_props(contract: dict[str, Any], variant: str) -> dict[str, str]:
    """The key -> JSON string pairs written into one model file: the contract plus the file's variant."""
    values = {**contract, "variant": {"name": variant, "file": VARIANT_FILES[variant], **VARIANT_PRECISION[variant]}}
    return {key: json.dumps(value) for key, value in values.items()}


def models_entry(variants: list[str]) -> dict[str, dict[str, str]]:
    return {name: {"file": VARIANT_FILES[name], **VARIANT_PRECISION[name]} for name in variants}


def parse_metadata(props: dict[str, str], source: str) -> BundleInfo:
    """Read and check the metadata of a bundle's model; BundleError says what is wrong."""
    missing = [key for key in REQUIRED_KEYS if key not in props]
    if missing:
        raise BundleError(f"{source} has no mitp metadata ({', '.join(missing)} missing): not a bundle made by `mitp export`")
    try:
        values = {key: json.loads(props[key]) for key in REQUIRED_KEYS}
    except json.JSONDecodeError as err:
        raise BundleError(f"{source}: metadata is not valid JSON ({err})") from err
    return _info(values, source)


def _check_image_rule(image: Any, source: str) -> None:
    """The image rule's size and normalisation, bounded and typed before a crop of that size is allocated."""
    size = image.get("size") if isinstance(image, dict) else None
    if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= MAX_IMAGE_SIZE:
        raise BundleError(f"{source}: image size {size!r} is not a whole number of pixels in 1..{MAX_IMAGE_SIZE}")
    norm = image.get("normalize")
    mean, std = (norm.get("mean"), norm.get("std")) if isinstance(norm, dict) else (None, None)
    for stat in (mean, std):
        if not isinstance(stat, list) or len(stat) != 3 or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in stat):
            raise BundleError(f"{source}: image normalize must hold mean and std, three numbers each")
    if not all(v > 0 for v in std or []):
        raise BundleError(f"{source}: image normalize std must be positive, got {std}")


def bundle_file(bundle: Path, name: Any, what: str, max_bytes: int | None = None) -> Path:
    """The file that bundle.json or vectors.json names, which must be a relative path inside the bundle (no
    `..`, no absolute path, no link out of it) to a regular file of at most `max_bytes`; else BundleError."""
    bundle = Path(bundle)
    if not isinstance(name, str) or not name or "\0" in name or os.path.isabs(name) or ".." in Path(name).parts:
        raise BundleError(f"{bundle}: {what} {name!r} is not a relative path inside the bundle")
    path = bundle / name
    if not inside(path, bundle):  # links resolved; a Hub cache snapshot's links into its blobs are inside
        raise BundleError(f"{bundle}: {what} {name!r} leads out of the bundle")
    if not path.is_file():
        raise BundleError(f"{bundle}: {what} {name!r} is not a file in the bundle")
    if max_bytes is not None and path.stat().st_size > max_bytes:
        raise BundleError(f"{bundle}: {what} {name!r} is {path.stat().st_size:,} bytes, more than the {max_bytes:,} allowed")
    return path


def external_data(bundle: Path, contract: dict[str, Any], variant: str) -> str | None:
    """The file in the bundle that holds a model's weights apart, as ONNX external data, or None: its
    backbone's weights (`backbone_weights.<variant>`, mitp.runtime.weights), or in bundles exported before
    them `<model>.data` beside the model. A bundle that carries its trained part alone has none."""
    weights = contract.get(BACKBONE_KEY, {}).get(variant) if isinstance(contract.get(BACKBONE_KEY), dict) else None
    name = weights.get("file") if isinstance(weights, dict) else contract["models"][variant]["file"] + ".data"
    return name if isinstance(name, str) and (Path(bundle) / name).is_file() else None


def read_contract(bundle: Path) -> dict[str, Any]:
    """bundle.json of a bundle folder, checked like the ONNX metadata."""
    path = Path(bundle) / CONTRACT_FILE
    if path.is_symlink() and not inside(path, bundle):
        raise BundleError(f"{bundle}: {CONTRACT_FILE} leads out of the bundle")
    try:
        if path.stat().st_size > MAX_VECTORS_BYTES:
            raise BundleError(f"{path} is {path.stat().st_size:,} bytes: not a bundle contract")
        contract = json.loads(path.read_text())
    except FileNotFoundError as err:
        raise BundleError(f"{path} not found: is {bundle} a bundle written by `mitp export` (format {BUNDLE_FORMAT})?") from err
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
        raise BundleError(f"{path} is not valid JSON ({type(err).__name__}: {str(err)[:120]})") from err
    if not isinstance(contract, dict) or any(key not in contract for key in REQUIRED_KEYS):
        raise BundleError(f"{path} lacks the bundle contract's keys ({', '.join(REQUIRED_KEYS)})")
    _info(contract, str(path))
    return contract


def _info(values: dict[str, Any], source: str) -> BundleInfo:
    if values["mitp_bundle_format"] != BUNDLE_FORMAT:
        raise BundleError(
            f"{source} is bundle format {values['mitp_bundle_format']!r} (mitp {values['mitp_version']}); this mitp reads "
            f"format {BUNDLE_FORMAT}: export it again with this version"
        )
    labels = values["labels"]
    if not isinstance(labels, list) or not labels or not all(isinstance(v, str) and v for v in labels) or len(set(labels)) != len(labels):
        raise BundleError(f"{source}: labels must be a list of distinct, non-empty names")
    if values["task"] not in ("single-label", "multi-label"):
        raise BundleError(f"{source}: task {values['task']!r} is not single-label or multi-label")
    for key in ("dataset", "setting", "mitp_version"):
        if not isinstance(values[key], str):
            raise BundleError(f"{source}: {key} must be text, not {values[key]!r:.60}")
    tokenizer = values["tokenizer"]
    length = tokenizer.get("max_length") if isinstance(tokenizer, dict) else None
    if isinstance(length, bool) or not isinstance(length, int) or not 2 <= length <= MAX_TOKENS:
        raise BundleError(f"{source}: tokenizer max_length {length!r} is not a whole number in 2..{MAX_TOKENS}")
    if not isinstance(tokenizer.get("file", ""), str):
        raise BundleError(f"{source}: tokenizer file {tokenizer.get('file')!r:.60} is not a file name")
    models = values.get("models", {})
    if not isinstance(models, dict) or any(name not in VARIANT_FILES or not isinstance(entry, dict) or not isinstance(entry.get("file"), str) for name, entry in models.items()):
        names = ", ".join(map(repr, models)) if isinstance(models, dict) else repr(models)
        raise BundleError(f"{source}: models {names:.120} are not among this mitp's variants ({', '.join(VARIANT_FILES)})")
    decision = values["decision"]
    expected = decision_rule(values["task"])["rule"]
    if not isinstance(decision, dict) or decision.get("rule") != expected:
        rule = decision.get("rule") if isinstance(decision, dict) else decision
        raise BundleError(f"{source}: decision rule {rule!r} is not this mitp's rule for a {values['task']} task ({expected!r})")
    _check_image_rule(values["image"], source)
    threshold = decision.get("threshold", 0.5)
    if expected == SIGMOID_THRESHOLD and (isinstance(threshold, bool) or not isinstance(threshold, int | float) or not 0 < threshold < 1):
        raise BundleError(f"{source}: decision threshold {threshold!r} is not a number between 0 and 1")
    return BundleInfo(
        labels=list(values["labels"]),
        task=values["task"],
        decision=dict(values["decision"]),
        image=dict(values["image"]),
        tokenizer=dict(values["tokenizer"]),
        dataset=values["dataset"],
        setting=values["setting"],
        mitp_version=values["mitp_version"],
        bundle_format=values["mitp_bundle_format"],
    )
