"""A trained model in the form its users look for: a folder laid out as a Hugging Face model repository.

`mitp release RUN_OR_BUNDLE --out DIR` writes the bundle's files at the top (so that `mitp predict --model
DIR`, `mitp bundle verify DIR` and the Node.js example read it as they read any bundle), the trained prompts
as `mitp_prompts.safetensors` with the resolved run config, `results.json` (the test metrics with their 95%
interval and the environment record) and `README.md`, a model card whose YAML header Hugging Face reads:
license, base model, data set, pipeline tag, and a `model-index` with the measured metrics. `mitp release
push DIR --repo ORG/NAME` uploads it with huggingface_hub. Nothing of the building machine goes in: no
path, no user name, no token.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .. import __version__
from ..errors import MitpError
from ..files.atomic import atomic_write_json, atomic_write_text, file_sha256
from ..files.outputs import build_output, marker_kind, recorded_files
from ..files.paths import inside
from ..report.intervals import Decisions, bootstrap_interval
from ..runtime.bundle import BACKBONE_KEY, CONTRACT_FILE, read_contract
from ..runtime.verify import bundle_files
from ..runtime.weights import weights_of
from .hf import calling_hub

PROMPTS_FILE, CONFIG_FILE, RESULTS_FILE, CARD_FILE = "mitp_prompts.safetensors", "mitp_config.json", "results.json", "README.md"
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}")  # ORG/NAME on the Hugging Face Hub
METRIC_NAMES = {"accuracy": "Accuracy", "f1_micro": "F1-micro", "f1_macro": "F1-macro"}


class ReleaseError(MitpError, ValueError):
    """A release cannot be made from what was given; the message says why."""


def write_release(source: Path, out: Path, bundle: Path | None = None, run: Path | None = None, with_backbone: bool = True) -> Release:
    """Write the release folder `out` from a run folder (its bundle given, or exported now) or a bundle
    (its run given for the prompts and metrics, or left out). Only the files the bundle names are copied,
    and nothing of this machine (no path, user name or token) goes in. Without the backbone, the release
    carries the trained part alone; its card says which backbone file completes it, and from where."""
    source = Path(source)
    if (source / CONTRACT_FILE).is_file():
        bundle = source
    elif (source / "result.json").is_file():
        run = source
    else:
        raise ReleaseError(f"{source} is neither a bundle (no {CONTRACT_FILE}) nor a finished run folder (no result.json)")
    with build_output(Path(out), "release", inputs=tuple(p for p in (source, bundle, run) if p is not None)) as tmp:
        if bundle is None and run is not None:
            from .export import export_bundle  # a run alone: its bundle is exported now (torch)

            export_bundle(run, tmp / ".bundle", int8=True)
            bundle = tmp / ".bundle"
        assert bundle is not None  # given, or exported just now
        contract = read_contract(bundle)
        backbone = set()
        for variant in contract.get(BACKBONE_KEY) or {}:
            weights = weights_of(bundle, contract, variant)  # each entry checked
            if weights is not None:
                backbone.add(weights.file.name)
        if not with_backbone and not backbone:
            raise ReleaseError(f"{bundle} keeps its backbone inside its models (exported before backbone files): export it again to release its trained part alone")
        for name in bundle_files(bundle, contract):  # what the bundle names, each a regular file inside it
            if name in backbone and not with_backbone:
                continue
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(Path(bundle) / name, tmp / name)  # a Hub cache snapshot's links: their content
        shutil.rmtree(tmp / ".bundle", ignore_errors=True)
        results = _run_files(run, contract, tmp) if run is not None else None
        atomic_write_text(tmp / CARD_FILE, model_card(contract, results, with_backbone))
    return Release(Path(out), evaluated=bool(results and results.get("test")), from_run=results is not None)


@dataclass(frozen=True)
class Release:
    folder: Path
    evaluated: bool  # the card has test metrics (a model-index)
    from_run: bool  # the prompts, config and training record are included


def _run_files(run: Path, contract: dict[str, Any], tmp: Path) -> dict[str, Any]:
    """The prompts, the config and the results of the run the bundle was exported from (checked by hash)."""
    best = Path(run) / "best"
    weights = best / "model.safetensors"
    if not weights.is_file():
        raise ReleaseError(f"{run} has no best/model.safetensors: is it a finished `mitp train` run?")
    expected = contract.get("source", {}).get("checkpoint", {}).get("model_sha256")
    if expected is not None and file_sha256(weights) != expected:
        raise ReleaseError(f"the bundle was not exported from {run}'s best checkpoint (its prompts differ): give the matching run or bundle")
    shutil.copyfile(weights, tmp / PROMPTS_FILE)
    config = _read_json(best / "config.json", "the run's config")
    if isinstance(config.get("dataset"), dict):
        config["dataset"]["data_dir"] = f"data/{config.get('dataset_name')}" if config["dataset"].get("data_dir") else ""
    if isinstance(config.get("backbone"), str):
        config["backbone"] = public_backbone(config["backbone"])
    atomic_write_json(tmp / CONFIG_FILE, without_paths(config))
    result = _read_json(Path(run) / "result.json", "the run's result")
    if not all(isinstance(result.get(key), kind) for key, kind in (("dataset", str), ("setting", str), ("seed", int))):
        raise ReleaseError(f"{Path(run) / 'result.json'} lacks the dataset, setting and seed that `mitp train` writes: is the run damaged?")
    metrics_path = Path(run) / "metrics-test.json"
    metrics = _read_json(metrics_path, "the test metrics") if metrics_path.is_file() else None
    results = {
        "dataset": result["dataset"],
        "setting": result["setting"],
        "seed": result["seed"],
        "reading": result.get("reading"),
        "best_epoch": result.get("best_epoch"),
        "epochs": result.get("epochs"),
        "trainable_params": result.get("trainable_params") if isinstance(result.get("trainable_params"), int) else None,
        "test": _test_results(metrics, metrics_path) if metrics else None,
        "environment": _shareable(result.get("environment") if isinstance(result.get("environment"), dict) else None),
        "mitp_version": __version__,
    }
    atomic_write_json(tmp / RESULTS_FILE, results)
    return results


def _read_json(path: Path, what: str) -> dict[str, Any]:
    """A JSON object the run wrote; ReleaseError (one line) if it is missing, damaged or not an object."""
    try:
        value = json.loads(Path(path).read_text())
    except FileNotFoundError as err:
        raise ReleaseError(f"{path} ({what}) is missing: is it a finished `mitp train` run?") from err
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as err:
        raise ReleaseError(f"{path} ({what}) is damaged ({type(err).__name__}); run the command that wrote it again") from err
    if not isinstance(value, dict):
        raise ReleaseError(f"{path} ({what}) is not a JSON object; run the command that wrote it again")
    return value


def _test_results(metrics: dict[str, Any], path: Path) -> dict[str, Any]:
    """The test metrics in percent, each with its 95% bootstrap interval over the test pairs."""
    values = metrics.get("metrics")
    names = ["f1_micro", "f1_macro"] if isinstance(values, dict) and "f1_micro" in values else ["accuracy"]
    if not isinstance(values, dict) or not all(isinstance(values.get(n), int | float) and not isinstance(values.get(n), bool) for n in names):
        raise ReleaseError(f"{path} lacks the metrics `mitp evaluate` writes ({', '.join(names)}): evaluate the run again")
    try:
        intervals = bootstrap_interval(Decisions(metrics["task"], metrics["per_sample"])) if metrics.get("per_sample") else None
    except (KeyError, TypeError, ValueError, IndexError) as err:
        raise ReleaseError(f"{path}: its per-sample decisions are damaged ({type(err).__name__}): evaluate the run again") from err
    scores: dict[str, Any] = {}
    out: dict[str, Any] = {"split": str(metrics.get("split", "test")), "num_samples": values.get("num_samples"), "metrics": scores}
    for i, name in enumerate(names):
        entry: dict[str, Any] = {"value": round(100 * values[name], 2)}
        if intervals:
            entry["interval_95"] = [round(intervals[i].low, 2), round(intervals[i].high, 2)]
            entry["interval_kind"] = "percentile bootstrap over the test pairs, 1,000 resamples"
        scores[name] = entry
    return out


def _shareable(environment: dict[str, Any] | None) -> dict[str, Any] | None:
    """The environment record without paths of the building machine (the data's fingerprint stays)."""
    if not environment:
        return None
    shared = json.loads(json.dumps(environment))
    if isinstance(shared.get("data"), dict):
        shared["data"].pop("prepared", None)
    backbone = shared.get("backbone")
    if isinstance(backbone, dict) and isinstance(backbone.get("name"), str):
        backbone["name"] = public_backbone(backbone["name"])
    return without_paths(shared)


def public_backbone(spec: str) -> str:
    """A backbone as it may be shared: a Hub id or preset as it is, a local folder by its name only."""
    if spec.startswith(("local folder ", "preset:")) or HUB_ID.fullmatch(spec) and not Path(spec).is_dir():
        return spec
    return f"local folder {Path(spec).name!r}"


def without_paths(value: Any) -> Any:
    """`value` with every absolute path of this machine (and the home folder) replaced by its last part."""
    if isinstance(value, dict):
        return {key: without_paths(item) for key, item in value.items()}
    if isinstance(value, list):
        return [without_paths(item) for item in value]
    if isinstance(value, str) and (os.path.isabs(value) or value.startswith("~")) and "\n" not in value:
        return Path(value).name
    return value


def base_model(contract: dict[str, Any]) -> str | None:
    """The Hub id of the frozen CLIP the bundle was trained on, or None (a preset, a local folder of unknown origin)."""
    source = contract.get("source")
    source = source if isinstance(source, dict) else {}
    for candidate in (source.get("backbone_hub_id"), source.get("backbone")):
        if isinstance(candidate, str) and HUB_ID.fullmatch(candidate):
            return candidate
    return None


def _field(record: dict[str, Any], group: str, key: str) -> str:
    value = record.get(group)
    value = value.get(key) if isinstance(value, dict) else None
    return str(value) if value not in (None, "") else "unknown"


def _md(text: Any) -> str:
    """Text from a label or a data set name, safe in Markdown and HTML: shown as written, never as markup."""
    escaped = html.escape(" ".join(str(text).split()), quote=True)
    return re.sub(r"([\\`*_{}\[\]()#+\-.!|~>])", r"\\\1", escaped)


def model_card(contract: dict[str, Any], results: dict[str, Any] | None, with_backbone: bool = True) -> str:
    """README.md: the YAML header the Hub reads, then what the model is for, how it reads the paper, how it
    was trained and evaluated, and what it ran on."""
    dataset, setting, task = contract["dataset"], contract["setting"], contract["task"]
    source = contract.get("source")
    source = source if isinstance(source, dict) else {}
    backbone = str(source.get("backbone", "openai/clip-vit-large-patch14"))
    name = f"mitp-{dataset}-{setting}"
    base = base_model(contract)
    # No pipeline_tag: every Hub task's widget takes one input (an image, or a text), and this model needs both;
    # library_name names the library that runs it. docs/bundle.md "Releases" gives the reasons.
    header: dict[str, Any] = {
        "license": "mit",
        "library_name": "mitp",
        "base_model": base,
        "base_model_relation": "adapter" if base else None,
        "datasets": [dataset],
        "tags": ["mitp", "text-image-classification", "multimodal", "clip", "prompt-tuning", "onnx", task],
    }
    test = (results or {}).get("test")
    if test:
        metrics = []
        for key, entry in test["metrics"].items():
            interval = entry.get("interval_95")
            label = METRIC_NAMES.get(key, key) + (f" (95% interval {interval[0]} to {interval[1]})" if interval else "")
            metrics.append({"type": key if key != "f1_micro" else "f1", "value": entry["value"], "name": label})
        header["model-index"] = [{
            "name": name,
            "results": [{
                "task": {"type": "text-image-classification", "name": f"Text-image classification ({task})"},
                "dataset": {"name": dataset, "type": dataset, "split": test["split"]},
                "metrics": metrics,
            }],
        }]
    header = {key: value for key, value in header.items() if value is not None}
    front = yaml.safe_dump(header, sort_keys=False, allow_unicode=True)
    reading = contract.get("reading") or {}
    labels = contract["labels"]
    env = (results or {}).get("environment") or {}
    lines = [
        "---", front.rstrip(), "---", "",
        f"# {_md(name)}",
        "",
        f"MITP (Memory-Inspired Temporal Prompt Interaction, Yu et al. 2024) on **{_md(dataset)}**, setting **{_md(setting)}**: a frozen "
        f"CLIP ({_md(backbone)}) with trained temporal prompts and a memory hub, exported as ONNX. It classifies an image "
        f"together with its caption into {len(labels)} {'labels (several may apply)' if task == 'multi-label' else 'classes'}.",
        "",
        "## Intended use and limits",
        "",
        f"- For classifying image-text pairs like those of {_md(dataset)}; the labels are: {', '.join(map(_md, labels[:20]))}{' ...' if len(labels) > 20 else ''}.",
        "- Not for other label sets, other kinds of images or captions, or decisions about people: the model knows only "
        f"its {len(labels)} labels and the biases of CLIP and of {_md(dataset)}.",
        f"- Decision rule: {json.dumps({k: v for k, v in contract['decision'].items() if k != 'labels'})}; captions are cut to "
        f"{contract['tokenizer'].get('max_length', 77)} tokens.",
        "",
        "## How it reads the paper",
        "",
        f"{_md(json.dumps(reading))}: which exchange, similarity map, gate, scale and head this model uses; the paper leaves "
        "these open, and mitp documents each reading and its measured effect.",
        "",
        "## Training and evaluation",
        "",
    ]
    if results:
        lines += [
            f"- Trained with seed {results['seed']} for {_md(results.get('epochs'))} epochs (best epoch {_md(results.get('best_epoch'))}), "
            f"{format(results['trainable_params'], ',') if results.get('trainable_params') is not None else 'an unknown number of'} trainable parameters; "
            f"the config is `{CONFIG_FILE}`, the prompts `{PROMPTS_FILE}`.",
        ]
        if test:
            for key, entry in test["metrics"].items():
                interval = entry.get("interval_95")
                lines.append(f"- Test {METRIC_NAMES.get(key, key)}: {entry['value']:.2f}" + (f" (95% interval {interval[0]:.2f} to {interval[1]:.2f}, bootstrap over {_md(test['num_samples'])} test pairs)" if interval else ""))
        else:
            lines.append("- Not evaluated on a test split.")
        if env:
            lines += [
                "- Ran on " + _md(f"{_field(env, 'device', 'name')} ({_field(env, 'device', 'type')}), precision "
                f"{_field(env, 'precision', 'autocast')}, torch {_field(env, 'libraries', 'torch')}, mitp "
                f"{_field(env, 'mitp', 'version')} (commit {_field(env, 'mitp', 'commit')}); the data's fingerprint "
                f"{_field(env, 'data', 'fingerprint')}") + f" ({RESULTS_FILE} has the whole record).",
            ]
    else:
        lines.append("- Released from a bundle alone: no training record or test metrics are included.")
    lines += [
        "",
        "## Use",
        "",
        "```bash",
        "pip install mitp[cpu]        # or mitp[gpu]",
        "mitp predict image.jpg \"a caption\" --model ORG/NAME   # this repository",
        "```",
        "",
        "The ONNX graph takes `pixel_values`, `input_ids` and `attention_mask` and returns `logits`; `bundle.json` is the "
        "whole contract (preprocessing, tokenizer, decision rule) and `test_vectors/` the expected values for every step.",
        "",
    ]
    if not with_backbone:
        files = sorted({f"`{e['file']}` ({e['bytes']:,} bytes, SHA-256 `{e['sha256']}`)" for e in contract[BACKBONE_KEY].values()})
        lines += [
            "## The backbone's weights",
            "",
            f"This release carries the trained part alone. The frozen backbone's weights ({_md(backbone)}) are the file(s) "
            f"{', '.join(files)} that every mitp bundle exported from the same backbone holds, byte for byte. Put one "
            "bundle's copy in the local backbone store with `mitp bundle share BUNDLE`; `mitp predict` and `mitp serve` then "
            "complete this model from it.",
            "",
        ]
    return "\n".join(lines)


def push_release(folder: Path, repo: str, private: bool = False) -> str:
    """Upload a release folder to the Hugging Face Hub (HF_TOKEN or a saved login; HF_ENDPOINT for another
    endpoint): exactly the files `mitp release` wrote there (a card edited since goes as edited), each a
    regular file inside the folder; never a link's target, a file added by hand or mitp's marker. Returns the
    commit's URL."""
    from huggingface_hub import CommitOperationAdd, HfApi

    folder = Path(folder)
    if repo.count("/") != 1 or not HUB_ID.fullmatch(repo):
        raise ReleaseError(f"--repo {repo!r} is not ORG/NAME")
    names = release_files(folder)
    api = HfApi()
    operations = [CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(folder / name)) for name in names]
    calling_hub("push to", repo, lambda: api.create_repo(repo, private=private, exist_ok=True))
    commit = calling_hub("push to", repo, lambda: api.create_commit(repo, operations, commit_message=f"mitp {__version__} release"))
    return str(getattr(commit, "commit_url", commit))


def release_files(folder: Path) -> list[str]:
    """The files of a release folder that may leave this machine: those `mitp release` recorded in its marker,
    each still a regular file whose real path is inside the folder. ReleaseError otherwise."""
    folder = Path(folder)
    if marker_kind(folder) != "release" or not (folder / CARD_FILE).is_file() or not (folder / CONTRACT_FILE).is_file():
        raise ReleaseError(f"{folder} is not a release folder written by `mitp release` (no release marker, {CARD_FILE} and {CONTRACT_FILE}): make one with `mitp release`")
    record = recorded_files(folder)
    if record is None:
        raise ReleaseError(f"{folder} was written by an older mitp that did not record its files: make it again with `mitp release`")
    problems = [f"{name} (a link, or not a regular file inside the folder)" for name in record if not ((folder / name).is_file() and not (folder / name).is_symlink() and inside(folder / name, folder))]
    if problems:
        raise ReleaseError(f"{folder} is not as `mitp release` wrote it: {', '.join(problems[:5])}; make the release again (nothing was uploaded)")
    return sorted(record)
