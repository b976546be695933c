"""The frozen backbone's weights apart from the task's: one external-data file named by its content.

Every bundle exported from the same frozen CLIP holds the same backbone tensors; only the prompts, the
memory hub and the head differ. The export writes the backbone's initializers (those of at least 1 KiB)
to `backbone-<hash>.onnx.data`, in an order fixed by their own content (each one once, at a page-aligned
offset), so the file is byte-identical across tasks and its name says so. The task's own tensors stay
inside model.onnx. A server then loads one copy for every bundle that names the file (mitp.runtime.weights),
and a release may carry the task's part alone, the backbone file being found in a local store.

Which initializers are the backbone's: the fp32 graph's tensors whose bytes equal a frozen tensor of the
PyTorch model, as it is or transposed (the exporter names folded weights `val_N`, so names cannot say).
The fp16 and int8 variants keep the fp32 names (`X` stays `X`; the quantizer writes `X_quantized`,
`X_scale`, `X_zero_point`), so their backbone tensors are found by name.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

BACKBONE_PREFIX, BACKBONE_SUFFIX = "backbone-", ".onnx.data"
MIN_SHARED_BYTES = 1024  # smaller tensors stay inline: an external reference would cost more than it saves
ALIGN = 4096  # each tensor starts on a page, so the file can be memory-mapped tensor by tensor
QUANTIZED_SUFFIXES = ("_quantized", "_scale", "_zero_point")


def frozen_hashes(model: torch.nn.Module) -> set[bytes]:
    """SHA-256 of each frozen parameter and buffer's bytes, and of each frozen matrix transposed."""
    hashes = set()
    tensors = [p for p in model.parameters() if not p.requires_grad] + list(model.buffers())
    for tensor in tensors:
        array = np.ascontiguousarray(tensor.detach().cpu().numpy())
        hashes.add(hashlib.sha256(array.tobytes()).digest())
        if array.ndim == 2:
            hashes.add(hashlib.sha256(np.ascontiguousarray(array.T).tobytes()).digest())
    return hashes


def by_content(hashes: set[bytes]) -> Callable[[Any], bool]:
    """Is an initializer the backbone's: its bytes are those of a frozen tensor."""
    from onnx import numpy_helper

    return lambda tensor: hashlib.sha256(np.ascontiguousarray(numpy_helper.to_array(tensor)).tobytes()).digest() in hashes


def by_name(names: set[str]) -> Callable[[Any], bool]:
    """Is a variant's initializer the backbone's: it is named as an fp32 backbone tensor, or derives from one."""

    def belongs(tensor: Any) -> bool:
        base = next((tensor.name[: -len(s)] for s in QUANTIZED_SUFFIXES if tensor.name.endswith(s)), tensor.name)
        return tensor.name in names or base in names

    return belongs


def move_backbone(model: Any, folder: Path, belongs: Callable[[Any], bool]) -> dict[str, Any] | None:
    """Move the backbone's initializers of the ONNX `model` (loaded whole) to a file in `folder` named by
    its content, and point them at it; returns {file, sha256, bytes}, or None when the model holds no
    backbone tensor. The model itself is saved by the caller."""
    from onnx import TensorProto, numpy_helper

    chosen = []
    for tensor in model.graph.initializer:
        if tensor.data_location != TensorProto.EXTERNAL and _nbytes(tensor) >= MIN_SHARED_BYTES and belongs(tensor):
            data = np.ascontiguousarray(numpy_helper.to_array(tensor)).tobytes()
            chosen.append((hashlib.sha256(data).digest(), tensor, data))
    if not chosen:
        return None
    chosen.sort(key=lambda entry: entry[0])  # the file's order is its content's, whatever the graph's
    part = folder / ".backbone.partial"
    offsets: dict[bytes, int] = {}
    digest = hashlib.sha256()
    with part.open("wb") as out:
        for key, _, data in chosen:
            if key in offsets:  # the same tensor under two names (tied weights): stored once
                continue
            padding = -out.tell() % ALIGN
            for chunk in (b"\0" * padding, data):
                out.write(chunk)
                digest.update(chunk)
            offsets[key] = out.tell() - len(data)
    name = f"{BACKBONE_PREFIX}{digest.hexdigest()[:16]}{BACKBONE_SUFFIX}"
    part.replace(folder / name)
    for key, tensor, data in chosen:
        _point_at(tensor, name, offsets[key], len(data))
    return {"file": name, "sha256": digest.hexdigest(), "bytes": (folder / name).stat().st_size}


def tensor_table(model: Any, file: str) -> list[dict[str, Any]]:
    """The initializers of `model` kept in `file`: name, dtype, shape, offset and length each, so that a
    reader without onnx (mitp.runtime.weights, another language) can map them from the file itself."""
    from onnx import helper

    table = []
    for tensor in model.graph.initializer:
        where = {e.key: e.value for e in tensor.external_data}
        if where.get("location") == file:
            dtype = helper.tensor_dtype_to_np_dtype(tensor.data_type).name
            table.append({"name": tensor.name, "dtype": dtype, "shape": list(tensor.dims), "offset": int(where["offset"]), "length": int(where["length"])})
    return table


def _nbytes(tensor: Any) -> int:
    from onnx import helper

    return int(np.prod(tensor.dims, dtype=np.int64)) * helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize


def _point_at(tensor: Any, location: str, offset: int, length: int) -> None:
    """Make `tensor` an external-data reference, its values dropped from the graph."""
    from onnx import TensorProto

    for field in ("raw_data", "float_data", "int32_data", "int64_data", "double_data", "uint64_data", "string_data"):
        tensor.ClearField(field)
    tensor.data_location = TensorProto.EXTERNAL
    del tensor.external_data[:]
    for key, value in (("location", location), ("offset", str(offset)), ("length", str(length))):
        tensor.external_data.add(key=key, value=value)
