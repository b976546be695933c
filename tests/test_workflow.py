"""The workflow's cluster and local mechanics: GPU accounting of local runs, GPU slots, the Slurm profile
layered with a site profile, and logs that survive a retry. The whole workflow runs in CI (.ci/run)."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from mitp.train.gpus import GPUSlotError, claim_gpu_slot

ROOT = Path(__file__).resolve().parents[1]


def fake_nvidia_smi(folder: Path, gpus: int) -> str:
    script = folder / "nvidia-smi"
    script.write_text("#!/bin/sh\n" + "".join(f"echo {i}\n" for i in range(gpus)))
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return f"{folder}{os.pathsep}{os.environ['PATH']}"


def local_gpu_resource(monkeypatch, tmp_path, gpus: int, extra_config: dict | None = None, resources: dict | None = None):
    """Load the Snakefile as `snakemake --cores 8 all` would on a machine with `gpus` GPUs."""
    from snakemake.api import SnakemakeApi
    from snakemake.settings.types import ConfigSettings, OutputSettings, ResourceSettings

    monkeypatch.setenv("PATH", fake_nvidia_smi(tmp_path, gpus))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.chdir(ROOT)
    for key in ("MITP_GPU_SLOTS", "MITP_GPU_SLOT_DIR"):  # set first, so that what the Snakefile sets is undone after
        monkeypatch.setenv(key, "")
        monkeypatch.delenv(key)
    with SnakemakeApi(OutputSettings(quiet=None)) as api:
        workflow_api = api.workflow(
            resource_settings=ResourceSettings(cores=8, resources=resources or {}),
            config_settings=ConfigSettings(config=extra_config or {}),
            snakefile=ROOT / "Snakefile",
            workdir=ROOT,
        )
        workflow_api.dag()
        resource = workflow_api._workflow.global_resources.get("gpu")
    return getattr(resource, "value", resource), os.environ.get("MITP_GPU_SLOTS")


def test_a_local_run_places_as_many_gpu_jobs_as_the_machine_has_gpus(monkeypatch, tmp_path):
    assert local_gpu_resource(monkeypatch, tmp_path, gpus=1) == (1, "0:1")  # one training job at a time
    workflow = {"workflow": {"gpu_slots_per_gpu": 2}}
    assert local_gpu_resource(monkeypatch, tmp_path, gpus=2, extra_config=workflow) == (4, "0,1:2")
    assert local_gpu_resource(monkeypatch, tmp_path, gpus=1, resources={"gpu": 3})[0] == 3  # --resources wins
    assert local_gpu_resource(monkeypatch, tmp_path, gpus=0)[0] == 1  # CPU only: one at a time


def test_gpu_slots_spread_over_gpus_then_double_up_and_never_overbook(tmp_path):
    environ = {"MITP_GPU_SLOTS": "0,1:2", "MITP_GPU_SLOT_DIR": str(tmp_path)}
    # Another process holds slots through its own open files; here, claims stay held by this process's
    # open lock files, and flock locks of one process conflict across separately opened files.
    claimed = [claim_gpu_slot(dict(environ)) for _ in range(4)]
    assert claimed == ["0", "1", "0", "1"]
    with pytest.raises(GPUSlotError, match="all 4 GPU slots"):
        claim_gpu_slot(dict(environ))
    assert claim_gpu_slot({}) is None  # outside a local workflow run: nothing to do


def test_the_slurm_profile_takes_site_placement_and_keeps_what_jobs_need():
    done = subprocess.run(
        ["snakemake", "-n", "--profile", "workflow/profiles/slurm", "--profile", "workflow/profiles/slurm-site.example", "all"],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    blocks = {}
    for block in done.stdout.split("\nrule ")[1:]:
        blocks.setdefault(block.split(":")[0], block)
    train = blocks["train"]
    for wanted in ("mem_mb=64000", "gpu=1", "runtime=720", "slurm_partition=gpu-a100", "gpu_model=a100", "slurm_account=my-project"):
        assert wanted in train, wanted
    prepare = blocks["prepare"]
    assert "mem_mb=16000" in prepare and "slurm_partition" not in prepare and "gpu=" not in prepare


def test_a_failed_attempts_log_is_kept_beside_the_next_attempts(tmp_path):
    log = tmp_path / "job.log"
    script = ROOT / "workflow" / "scripts" / "logged.sh"
    for attempt in (1, 2):
        done = subprocess.run(["bash", str(script), str(log), "sh", "-c", f"echo attempt {attempt}; exit 3"])
        assert done.returncode == 3
    assert subprocess.run(["bash", str(script), str(log), "sh", "-c", "echo attempt 3"]).returncode == 0
    assert log.read_text() == "attempt 3\n"
    assert (tmp_path / "job.log.failed-1").read_text() == "attempt 1\n"
    assert (tmp_path / "job.log.failed-2").read_text() == "attempt 2\n"


def test_a_failed_jobs_reason_reaches_the_console(tmp_path):
    log = tmp_path / "job.log"
    script = ROOT / "workflow" / "scripts" / "logged.sh"
    command = "echo progress; echo 'error: Kaggle credentials are needed: put kaggle.json in ~/.kaggle'; exit 2"
    done = subprocess.run(["bash", str(script), str(log), "sh", "-c", command], capture_output=True, text=True)
    assert done.returncode == 2
    assert "error: Kaggle credentials are needed" in done.stderr and str(log) in done.stderr and "progress" not in done.stderr
    done = subprocess.run(["bash", str(script), str(log), "sh", "-c", "echo Traceback; echo ValueError: boom; exit 1"], capture_output=True, text=True)
    assert "ValueError: boom" in done.stderr  # no mitp error line: the log's last lines


def test_downloads_are_not_retried_by_snakemake():
    rules = (ROOT / "workflow" / "rules" / "data.smk").read_text()
    assert "retries:" not in rules  # mitp resumes interruptions itself; other failures cannot change


def _training_jobs(*configfiles: Path) -> dict[str, list[str]]:
    """{rule: [run folders]} of every training job in a dry run of the demo profile, from its printed jobs."""
    configs = [str(ROOT / "workflow/profiles/demo/demo.yaml"), *map(str, configfiles)]
    done = subprocess.run(
        ["snakemake", "-n", "--forceall", "--profile", "workflow/profiles/demo", "--configfile", *configs, "--", "all"],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    jobs: dict[str, list[str]] = {}
    for block in done.stdout.split("\nrule ")[1:]:
        name = block.split(":")[0]
        if name.startswith("train"):
            outputs = next(line for line in block.splitlines() if line.strip().startswith("output:"))
            jobs.setdefault(name, []).extend(
                path.removesuffix("/result.json") for path in outputs.split(":", 1)[1].split(", ") if path.strip().endswith("result.json")
            )
    return {name: [path.strip() for path in paths] for name, paths in jobs.items()}


def test_the_demo_trains_its_runs_in_packs_and_the_quick_run_alone(tmp_path):
    packed = _training_jobs()
    runs = [run for folders in packed.values() for run in folders]
    assert len(runs) == len(set(runs)) == 82  # every run of the demo, each trained by one job
    assert packed["train"] == ["results/demo/runs/demo-food101/mitp/seed0"]  # the quick target's run, alone
    packs = {name: folders for name, folders in packed.items() if name != "train"}
    assert all(5 <= len(folders) <= 8 for folders in packs.values()), {k: len(v) for k, v in packs.items()}
    assert all(len({folder.split("/")[3] for folder in folders}) == 1 for folders in packs.values())  # one data set each
    one_per_job = tmp_path / "one.yaml"
    one_per_job.write_text("workflow: {runs_per_job: 1}\n")
    alone = _training_jobs(one_per_job)
    assert list(alone) == ["train"] and sorted(alone["train"]) == sorted(runs)
