"""The inference bundle's contract: what `model.onnx` carries in its `metadata_props` (JSON values).

Shared by the exporter (which writes it) and the predict path (which reads it with onnxruntime alone),
so this module imports neither torch nor onnx. A bundle is a folder:

    model.onnx          inputs pixel_values [B,3,H,W] f32, input_ids [B,77] i64, attention_mask [B,77] i64
                        -> logits [B,K] f32; prompts, hub and class embeddings baked in
    model.fp16.onnx     optional half-precision variant for GPUs (checked by top-1 agreement)
    model.int8.onnx     optional variant for CPUs, MatMul weights in int8 (checked by top-1 agreement)
    tokenizer.json      the `tokenizers` file of the backbone
    export_report.json  how the export was verified (max abs diff against PyTorch, batch sizes)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

BUNDLE_FORMAT = 1  # bumped when the graph's inputs/outputs or the metadata change incompatibly
MODEL_FILE, TOKENIZER_FILE, REPORT_FILE = "model.onnx", "tokenizer.json", "export_report.json"
VARIANT_FILES = {"fp32": MODEL_FILE, "fp16": "model.fp16.onnx", "int8": "model.int8.onnx"}  # `mitp predict --variant`
REQUIRED_KEYS = ("mitp_bundle_format", "mitp_version", "labels", "task", "decision", "image", "tokenizer", "dataset", "setting")


class BundleError(ValueError):
    """A bundle is missing, incomplete, or from an incompatible mitp version."""


@dataclass(frozen=True)
class BundleInfo:
    labels: list[str]
    task: str  # single-label | multi-label
    decision: dict[str, Any]  # {"rule": "softmax-argmax"} or {"rule": "sigmoid-threshold", "threshold": 0.5}
    image: dict[str, Any]  # size, resize, crop, mean, std
    tokenizer: dict[str, Any]  # max_length, pad/bos/eos ids
    dataset: str
    setting: str
    mitp_version: str
    bundle_format: int


def metadata_props(info: BundleInfo, extra: dict[str, Any] | None = None) -> dict[str, str]:
    """The key -> JSON string pairs written into the ONNX model."""
    values = {
        "mitp_bundle_format": info.bundle_format,
        "mitp_version": info.mitp_version,
        "labels": info.labels,
        "task": info.task,
        "decision": info.decision,
        "image": info.image,
        "tokenizer": info.tokenizer,
        "dataset": info.dataset,
        "setting": info.setting,
        **(extra or {}),
    }
    return {key: json.dumps(value) for key, value in values.items()}


def parse_metadata(props: dict[str, str], source: str) -> BundleInfo:
    """Read and check the metadata of a bundle's model; BundleError says what is wrong."""
    missing = [key for key in REQUIRED_KEYS if key not in props]
    if missing:
        raise BundleError(f"{source} has no mitp metadata ({', '.join(missing)} missing): not a bundle made by `mitp export`")
    try:
        values = {key: json.loads(props[key]) for key in REQUIRED_KEYS}
    except json.JSONDecodeError as err:
        raise BundleError(f"{source}: metadata is not valid JSON ({err})") from err
    if values["mitp_bundle_format"] != BUNDLE_FORMAT:
        raise BundleError(
            f"{source} is bundle format {values['mitp_bundle_format']} (mitp {values['mitp_version']}); this mitp reads "
            f"format {BUNDLE_FORMAT}: export it again with this version"
        )
    if values["task"] not in ("single-label", "multi-label") or not values["labels"]:
        raise BundleError(f"{source}: metadata has task {values['task']!r} and {len(values['labels'])} labels")
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
