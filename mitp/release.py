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

import json
import os
import shutil
from pathlib import Path
from typing import Any

import yaml

from . import __version__
from .atomic import atomic_write_json, atomic_write_text
from .download import file_sha256
from .errors import MitpError
from .intervals import Decisions, bootstrap_interval
from .outputs import build_output
from .runtime.bundle import CONTRACT_FILE, read_contract

PROMPTS_FILE, CONFIG_FILE, RESULTS_FILE, CARD_FILE = "mitp_prompts.safetensors", "mitp_config.json", "results.json", "README.md"
METRIC_NAMES = {"accuracy": "Accuracy", "f1_micro": "F1-micro", "f1_macro": "F1-macro"}


class ReleaseError(MitpError, ValueError):
    """A release cannot be made from what was given; the message says why."""


def write_release(source: Path, out: Path, bundle: Path | None = None, run: Path | None = None) -> Path:
    """Write the release folder `out` from a run folder (its bundle given, or exported now) or a bundle
    (its run given for the prompts and metrics, or left out). Returns `out`."""
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
        for entry in Path(bundle).iterdir():
            if not entry.name.startswith("."):
                (shutil.copytree if entry.is_dir() else shutil.copy2)(entry, tmp / entry.name)
        shutil.rmtree(tmp / ".bundle", ignore_errors=True)
        results = _run_files(run, contract, tmp) if run is not None else None
        atomic_write_text(tmp / CARD_FILE, model_card(contract, results))
    return Path(out)


def _run_files(run: Path, contract: dict[str, Any], tmp: Path) -> dict[str, Any]:
    """The prompts, the config and the results of the run the bundle was exported from (checked by hash)."""
    best = Path(run) / "best"
    weights = best / "model.safetensors"
    if not weights.is_file():
        raise ReleaseError(f"{run} has no best/model.safetensors: is it a finished `mitp train` run?")
    expected = contract.get("source", {}).get("checkpoint", {}).get("model_sha256")
    if expected is not None and file_sha256(weights) != expected:
        raise ReleaseError(f"the bundle was not exported from {run}'s best checkpoint (its prompts differ): give the matching run or bundle")
    shutil.copy2(weights, tmp / PROMPTS_FILE)
    config = json.loads((best / "config.json").read_text())
    config["dataset"]["data_dir"] = f"data/{config['dataset_name']}" if config["dataset"].get("data_dir") else ""
    atomic_write_json(tmp / CONFIG_FILE, config)
    result = json.loads((Path(run) / "result.json").read_text())
    metrics_path = Path(run) / "metrics-test.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else None
    results = {
        "dataset": result["dataset"],
        "setting": result["setting"],
        "seed": result["seed"],
        "reading": result.get("reading"),
        "best_epoch": result.get("best_epoch"),
        "epochs": result.get("epochs"),
        "trainable_params": result.get("trainable_params"),
        "test": _test_results(metrics) if metrics else None,
        "environment": _shareable(result.get("environment")),
        "mitp_version": __version__,
    }
    atomic_write_json(tmp / RESULTS_FILE, results)
    return results


def _test_results(metrics: dict[str, Any]) -> dict[str, Any]:
    """The test metrics in percent, each with its 95% bootstrap interval over the test pairs."""
    values = metrics["metrics"]
    names = ["f1_micro", "f1_macro"] if "f1_micro" in values else ["accuracy"]
    intervals = bootstrap_interval(Decisions(metrics["task"], metrics["per_sample"])) if metrics.get("per_sample") else None
    out = {"split": metrics.get("split", "test"), "num_samples": values.get("num_samples"), "metrics": {}}
    for i, name in enumerate(names):
        entry: dict[str, Any] = {"value": round(100 * values[name], 2)}
        if intervals:
            entry["interval_95"] = [round(intervals[i].low, 2), round(intervals[i].high, 2)]
            entry["interval_kind"] = "percentile bootstrap over the test pairs, 1,000 resamples"
        out["metrics"][name] = entry
    return out


def _shareable(environment: dict[str, Any] | None) -> dict[str, Any] | None:
    """The environment record without paths of the building machine (the data's fingerprint stays)."""
    if not environment:
        return None
    shared = json.loads(json.dumps(environment))
    if isinstance(shared.get("data"), dict):
        shared["data"].pop("prepared", None)
    backbone = shared.get("backbone") or {}
    if isinstance(backbone.get("name"), str) and (os.sep in backbone["name"] and Path(backbone["name"]).is_absolute()):
        backbone["name"] = Path(backbone["name"]).name
    return shared


def model_card(contract: dict[str, Any], results: dict[str, Any] | None) -> str:
    """README.md: the YAML header the Hub reads, then what the model is for, how it reads the paper, how it
    was trained and evaluated, and what it ran on."""
    dataset, setting, task = contract["dataset"], contract["setting"], contract["task"]
    backbone = contract.get("source", {}).get("backbone", "openai/clip-vit-large-patch14")
    name = f"mitp-{dataset}-{setting}"
    header: dict[str, Any] = {
        "license": "mit",
        "base_model": backbone if not backbone.startswith("preset:") else None,
        "datasets": [dataset],
        "pipeline_tag": "image-classification",
        "library_name": "onnx",
        "tags": ["mitp", "clip", "prompt-tuning", "multimodal", "text-image-classification", "onnx"],
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
                "task": {"type": "image-classification", "name": f"Text-image classification ({task})"},
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
        f"# {name}",
        "",
        f"MITP (Memory-Inspired Temporal Prompt Interaction, Yu et al. 2024) on **{dataset}**, setting **{setting}**: a frozen "
        f"CLIP (`{backbone}`) with trained temporal prompts and a memory hub, exported as ONNX. It classifies an image "
        f"together with its caption into {len(labels)} {'labels (several may apply)' if task == 'multi-label' else 'classes'}.",
        "",
        "## Intended use and limits",
        "",
        f"- For classifying image-text pairs like those of {dataset}; the labels are: {', '.join(labels[:20])}{' ...' if len(labels) > 20 else ''}.",
        "- Not for other label sets, other kinds of images or captions, or decisions about people: the model knows only "
        f"its {len(labels)} labels and the biases of CLIP and of {dataset}.",
        f"- Decision rule: {json.dumps({k: v for k, v in contract['decision'].items() if k != 'labels'})}; captions are cut to "
        f"{contract['tokenizer'].get('max_length', 77)} tokens.",
        "",
        "## How it reads the paper",
        "",
        f"`{json.dumps(reading)}`: which exchange, similarity map, gate, scale and head this model uses; the paper leaves "
        "these open, and mitp documents each reading and its measured effect.",
        "",
        "## Training and evaluation",
        "",
    ]
    if results:
        lines += [
            f"- Trained with seed {results['seed']} for {results.get('epochs')} epochs (best epoch {results.get('best_epoch')}), "
            f"{results.get('trainable_params'):,} trainable parameters; the config is `{CONFIG_FILE}`, the prompts `{PROMPTS_FILE}`.",
        ]
        if test:
            for key, entry in test["metrics"].items():
                interval = entry.get("interval_95")
                lines.append(f"- Test {METRIC_NAMES.get(key, key)}: {entry['value']:.2f}" + (f" (95% interval {interval[0]:.2f} to {interval[1]:.2f}, bootstrap over {test['num_samples']:,} test pairs)" if interval else ""))
        else:
            lines.append("- Not evaluated on a test split.")
        if env:
            lines += [
                f"- Ran on {env.get('device', {}).get('name', '?')} ({env.get('device', {}).get('type', '?')}), precision "
                f"{env.get('precision', {}).get('autocast', '?')}, torch {env.get('libraries', {}).get('torch', '?')}, mitp "
                f"{env.get('mitp', {}).get('version', '?')} (commit {env.get('mitp', {}).get('commit') or 'unknown'}); the data's "
                f"fingerprint {(env.get('data') or {}).get('fingerprint') or 'unknown'} (`{RESULTS_FILE}` has the whole record).",
            ]
    else:
        lines.append("- Released from a bundle alone: no training record or test metrics are included.")
    lines += [
        "",
        "## Use",
        "",
        "```bash",
        "pip install mitp[cpu]        # or mitp[gpu]",
        f"mitp predict image.jpg \"a caption\" --model {name}",
        "```",
        "",
        "The ONNX graph takes `pixel_values`, `input_ids` and `attention_mask` and returns `logits`; `bundle.json` is the "
        "whole contract (preprocessing, tokenizer, decision rule) and `test_vectors/` the expected values for every step.",
        "",
    ]
    return "\n".join(lines)


def push_release(folder: Path, repo: str, private: bool = False) -> str:
    """Upload a release folder to the Hugging Face Hub (HF_TOKEN or a saved login; HF_ENDPOINT for another
    endpoint). Hidden files (mitp's marker) stay behind. Returns the commit's URL."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    folder = Path(folder)
    if not (folder / CARD_FILE).is_file() or not (folder / CONTRACT_FILE).is_file():
        raise ReleaseError(f"{folder} is not a release folder (no {CARD_FILE} and {CONTRACT_FILE}): make one with `mitp release`")
    if repo.count("/") != 1 or not all(repo.split("/")):
        raise ReleaseError(f"--repo {repo!r} is not ORG/NAME")
    api = HfApi()
    try:
        api.create_repo(repo, private=private, exist_ok=True)
        commit = api.upload_folder(folder_path=str(folder), repo_id=repo, ignore_patterns=[".*", "**/.*"], commit_message=f"mitp {__version__} release")
    except HfHubHTTPError as err:
        status = err.response.status_code if err.response is not None else "?"
        raise ReleaseError(f"the Hub refused the upload to {repo} (HTTP {status}): check the token (HF_TOKEN) and that you may write there") from err
    return str(commit)
