"""Training jobs of a local workflow run sharing the machine's GPUs: one GPU slot per job.

Snakemake counts GPU slots as a resource (a local run gets `gpu = GPUs x workflow.gpu_slots_per_gpu`), so
a slot is free whenever a job starts; which slot, and so which GPU, is for the job to find. The workflow
sets MITP_GPU_SLOTS ("<device ids>:<slots per device>", e.g. "0,1:2") and MITP_GPU_SLOT_DIR for local runs;
`claim_gpu_slot` then takes the first free slot (an flock on one file per slot, held until the process
exits), spreading jobs over the GPUs before doubling up, and sets CUDA_VISIBLE_DEVICES to that slot's GPU
before CUDA starts. Cluster jobs get their GPUs from the scheduler and never see these variables.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
from collections.abc import MutableMapping
from pathlib import Path
from typing import IO

from ..errors import MitpError

ENV_SLOTS, ENV_DIR = "MITP_GPU_SLOTS", "MITP_GPU_SLOT_DIR"
_held: list[IO] = []  # open lock files: the slots this process holds until it exits


class GPUSlotError(MitpError, RuntimeError):
    """No GPU slot was free, or the slot settings are malformed."""


def visible_gpus() -> list[str]:
    """The GPU ids this machine offers: CUDA_VISIBLE_DEVICES if set, else what nvidia-smi lists."""
    if "CUDA_VISIBLE_DEVICES" in os.environ:
        return [d.strip() for d in os.environ["CUDA_VISIBLE_DEVICES"].split(",") if d.strip() and d.strip() != "-1"]
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        listed = subprocess.run(
            ["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"], capture_output=True, text=True, timeout=30, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in listed.splitlines() if line.strip()]


def slots_spec(devices: list[str], per_gpu: int) -> str:
    return f"{','.join(devices)}:{per_gpu}"


def claim_gpu_slot(environ: MutableMapping[str, str] | None = None) -> str | None:
    """Claim a free slot if the workflow asked for it; returns the GPU id now in CUDA_VISIBLE_DEVICES."""
    environ = os.environ if environ is None else environ
    spec = environ.get(ENV_SLOTS)
    if not spec:
        return None
    try:
        devices_text, per_gpu_text = spec.rsplit(":", 1)
        devices, per_gpu = [d for d in devices_text.split(",") if d], int(per_gpu_text)
    except ValueError as err:
        raise GPUSlotError(f"{ENV_SLOTS}={spec!r} is not '<device ids>:<slots per device>'") from err
    folder = Path(environ.get(ENV_DIR, ".mitp-gpu-slots"))
    folder.mkdir(parents=True, exist_ok=True)
    for slot in range(per_gpu):
        for device in devices:  # spread over the GPUs before putting a second job on one
            handle = open(folder / f"gpu{device}.slot{slot}.lock", "a+")  # noqa: SIM115 (held until exit)
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                continue
            _held.append(handle)
            environ["CUDA_VISIBLE_DEVICES"] = device
            return device
    raise GPUSlotError(f"all {len(devices) * per_gpu} GPU slots in {folder} are taken; is another workflow running here?")
