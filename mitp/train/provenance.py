"""What a number was measured with: the code, the libraries, the device, the precision, the backbone and the
data, recorded in every `result.json` and metrics file so that a result can be traced and compared.

"My numbers are below the paper's" is unanswerable without it: which commit, which torch and CUDA, which GPU,
bf16 or fp32, which weights, which copy of the data set (published copies differ in their pair counts).
"""

from __future__ import annotations

import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from .. import __version__
from ..config import RunConfig
from ..files.atomic import file_sha256
from ..model.backbone import PRESET_PREFIX

LIBRARIES = ("torch", "transformers", "accelerate", "tokenizers", "safetensors", "numpy", "onnx", "onnxruntime", "onnxruntime-gpu")
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def environment_record(run: RunConfig, clip: Any, mixed_precision: str, data_fingerprint: str | None) -> dict[str, Any]:
    """The record of one training or evaluation: code, libraries, device, precision, determinism, backbone, data."""
    return {
        "mitp": code_version(),
        "python": platform.python_version(),
        "libraries": library_versions(),
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "device": device_record(),
        "precision": {"config": run.train.precision, "autocast": mixed_precision},
        "determinism": {
            "seed": run.seed,
            "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
            "cudnn_benchmark": torch.backends.cudnn.benchmark,
            "cudnn_deterministic": torch.backends.cudnn.deterministic,
        },
        "backbone": backbone_identity(run.backbone, clip, run.seed),
        "data": {"prepared": run.dataset.data_dir or None, "fingerprint": data_fingerprint},
    }


def code_version() -> dict[str, Any]:
    """mitp's version, and the git commit of its source tree with whether files were modified (None for an
    installed wheel, which has no repository)."""
    source = Path(__file__).resolve().parents[1]  # the mitp package
    record: dict[str, Any] = {"version": __version__, "commit": None, "modified": None}
    try:
        top = _git(source, "rev-parse", "--show-toplevel")
        if top is None or not (source.parent == Path(top)):
            return record  # mitp not inside a repository of its own (a wheel under some other repository's tree)
        record["commit"] = _git(source, "rev-parse", "HEAD")
        status = _git(source, "status", "--porcelain", "--untracked-files=no")
        record["modified"] = bool(status) if status is not None else None
    except OSError:  # no git on this machine
        pass
    return record


def _git(where: Path, *args: str) -> str | None:
    result = subprocess.run(["git", "-C", str(where), *args], capture_output=True, text=True, timeout=10)
    return result.stdout.strip() if result.returncode == 0 else None


def library_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def device_record() -> dict[str, Any]:
    if not torch.cuda.is_available():
        return {"type": "cpu", "name": platform.processor() or platform.machine(), "threads": torch.get_num_threads()}
    return {
        "type": "cuda",
        "name": torch.cuda.get_device_name(),
        "count": torch.cuda.device_count(),
        "capability": ".".join(map(str, torch.cuda.get_device_capability())),
        "driver": _nvidia_driver(),
    }


def _nvidia_driver() -> str | None:
    try:
        result = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.splitlines()[0].strip() if result.returncode == 0 and result.stdout.strip() else None


def backbone_identity(spec: str, clip: Any, seed: int) -> dict[str, Any]:
    """Which weights: a preset's random draw (its seed), a hub model's revision (commit), or the sha256 of a
    local folder's weight file."""
    if spec.startswith(PRESET_PREFIX):
        return {"name": spec, "weights": f"random, seed {seed}"}
    folder = Path(spec)
    if folder.is_dir():
        weights = next((folder / name for name in WEIGHT_FILES if (folder / name).is_file()), None)
        return {"name": spec, "weights_sha256": file_sha256(weights) if weights else None}
    return {"name": spec, "revision": getattr(clip.config, "_commit_hash", None)}
