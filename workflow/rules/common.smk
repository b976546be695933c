# Helpers: which runs exist, where their files go, what each job needs. A run's folder is its setting's
# name, or "<setting>-frac<percent>" for the data-fraction runs of Table 3 (FRACTION_RUNS names them once).
import hashlib
import json
import os
import sys
from pathlib import Path

import yaml

from mitp.files.atomic import atomic_write_text
from mitp.config import expand_grid, parse_config, reading_setting, run_seeds
from mitp.train.gpus import ENV_DIR, ENV_SLOTS, slots_spec, visible_gpus
from mitp.model.presets import known_image_size
from mitp.score.inputs import input_shards

W = config["workflow"]
RESULTS = W["results"]
RUNS = f"{RESULTS}/runs"
BUNDLES = f"{RESULTS}/bundles"
REPORT = f"{RESULTS}/report"
QUICK_REPORT = f"{RESULTS}/quick/report"
LOGS = f"{RESULTS}/logs"
GRID_SETTINGS = list(expand_grid(config.get("grid") or []))
SCRIPTS = os.path.join(workflow.basedir, "workflow", "scripts")
# Jobs read every model from local files: the backbone is fetched once, by a local rule (compute nodes
# often have no internet, and 55 training jobs must not download at once into a shared cache).
OFFLINE = "HF_HUB_OFFLINE=1"
# Each job's output goes to its log; a failed attempt's log is kept as <log>.failed-<n> (Snakemake
# deletes the log before a retry).
LOGGED = f"bash {SCRIPTS}/logged.sh {{log}}"

# Every rule hands mitp the config Snakemake merged (config.yaml, then each --configfile, then --config),
# so an override reaches every job; train reruns when a value outside the workflow block changes.
MITP_CONFIG = f"{RESULTS}/mitp-config.yaml"
_MITP_VALUES = {key: value for key, value in config.items() if key != "workflow"}
CONFIG_HASH = hashlib.sha256(json.dumps(_MITP_VALUES, sort_keys=True, default=str).encode()).hexdigest()[:16]
if workflow.is_main_process and not workflow.dryrun:
    _merged = yaml.safe_dump(json.loads(json.dumps(config, default=str)), sort_keys=False)
    _text = f"# written by the workflow: the merged config that every rule passes to mitp --config\n{_merged}"
    if not Path(MITP_CONFIG).is_file() or Path(MITP_CONFIG).read_text() != _text:
        atomic_write_text(Path(MITP_CONFIG), _text)

# The schema checked types and bounds; mitp's own models check the rest (names the workflow uses exist,
# templates, layer order) before any job starts, with the message `mitp` itself would give.
PROJECT = parse_config(config)

for _name in W["datasets"]:
    if config["datasets"][_name]["data_dir"] != f"data/{_name}":
        raise ValueError(f"datasets.{_name}.data_dir must be data/{_name} for the workflow")


def res(stage, key):
    """What a job of `stage` needs (workflow.resources): threads, mem_mb, runtime (minutes)."""
    return W["resources"][stage][key]


# ------------------------------------------------------------------------------------------- the backbone

BACKBONE = config["backbone"]
if W.get("standin"):
    BACKBONE = W["standin"]  # the demo's stand-in CLIP, made by the standin rule
    BACKBONE_FILE = f"{BACKBONE}/config.json"
elif BACKBONE.startswith("preset:") or Path(BACKBONE).is_dir():
    BACKBONE_FILE = None  # random-weight preset, or a folder already on disk
else:  # a Hugging Face name: fetched once into models/
    BACKBONE = f"models/{BACKBONE.replace(os.sep, '--')}"
    BACKBONE_FILE = f"{BACKBONE}/config.json"


def backbone_input(wildcards):
    return [BACKBONE_FILE] if BACKBONE_FILE else []


def backbone_image_size():
    """The backbone's input size, for the image cache, without downloading anything (and without torch):
    workflow.image_size, or the size of the stand-in (the tiny preset), a preset, a known hub name or a folder."""
    spec = "preset:tiny" if W.get("standin") else config["backbone"]
    size = W.get("image_size") or known_image_size(spec)
    if size is None:
        raise ValueError(f"workflow.image_size: set the input size of backbone {spec!r} (224 for CLIP ViT-B and ViT-L)")
    return size


IMAGE_SIZE = backbone_image_size()


# ------------------------------------------------------------------------------------------- GPUs

GPU_SLOTS_PER_GPU = W.get("gpu_slots_per_gpu", 1)
if workflow.local_exec and workflow.is_main_process:
    # A local run (`snakemake --cores 8 all`) respects the machine's GPUs unless --resources says
    # otherwise: gpu = GPUs x slots per GPU (one on a CPU-only machine), and each job claims its GPU.
    # Cluster runs are left alone: their scheduler places one job per requested GPU.
    _gpus = visible_gpus()
    if "gpu" not in workflow.global_resources:
        workflow.register_resource("gpu", max(1, len(_gpus)) * GPU_SLOTS_PER_GPU)
    if _gpus:
        os.environ[ENV_SLOTS] = slots_spec(_gpus, GPU_SLOTS_PER_GPU)
        os.environ[ENV_DIR] = os.path.abspath(f"{RESULTS}/.gpu-slots")


def gpus_of(run):
    """GPUs of one training run: workflow.gpus[<setting>] if given, else workflow.gpus_per_run."""
    return W.get("gpus", {}).get(setting_of(run), W["gpus_per_run"])


def gpus_for(wildcards):
    return gpus_of(wildcards.run)


def gpu_resource(wildcards):
    """The `gpu` resource of a training job: one slot, or whole GPUs (all their slots) for a multi-GPU run."""
    gpus = gpus_for(wildcards)
    return gpus * GPU_SLOTS_PER_GPU if gpus > 1 and workflow.local_exec else gpus


def launcher(wildcards):
    """`mitp`, or Accelerate's multi-GPU launcher (on every visible GPU) when a run asks for more than one."""
    gpus = gpus_for(wildcards)
    if gpus > 1:
        return f"env -u {ENV_SLOTS} accelerate launch --multi_gpu --num_processes {gpus} -m mitp.cli"
    return "mitp"


# ------------------------------------------------------------------------------------------- runs

# the data-fraction runs of Table 3: folder name -> (setting, share of the training split)
FRACTION_RUNS = {f"mitp-frac{p}": ("mitp", p / 100) for p in W["fractions"]["percents"]}


def runs_for(dataset):
    names = list(W["settings"])
    names += [reading_setting(r) for r in W.get("readings", []) if reading_setting(r) not in names]  # MITP read each way
    if dataset in W["grid_datasets"]:
        names += [s for s in GRID_SETTINGS if s not in names]
    if dataset in W["fractions"]["datasets"]:
        names += list(FRACTION_RUNS)
    return names


def seeds_for(run):
    return run_seeds(run, PROJECT.workflow, grid=GRID_SETTINGS)


def run_dirs(dataset):
    return [run_dir(dataset, run, seed) for run in runs_for(dataset) for seed in seeds_for(run)]


def setting_of(run):
    return FRACTION_RUNS[run][0] if run in FRACTION_RUNS else run


def fraction_of(run):
    """The training share of a data-fraction run; None for a run on the whole split."""
    return FRACTION_RUNS[run][1] if run in FRACTION_RUNS else None


def fraction_option(run):
    return f"--fraction {fraction_of(run)}" if fraction_of(run) is not None else ""


def run_dir(dataset, run, seed):
    return f"{RUNS}/{dataset}/{run}/seed{seed}"


# ------------------------------------------------------------------------------------------- scoring

SCORE = config.get("score") or {}
SCORE_OUT = SCORE.get("out") or f"{RESULTS}/scores"
# The input's shards, read from its listing when the DAG is built (never from inside a file); none without a score block.
SCORE_SHARDS = [shard.name for shard in input_shards(Path(SCORE["input"]))] if SCORE else []


def score_records(wildcards):
    """The shard records the `score` target gathers; a clear stop when the config names no collection."""
    if not SCORE:
        raise ValueError("snakemake score needs a score: block in the config (score: {input: pairs.parquet, model: bundles/food101}), e.g. in a second --configfile")
    return expand(f"{SCORE_OUT}/shards/{{shard}}.json", shard=SCORE_SHARDS)


def all_targets():
    targets = [f"{REPORT}/table1.md", f"{REPORT}/summary.json"]
    for dataset in W["datasets"]:
        targets += [f"{folder}/metrics-test.json" for folder in run_dirs(dataset)]
        for setting in W["export"]:
            targets.append(f"{BUNDLES}/{dataset}/{setting}.predictions.jsonl")
    return targets


def quick_run():
    """The one run of `snakemake quick`: the first data set, the first exported setting, the first seed."""
    return W["datasets"][0], (W["export"] or W["settings"])[0], W["seeds"][0]


def quick_targets():
    """One data set end to end, the newcomer's first look: prepared, one run trained and evaluated, exported,
    its bundle verified and run on test pairs, and a report of that data set (results/<...>/quick/report)."""
    dataset, setting, seed = quick_run()
    targets = [f"{run_dir(dataset, setting, seed)}/metrics-test.json", f"{QUICK_REPORT}/summary.json"]
    if setting in W["export"]:
        targets.append(f"{BUNDLES}/{dataset}/{setting}.predictions.jsonl")
    return targets


# ------------------------------------------------------------------------------------------- packed training

# workflow.runs_per_job > 1: each data set's single-GPU runs are trained in groups, one process per group
# (`mitp train-runs <plan>`), so that torch and transformers start once per group instead of once per run.
RUNS_PER_JOB = W.get("runs_per_job", 1)
PLANS = f"{RESULTS}/plans"


def training_packs():
    """[(name, data set, [(run, seed), ...])]: each data set's single-GPU runs cut into the fewest groups of at
    most workflow.runs_per_job, of near-equal size, in the order of runs_for; none when runs_per_job is 1.
    The quick target's run stays with rule train, so that `snakemake quick` trains that one run alone. Only in
    a local run: on a cluster each run is a job of its own, placed by the profile's rules for `train`."""
    if RUNS_PER_JOB <= 1:
        return []
    if not workflow.local_exec:
        if workflow.is_main_process:
            print(f"workflow.runs_per_job: {RUNS_PER_JOB} packs runs in local runs only; here each run is a job of its own", file=sys.stderr)
        return []
    quick = quick_run()
    packs = []
    for dataset in W["datasets"]:
        runs = [(run, seed) for run in runs_for(dataset) for seed in seeds_for(run) if gpus_of(run) <= 1 and (dataset, run, seed) != quick]
        count = -(-len(runs) // RUNS_PER_JOB)
        for index in range(count):
            packs.append((f"{dataset}-{index + 1}", dataset, runs[index * len(runs) // count : (index + 1) * len(runs) // count]))
    return packs


def pack_plan(dataset, runs):
    """The plan `mitp train-runs` reads for one pack: the options `rule train` passes, run by run."""
    from mitp.train.plan import PlannedRun, TrainPlan

    return TrainPlan(runs=[
        PlannedRun(out=run_dir(dataset, run, seed), dataset=dataset, setting=setting_of(run), seed=seed, fraction=fraction_of(run))
        for run, seed in runs
    ])


TRAINING_PACKS = training_packs()
PACK_PLANS = {name: pack_plan(dataset, runs) for name, dataset, runs in TRAINING_PACKS}
if PACK_PLANS and workflow.is_main_process and not workflow.dryrun:
    from mitp.train.plan import write_plan

    for _name, _plan in PACK_PLANS.items():
        write_plan(_plan, f"{PLANS}/{_name}.yaml")


wildcard_constraints:
    dataset="[A-Za-z0-9_-]+",
    setting="[A-Za-z0-9_-]+",
    run="[A-Za-z0-9_-]+",
    seed="[0-9]+",
    split="train|val|test",


# Glue, and the rules that need the internet, run where Snakemake runs (a cluster's login node).
localrules:
    all,
    quick,
    download,
    sample_pairs,
    report,
    report_quick,
    score,
