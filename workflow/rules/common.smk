# Helpers: which runs exist, where their files go. Names follow mitp: a run is a setting name, or
# "<setting>-frac<percent>" for the data-fraction runs of Table 3.
import os

from mitp.config import expand_grid

W = config["workflow"]
MITP_CONFIG = W["mitp_config"]
RESULTS = W["results"]
RUNS = f"{RESULTS}/runs"
BUNDLES = f"{RESULTS}/bundles"
REPORT = f"{RESULTS}/report"
GRID_SETTINGS = list(expand_grid(config.get("grid") or []))

for _name in W["datasets"]:
    if _name not in config["datasets"]:
        raise ValueError(f"workflow.datasets: {_name!r} is not under datasets")
    if config["datasets"][_name]["data_dir"] != f"data/{_name}":
        raise ValueError(f"datasets.{_name}.data_dir must be data/{_name} for the workflow")


def runs_for(dataset):
    names = list(W["settings"])
    if dataset in W["grid_datasets"]:
        names += [s for s in GRID_SETTINGS if s not in names]
    if dataset in W["fractions"]["datasets"]:
        names += [f"mitp-frac{p}" for p in W["fractions"]["percents"]]
    return names


def setting_of(run):
    return run.split("-frac")[0]


def fraction_option(run):
    return f"--fraction {int(run.split('-frac')[1]) / 100}" if "-frac" in run else ""


def run_dir(dataset, run, seed):
    return f"{RUNS}/{dataset}/{run}/seed{seed}"


def backbone_input(wildcards):
    """The stand-in CLIP, when the workflow makes it (demo); a hub name needs no input."""
    return [f"{W['standin']}/config.json"] if W.get("standin") else []


def gpus_for(wildcards):
    """GPUs of one training run: workflow.gpus[<setting>] if given, else workflow.gpus_per_run."""
    return W.get("gpus", {}).get(setting_of(wildcards.run), W["gpus_per_run"])


def launcher(wildcards):
    """`mitp`, or Accelerate's multi-GPU launcher when a run asks for more than one GPU."""
    gpus = gpus_for(wildcards)
    return f"accelerate launch --multi_gpu --num_processes {gpus} -m mitp.cli" if gpus > 1 else "mitp"


def all_targets():
    targets = [f"{REPORT}/table1.md", f"{REPORT}/summary.json"]
    for dataset in W["datasets"]:
        for run in runs_for(dataset):
            for seed in W["seeds"]:
                targets.append(f"{run_dir(dataset, run, seed)}/metrics-test.json")
        for setting in W["export"]:
            targets.append(f"{BUNDLES}/{dataset}/{setting}.predictions.jsonl")
    return targets


wildcard_constraints:
    dataset="[A-Za-z0-9_-]+",
    setting="[A-Za-z0-9_-]+",
    run="[A-Za-z0-9_-]+",
    seed="[0-9]+",
