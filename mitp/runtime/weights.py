"""The frozen backbone's weights file of a bundle: found, checked, and shared between sessions.

`mitp export` writes a bundle's backbone tensors to `backbone-<hash>.onnx.data`, byte-identical in every
bundle exported from the same backbone, and lists them in bundle.json (`backbone_weights.<variant>`: the
file, its SHA-256 and size, and each tensor's name, dtype, shape, offset and length). Two things follow:

- A bundle may come without that file (a release that carries the task's part alone): the file is then
  looked for in the local backbone store, `$MITP_BACKBONES` or else `backbones/` in mitp's cache
  (`$MITP_CACHE`, by default `~/.cache/mitp`), where any
  bundle's copy of it can be put (`mitp bundle share`).
- Sessions of several bundles that name the same file can share one copy of its tensors (`TensorCache`):
  each tensor is memory-mapped from the file once and handed to every session as an initializer
  (onnxruntime's shared initializers). onnxruntime would otherwise copy weights per session (on a CPU it
  repacks each MatMul weight, and its layout optimizations rewrite int8 weights), so shared sessions run
  without pre-packing and with the graph optimizations up to the extended fusions, and on a CPU they
  share one arena for their activations as well.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..files.atomic import file_sha256
from .bundle import BACKBONE_KEY, BundleError

STORE_ENV = "MITP_BACKBONES"
FILE_NAME = re.compile(r"^backbone-[0-9a-f]{16}\.onnx\.data$")
SHA256 = re.compile(r"^[0-9a-f]{64}$")
DTYPES = {"float32", "float16", "int8", "uint8", "int32", "int64", "bool", "float64"}


def backbone_store() -> Path:
    """Where backbone weights files are found when a bundle does not carry its own."""
    from .verify import user_cache

    return Path(os.environ[STORE_ENV]) if os.environ.get(STORE_ENV) else user_cache() / "backbones"


@dataclass(frozen=True)
class BackboneWeights:
    """One model's backbone file, where it was found, and its tensors as bundle.json lists them."""

    file: Path
    table: tuple[dict[str, Any], ...]
    in_bundle: bool


def weights_of(bundle: Path, contract: dict[str, Any], variant: str) -> BackboneWeights | None:
    """The backbone weights a bundle's model names (None for a bundle that keeps them inside its model),
    found in the bundle or in the store; BundleError when the file is in neither or does not match."""
    entries = contract.get(BACKBONE_KEY) or {}
    entry = entries.get(variant) if isinstance(entries, dict) else entries
    if entry is None:
        return None
    name, size, table = _checked_entry(entry, bundle)
    for folder, in_bundle in ((Path(bundle), True), (backbone_store(), False)):
        path = folder / name
        if path.is_file():
            if path.stat().st_size != size:
                raise BundleError(f"{path} is {path.stat().st_size:,} bytes; {bundle}'s bundle.json says {size:,}: it is not the same backbone file")
            return BackboneWeights(path, table, in_bundle)
    raise BundleError(
        f"{bundle} carries its trained part alone: its backbone weights {name} are neither in it nor in the backbone store "
        f"{backbone_store()} (set {STORE_ENV} to another). Put there the copy of any bundle exported from the same "
        "backbone: mitp bundle share BUNDLE"
    )


def _checked_entry(entry: Any, bundle: Path) -> tuple[str, int, tuple[dict[str, Any], ...]]:
    """bundle.json's weights entry, every field typed and every tensor inside the file, or BundleError."""
    where = f"{Path(bundle) / 'bundle.json'}: {BACKBONE_KEY}"
    if not isinstance(entry, dict) or not isinstance(entry.get("file"), str) or not FILE_NAME.match(entry["file"]):
        raise BundleError(f"{where} names no backbone file (backbone-<16 hex>.onnx.data)")
    size, table, digest = entry.get("bytes"), entry.get("table"), entry.get("sha256")
    if type(size) is not int or size < 0 or not isinstance(table, list) or not isinstance(digest, str) or not SHA256.match(digest):
        raise BundleError(f"{where} gives no size, SHA-256 or tensor table")
    for tensor in table:
        if not _in_file(tensor, size):
            raise BundleError(f"{where}: tensor {str(tensor)[:120]} is not a tensor of the file")
    return entry["file"], size, tuple(table)


def _in_file(tensor: Any, size: int) -> bool:
    if not isinstance(tensor, dict) or not isinstance(tensor.get("name"), str) or tensor.get("dtype") not in DTYPES:
        return False
    shape, offset, length = tensor.get("shape"), tensor.get("offset"), tensor.get("length")
    if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape) or type(offset) is not int or type(length) is not int:
        return False
    return 0 <= offset and offset + length <= size and length == math.prod(shape) * np.dtype(tensor["dtype"]).itemsize


@dataclass
class TensorCache:
    """One copy of each backbone tensor for every session given it, keyed by the file's name (its content)
    and the tensor's place in it, on the device the sessions run on."""

    _values: dict[tuple[Any, ...], Any] = field(default_factory=dict)
    _maps: dict[str, np.memmap] = field(default_factory=dict)

    def value(self, ort: Any, weights: BackboneWeights, tensor: dict[str, Any], device: str) -> Any:
        key = (weights.file.name, tensor["offset"], tensor["dtype"], tuple(tensor["shape"]), device)
        if key not in self._values:
            mapped = self._maps.setdefault(weights.file.name, np.memmap(weights.file, dtype=np.uint8, mode="r"))
            data = mapped[tensor["offset"] : tensor["offset"] + tensor["length"]]
            array = data.view(np.dtype(tensor["dtype"])).reshape(tensor["shape"])  # no copy: pages of the file
            self._values[key] = ort.OrtValue.ortvalue_from_numpy(array, device, 0)
        return self._values[key]

    @property
    def tensors(self) -> int:
        return len(self._values)


def session_options(ort: Any, weights: BackboneWeights, cache: TensorCache | None, device: str) -> Any:
    """Options that read the model's backbone from where it was found, and, given a cache, take its
    tensors from the cache (without pre-packing on a CPU, which would copy each one per session)."""
    options = ort.SessionOptions()
    options.add_session_config_entry("session.model_external_initializers_file_folder_path", str(weights.file.parent))
    if cache is not None:
        for tensor in weights.table:
            options.add_initializer(tensor["name"], cache.value(ort, weights, tensor, device))
        # Past the extended fusions, onnxruntime's layout optimizations rewrite int8 weights into copies of
        # their own (measured: 0.5 GB a ViT-L/14 session), and on a CPU pre-packing copies every MatMul weight.
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        if device == "cpu":
            options.add_session_config_entry("session.disable_prepacking", "1")
            _share_cpu_arena(ort)  # one arena for the activations of all of them, not one each (0.5 GB at batch 16)
            options.add_session_config_entry("session.use_env_allocators", "1")
    return options


_arena_shared = False


def _share_cpu_arena(ort: Any) -> None:
    """Register one CPU arena with onnxruntime's environment, once per process, for sessions that ask for it."""
    global _arena_shared
    if not _arena_shared:
        memory = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT)
        ort.create_and_register_allocator(memory, ort.OrtArenaCfg(0, -1, -1, -1))  # defaults: grow as needed
        _arena_shared = True


def sharing(bundles: list[Path], variant: str) -> list[TensorCache | None]:
    """For bundles served together: one cache for those whose `variant` names a backbone file that another
    of them names too, None for the rest (alone, a session keeps onnxruntime's faster pre-packed weights)."""
    from collections import Counter

    from .bundle import read_contract

    names: list[str | None] = []
    for bundle in bundles:
        try:
            entry = (read_contract(bundle).get(BACKBONE_KEY) or {}).get(variant)
        except (BundleError, AttributeError):  # not a bundle: its verification says why
            entry = None
        names.append(entry.get("file") if isinstance(entry, dict) else None)
    counts = Counter(n for n in names if n)
    cache = TensorCache()
    return [cache if name and counts[name] > 1 else None for name in names]


def share_backbone(bundle: Path, store: Path | None = None) -> list[tuple[str, bool]]:
    """Put the bundle's backbone files into the store (each checked against its SHA-256 as it is copied,
    and moved in whole): [(file name, whether it was added)]. A file already there is kept when its
    SHA-256 is the one bundle.json names, and replaced when it is not."""
    import hashlib
    import shutil

    from .bundle import read_contract

    bundle, store = Path(bundle), store or backbone_store()
    contract = read_contract(bundle)
    done = []
    for variant, entry in sorted((contract.get(BACKBONE_KEY) or {}).items()):
        weights = weights_of(bundle, contract, variant)
        if weights is None or not weights.in_bundle:
            raise BundleError(f"{bundle} carries no backbone file of its own for {variant}: nothing to share")
        target = store / weights.file.name
        if target.is_file() and file_sha256(target) == entry.get("sha256"):
            done.append((target.name, False))
            continue
        partial = store / f".{target.name}.{os.getpid()}.partial"
        try:
            store.mkdir(parents=True, exist_ok=True)
            with weights.file.open("rb") as source, partial.open("wb") as out:
                digest = hashlib.sha256()
                while chunk := source.read(1 << 24):
                    digest.update(chunk)
                    out.write(chunk)
            if digest.hexdigest() != entry.get("sha256"):
                raise BundleError(f"{weights.file} does not hold what bundle.json says (its SHA-256 differs): not shared")
            shutil.copymode(weights.file, partial)
            partial.replace(target)  # a damaged copy already there is replaced whole
        except OSError as err:
            raise BundleError(f"cannot write the backbone store {store}: {err.strerror or err}") from None
        finally:
            with contextlib.suppress(OSError):  # nothing left behind, where anything could be written
                partial.unlink()
        done.append((target.name, True))
    if not done:
        raise BundleError(f"{bundle} keeps its backbone inside its models (exported before backbone files): export it again to share it")
    return done
