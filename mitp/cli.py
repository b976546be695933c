"""The `mitp` command line (Typer + Rich).

Heavy libraries (torch, transformers) are imported inside the commands that need them, so that
`mitp --help` and the ONNX predict path start fast.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from typer.core import TyperGroup

from . import __version__
from .errors import LIMIT_EXIT_CODE, MitpError, machine_limit

console = Console(stderr=True)
stdout = Console()


class _CommandGroup(TyperGroup):
    """Every command runs inside this: an error the user can act on (mitp.errors.MitpError) or the machine's
    limits (a full disk, a read-only file system) become one line on stderr and an exit code, never a traceback."""

    def invoke(self, ctx: typer.Context) -> Any:  # type: ignore[override]  # typer's Context subclasses its click one
        try:
            return super().invoke(ctx)
        except MitpError as err:
            _fail(str(err), err.exit_code)
        except OSError as err:
            limit = machine_limit(err)
            if limit is None:
                raise
            _fail(limit, LIMIT_EXIT_CODE)


app = typer.Typer(
    cls=_CommandGroup, help="MITP: memory-inspired temporal prompt interaction on frozen CLIP.", no_args_is_help=True, add_completion=False
)

ConfigOption = Annotated[
    Path | None, typer.Option("--config", "-c", help="Project config (YAML); default ./config.yaml, else the packaged one.", show_default=False)
]
DatasetOption = Annotated[str, typer.Option("--dataset", "-d", help="Data set name from the config.")]
BackboneOption = Annotated[str | None, typer.Option("--backbone", help="Override the backbone: HF name, local folder or preset:<name>.")]


def _fail(message: str, code: int = 2) -> NoReturn:
    console.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)
    raise typer.Exit(code)


TRAINING_LIBRARIES = ("torch", "transformers", "accelerate", "safetensors", "yaml", "pyarrow", "onnx")


def _require(*modules: str, extra: str = "train") -> None:
    """Stop with a clear message when a command needs libraries that this install left out (the runtime-only
    install, `pip install ".[cpu]"`, has `mitp predict` and `mitp bundle verify` alone)."""
    from importlib.util import find_spec

    missing = [m for m in modules if find_spec(m) is None]
    if missing:
        _fail(
            f"this command needs {', '.join(missing)}, which this install does not have: add the {extra!r} extra, e.g. "
            f"python -m pip install -e \".[{extra}]\" in a clone of mitp, or \"<mitp wheel>[{extra}]\""
        )


def _claim_gpu_slot() -> None:
    """In a local workflow run, take this job's GPU slot before CUDA starts (mitp.train.gpus)."""
    from .train.gpus import claim_gpu_slot

    device = claim_gpu_slot()
    if device is not None:
        console.print(f"GPU slot claimed: CUDA_VISIBLE_DEVICES={device}")


def _config_path(config: Path | None) -> Path:
    """--config, ./config.yaml, or the packaged config (said once, so that nobody edits the wrong file)."""
    from .resources import default_config

    path, packaged = default_config(config)
    if packaged:
        console.print(f"using the packaged config ({path}); `mitp init` writes an editable config.yaml here", soft_wrap=True)
    return path


def _resolve(config: Path | None, dataset: str, setting: str, backbone: str | None, seed: int | None = None, **overrides: Any):
    from .config import load_config, resolve_run

    return resolve_run(load_config(_config_path(config)), dataset, setting, backbone=backbone, seed=seed, **overrides)


@app.command()
def init(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder to write config.yaml into.")] = Path("."),
    demo: Annotated[bool, typer.Option("--demo", help="The offline demo's config (twins, stand-in CLIP) instead of the paper's.")] = False,
) -> None:
    """Write an editable config.yaml (the paper's setup, or the demo's) into a folder; never over an existing one."""
    from .files.atomic import atomic_write_text
    from .files.outputs import OutputError
    from .resources import CONFIG, DEMO_CONFIG, resource

    target = out / "config.yaml"
    if target.exists() or target.is_symlink():
        raise OutputError(f"{target} exists and is left as it is: edit it, or name another folder with --out")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(target, resource(DEMO_CONFIG if demo else CONFIG).read_text())
    console.print(f"[bold green]wrote[/] {target}: the {'offline demo' if demo else 'paper'}'s setup; every mitp command here reads it")


@app.command()
def version() -> None:
    """Print the mitp version."""
    stdout.print(__version__)


@app.command()
def info(
    config: ConfigOption = None,
    dataset: DatasetOption = "food101",
    setting: Annotated[str | None, typer.Option("--setting", "-s", help="Setting name; all settings if omitted.")] = None,
    backbone: BackboneOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Trainable and backbone parameter counts, built on the backbone's architecture with no download."""
    _require(*TRAINING_LIBRARIES)
    from .config import load_config, resolve_run
    from .model.budget import parameter_budget

    project = load_config(_config_path(config))  # read once for every setting
    names = [setting] if setting else list(project.runs)
    rows = [parameter_budget(resolve_run(project, dataset, name, backbone=backbone)) for name in names]
    if as_json:
        stdout.print_json(json.dumps(rows[0] if setting else rows))
        return
    table = Table(title=f"mitp parameter budget: {dataset} on {rows[0]['backbone']}")
    table.add_column("setting", no_wrap=True)
    for column in ("variant", "head", "layers (text / vision)", "similarity"):
        table.add_column(column)
    table.add_column("trainable", justify="right", no_wrap=True)
    table.add_column("effective", justify="right", no_wrap=True)
    table.add_column("share", justify="right", no_wrap=True)
    for row in rows:
        table.add_row(
            row["setting"], row["variant"], row["head"], _layers_text(row), row["similarity"],
            f"{row['trainable_params']:,}", f"{row['effective_trainable_params']:,}",
            f"{100 * row['trainable_params'] / row['backbone_params']:.3f}%",
        )
    stdout.print(table)
    stdout.print(f"backbone parameters (frozen): {rows[0]['backbone_params']:,}")
    stdout.print("effective: the trainable parameters that receive a gradient in that setting")


def _layers_text(row: dict[str, Any]) -> str:
    """"4-6", "2,4,6", or "1-12 / 1-24" where the towers differ (P-CLIP)."""
    text, vision = row["text_layers"], row["vision_layers"]
    if not text and not vision:
        return "-"
    return _span(text) if text == vision else f"{_span(text)} / {_span(vision)}"


def _span(layers: list[int]) -> str:
    consecutive = len(layers) > 2 and layers == list(range(layers[0], layers[-1] + 1))
    return f"{layers[0]}-{layers[-1]}" if consecutive else ",".join(map(str, layers))


EvaluateOption = Annotated[
    list[str] | None,
    typer.Option("--evaluate", help="Then evaluate the best checkpoint on this split (repeatable): OUT/metrics-<split>.json, as mitp evaluate writes it."),
]


def _evaluation_splits(evaluate: list[str] | None) -> list[str]:
    """The splits of --evaluate, each once, or a one-line refusal of one that is not a split."""
    from .data.dataset import SPLITS

    splits = list(dict.fromkeys(evaluate or []))
    for split in splits:
        if split not in SPLITS:
            _fail(f"--evaluate {split}: name a split, one of {', '.join(SPLITS)}")
    return splits


@app.command()
def train(
    out: Annotated[Path, typer.Option("--out", "-o", help="Run directory (checkpoints, history); resumed if it exists.")],
    config: ConfigOption = None,
    dataset: DatasetOption = "food101",
    setting: Annotated[str, typer.Option("--setting", "-s")] = "mitp",
    backbone: BackboneOption = None,
    epochs: Annotated[int | None, typer.Option(help="Override train.epochs.")] = None,
    lr: Annotated[float | None, typer.Option(help="Override the learning rate.")] = None,
    max_steps: Annotated[int | None, typer.Option("--max-steps", help="Cap on steps per epoch.")] = None,
    fraction: Annotated[float | None, typer.Option(help="Share of the training split to keep (stratified, seeded).")] = None,
    num_workers: Annotated[int | None, typer.Option("--num-workers")] = None,
    precision: Annotated[str | None, typer.Option(help="auto | bf16 | fp32")] = None,
    seed: Annotated[int | None, typer.Option(help="Override the config's seed.")] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
    evaluate: EvaluateOption = None,
) -> None:
    """Train one (data set, setting) run; resumes from the last finished epoch after a kill."""
    _require(*TRAINING_LIBRARIES)
    splits = _evaluation_splits(evaluate)
    _claim_gpu_slot()
    run = _resolve(
        config, dataset, setting, backbone, seed, lr=lr,
        epochs=epochs, max_steps_per_epoch=max_steps, fraction=fraction, num_workers=num_workers, precision=precision,
    )
    from .train.evaluate import check_metrics_target
    from .train.runs import train_run

    for split in splits:  # before any work: a file in the way is found now, not after training
        check_metrics_target(out / f"metrics-{split}.json", f"--evaluate {split}: the metrics file", "move it away, or pick another --out")
    result = train_run(run, out, console=console, progress=progress, evaluate=splits)
    if result.main_process:
        console.print(f"[bold green]done[/]: best epoch {result.best_epoch} ({result.best_metric:.4f}) in {out}")


@app.command("train-runs")
def train_runs_command(
    plan: Annotated[Path, typer.Argument(help="Plan file (YAML): runs, a list of {out, dataset, setting, seed, fraction}.", show_default=False)],
    config: ConfigOption = None,
    backbone: BackboneOption = None,
    epochs: Annotated[int | None, typer.Option(help="Override train.epochs for every run.")] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
    evaluate: EvaluateOption = None,
) -> None:
    """Train the runs a plan lists, one after another in this process: each exactly as `mitp train` makes it,
    with the start-up (torch, transformers) paid once. Every run is checked before the first one starts."""
    _require(*TRAINING_LIBRARIES)
    from .config import ConfigError, load_config, resolve_run
    from .train.plan import load_plan

    splits = _evaluation_splits(evaluate)
    planned = load_plan(plan).runs
    project = load_config(_config_path(config))
    runs = []
    for number, entry in enumerate(planned, 1):
        try:
            run = resolve_run(project, entry.dataset, entry.setting, backbone=backbone, seed=entry.seed, epochs=epochs, fraction=entry.fraction)
        except ConfigError as err:
            _fail(f"{plan}, run {number} ({entry.out}): {err}")
        runs.append((run, Path(entry.out)))
    _claim_gpu_slot()
    from .train.evaluate import check_metrics_target
    from .train.runs import train_runs

    for _, out in runs:
        for split in splits:
            check_metrics_target(out / f"metrics-{split}.json", f"--evaluate {split}: the metrics file", "move it away, or take the run out of the plan")
    results = train_runs(runs, console=console, progress=progress, evaluate=splits)
    if results and results[0].main_process:
        console.print(f"[bold green]done[/]: {len(results)} runs trained ({', '.join(str(out) for _, out in runs)})", soft_wrap=True)


@app.command()
def evaluate(
    checkpoint: Annotated[Path, typer.Option("--checkpoint", help="Run directory (uses best/) or a checkpoint directory.")],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Where to write metrics.json.")] = None,
    split: Annotated[str, typer.Option(help="train | val | test")] = "test",
    batch_size: Annotated[int | None, typer.Option("--batch-size")] = None,
    num_workers: Annotated[int | None, typer.Option("--num-workers")] = None,
) -> None:
    """Evaluate a checkpoint: accuracy, or F1-micro/-macro for multi-label, written to metrics.json."""
    _require(*TRAINING_LIBRARIES)
    _claim_gpu_slot()
    target = out or Path(checkpoint) / f"metrics-{split}.json"
    from .train.evaluate import ablation_line, check_metrics_target, evaluate_checkpoint, metrics_line, write_metrics

    check_metrics_target(target)
    metrics = evaluate_checkpoint(checkpoint, split, batch_size, num_workers)
    write_metrics(metrics, target)
    console.print(f"{metrics['dataset']}/{metrics['setting']} {split}: {metrics_line(metrics)} -> {target}", soft_wrap=True)
    if metrics.get("memory_ablation"):
        console.print(ablation_line(metrics["memory_ablation"]), soft_wrap=True)


@app.command("export")
def export_command(
    checkpoint: Annotated[Path, typer.Option("--checkpoint", help="Run directory (uses best/) or a checkpoint directory.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Bundle folder to write (replaced whole when verified).")],
    fp16: Annotated[bool, typer.Option("--fp16", help="Also write model.fp16.onnx for GPUs (checked by top-1 agreement).")] = False,
    int8: Annotated[bool, typer.Option("--int8", help="Also write model.int8.onnx for CPUs (checked by top-1 agreement).")] = False,
    tolerance: Annotated[float, typer.Option(help="Largest allowed |onnxruntime - PyTorch| on logits.")] = 1e-4,
) -> None:
    """Export a trained model to an ONNX bundle, verified against PyTorch before it is written."""
    _require(*TRAINING_LIBRARIES, "onnxscript", "onnxruntime")
    from .ship.export import ExportError, export_bundle

    try:
        report = export_bundle(checkpoint, out, fp16=fp16, int8=int8, tolerance=tolerance)
    except ExportError as err:
        _fail(f"export not written: {err}")
    shown = f"max abs diff {report['fp32']['max_abs_diff']:.2e} at batch 1 and 3"
    for variant in ("fp16", "int8"):
        if variant in report:
            check = report[variant]
            shown += f"; {variant} top-1 agreement {check['top1_agreement']:.3f}"
            if "label_decision_agreement" in check:
                shown += f", label decisions {check['label_decision_agreement']:.3f}"
    console.print(f"[bold green]bundle[/] {out}: {shown} ({report['verify_inputs']})")


@app.command()
def predict(
    image: Annotated[Path | None, typer.Argument(help="Image file.", show_default=False)] = None,
    text: Annotated[str | None, typer.Argument(help="The caption that goes with the image.", show_default=False)] = None,
    model: Annotated[Path | None, typer.Option("--model", "-m", envvar="MITP_MODEL", help="Bundle or release folder, or a Hugging Face repository ORG/NAME of a release.")] = None,
    top_k: Annotated[int | None, typer.Option("--top-k", "-k", min=1, help="Only the k best labels (default: every label in --json and --batch, the best 5 in the table).", show_default=False)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object on stdout.")] = False,
    provider: Annotated[str, typer.Option(help="auto | cuda | cpu")] = "auto",
    variant: Annotated[str, typer.Option(help="fp32 | fp16 (GPUs) | int8 (CPUs): which of the bundle's models runs.")] = "fp32",
    batch: Annotated[Path | None, typer.Option("--batch", help='JSON lines {"image": ..., "text": ...}; one JSON line out per input.')] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="With --batch: write the JSON lines here instead of stdout.")] = None,
) -> None:
    """Predict the label(s) of an image-caption pair with an exported bundle (onnxruntime; no PyTorch)."""
    from .runtime.predict import Predictor
    from .runtime.verify import verified_once

    if model is None:
        model = _default_bundle()
    if batch is None and (image is None or text is None):
        _fail("give an IMAGE and a TEXT, or --batch pairs.jsonl")
    model = _model_folder(model)
    predictor = Predictor(model, provider, variant)
    if verified_once(model, variant):
        console.print(f"verified {escape(str(model))} against its test vectors (first use here)", soft_wrap=True)
    if predictor.note:
        console.print(f"[yellow]note:[/] {predictor.note}", soft_wrap=True)
    if batch is not None:
        failed = _predict_batch(predictor, batch, out, model, top_k)
        raise typer.Exit(1 if failed else 0)
    assert image is not None and text is not None  # checked above, before the bundle loaded
    result = predictor.predict([image], [text])[0]
    if result.truncated:
        console.print(f"[yellow]note:[/] the caption was truncated to {predictor.info.tokenizer['max_length']} tokens")
    if as_json:
        stdout.print_json(json.dumps(result.to_json(predictor.provider, top_k)))
        return
    table = Table(title=f"{predictor.info.dataset}/{predictor.info.setting} on {predictor.provider}")
    table.add_column("label")
    table.add_column("probability", justify="right")
    table.add_column("predicted", justify="center")
    for label, score in result.to_json(predictor.provider, top_k or 5)["scores"].items():
        table.add_row(label, f"{score:.4f}", "*" if label in result.labels else "")
    stdout.print(table)


def _model_folder(model: Path) -> Path:
    """A bundle or release folder as given, or a release on the Hugging Face Hub (ORG/NAME, not a folder
    here) downloaded into the Hub's cache (HF_HUB_OFFLINE=1 reads the cache only)."""
    from .ship.hf import model_folder

    return model_folder(model)


def _default_bundle() -> Path:
    """The newest bundle under ./results (the workflow's) or ./bundles, said aloud; or how to get one."""
    from .runtime.predict import find_bundle

    found = find_bundle()
    if found is None:
        _fail(
            "no bundle given and none found under ./results/*/bundles or ./bundles: pass --model <folder written by "
            "`mitp export`> (or set MITP_MODEL); the demo, `snakemake --profile workflow/profiles/demo`, writes them "
            "to results/demo/bundles/<data set>/mitp"
        )
    bundle, count = found
    others = f", the newest of {count}" if count > 1 else ""
    console.print(f"using bundle {bundle}{others} (choose with --model)", soft_wrap=True)
    return bundle


def _predict_batch(predictor, batch: Path, out: Path | None, bundle: Path, top_k: int | None) -> int:
    """Predict every good line of a batch file; report and skip bad ones. Returns how many failed.
    `--out` is written whole at the end (atomically), never in place of the batch file or the bundle."""
    import contextlib
    import sys

    from .files.atomic import atomic_writer
    from .files.outputs import claim_file
    from .files.progress import progress_bar
    from .runtime.predict import InputError, is_predictions_file, predict_batch_file

    if not batch.is_file():
        raise InputError(f"batch file not found: {batch}")
    if out is not None:
        claim_file(out, inputs=(batch,), within=(bundle,), ours=is_predictions_file)
    lines = batch.read_bytes().splitlines()
    total = sum(1 for line in lines if line.strip())
    with atomic_writer(out) if out else contextlib.nullcontext(sys.stdout) as sink, progress_bar(console) as bar:
        task = bar.add_task("predict", total=total)
        failed = predict_batch_file(
            predictor, lines, batch.parent, lambda record: sink.write(json.dumps(record) + "\n"),
            on_skip=lambda number, err: console.print(f"[bold red]skipped[/] line {number}: {escape(str(err))}", soft_wrap=True),
            on_line=lambda: bar.advance(task),
            top_k=top_k,
        )
    console.print(f"predicted {total - failed} of {total} lines" + (f"; {failed} skipped" if failed else ""))
    return failed


@app.command()
def report(
    runs: Annotated[Path, typer.Option(help="Runs folder: <runs>/<dataset>/<run>/seed<n>/result.json.")] = Path("results/runs"),
    paper: Annotated[Path | None, typer.Option(help="The paper's numbers (YAML); default: the packaged copy.", show_default=False)] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Report folder.")] = Path("results/report"),
    datasets: Annotated[str, typer.Option(help="Comma-separated data sets, in column order.")] = "food101,mmimdb,snlive",
) -> None:
    """Rebuild Tables 1-3, parameter/time/memory per run, Fig. 3, Fig. 4 and training curves beside the paper."""
    _require("yaml", "pyarrow", "matplotlib", extra="workflow")
    from .report.tables import write_report
    from .resources import PAPER, resource

    paper = paper or resource(PAPER)
    if not paper.is_file():
        _fail(f"paper numbers not found: {paper}")
    summary = write_report(runs, paper, out, [d for d in datasets.split(",") if d], warn=lambda m: console.print(f"[bold yellow]warning:[/] {escape(m)}", soft_wrap=True))
    console.print(f"[bold green]report[/] {out}: {summary['runs_evaluated']} evaluated of {summary['runs_found']} finished runs")


bundle_app = typer.Typer(help="Inspect and check exported bundles (torch-free).", no_args_is_help=True)
app.add_typer(bundle_app, name="bundle")


@bundle_app.command("verify")
def bundle_verify(
    bundle: Annotated[Path, typer.Argument(help="Bundle folder from `mitp export`.")],
    variant: Annotated[list[str] | None, typer.Option("--variant", help="Check only these variants (fp32, fp16, int8); default: all in the bundle.")] = None,
    provider: Annotated[str, typer.Option(help="auto | cuda | cpu")] = "cpu",
) -> None:
    """Check a bundle against its own contract and test vectors: metadata, tokenizer, preprocessing, logits."""
    from .runtime.verify import verify_bundle

    checks = verify_bundle(bundle, variant, provider)
    table = Table(title=f"mitp bundle verify {bundle}")
    table.add_column("check", no_wrap=True)
    table.add_column("result", no_wrap=True)
    table.add_column("detail")
    for check in checks:
        table.add_row(check.name, "[green]ok[/]" if check.ok else "[bold red]FAILED[/]", escape(check.detail))
    stdout.print(table)
    failed = [c for c in checks if not c.ok]
    for check in failed:
        console.print(f"[bold red]FAILED[/] {check.name}: {escape(check.detail)}", soft_wrap=True)
    if failed:
        console.print(f"[bold red]bundle verify failed:[/] {len(failed)} of {len(checks)} checks", soft_wrap=True)
        raise typer.Exit(1)
    console.print(f"[bold green]bundle verified:[/] {len(checks)} checks passed")


@bundle_app.command("web")
def bundle_web(
    bundle: Annotated[Path, typer.Argument(help="Bundle or release folder, or a release on the Hugging Face Hub (ORG/NAME).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="The site folder to write (replaced whole if mitp wrote it).")],
    variant: Annotated[list[str] | None, typer.Option("--variant", help="Ship only these variants (fp32, fp16, int8); default: all in the bundle.")] = None,
    webgpu: Annotated[bool, typer.Option("--webgpu", help="Also ship onnxruntime-web's WebGPU build (+27 MB), offered on the pages where the browser has WebGPU.")] = False,
    vendor: Annotated[Path | None, typer.Option("--vendor", help="A node_modules folder holding the pinned packages (cd examples/web && npm ci); default: the npm registry, once, into the mitp cache.")] = None,
) -> None:
    """Write a static web site that runs the bundle in the browser: a demo page and a test-vector page.

    Any static host serves it (GitHub Pages, a Hugging Face static Space, python -m http.server); with the
    COOP/COEP headers of `mitp bundle serve`, _headers or the Space's README the wasm runs multi-threaded."""
    from .files.progress import progress_bar
    from .runtime.site import build_site

    with progress_bar(console, unit_bytes=True) as bar:
        tasks: dict[str, Any] = {}

        def downloading(package: str, done: int, total: int | None) -> None:
            if package not in tasks:
                tasks[package] = bar.add_task(f"download {package} (npm, once)", total=total)
            bar.update(tasks[package], completed=done, total=total)

        site = build_site(_model_folder(bundle), out, variant, webgpu, vendor, progress=downloading)
    console.print(
        f"[bold green]site[/] {escape(str(out))}: {', '.join(site['variants'])} on {' and '.join(site['backends'])}, {site['bytes'] / 1e6:.1f} MB; "
        f"try it: mitp bundle serve {escape(str(out))}",
        soft_wrap=True,
    )


@bundle_app.command("serve")
def bundle_serve(
    site: Annotated[Path, typer.Argument(help="A site folder from `mitp bundle web`.")],
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port; 0 picks a free one.")] = 8000,
    host: Annotated[str, typer.Option(help="Address to listen on; 127.0.0.1 keeps the site on this machine.")] = "127.0.0.1",
) -> None:
    """Serve a site with the cross-origin isolation headers that multi-threaded wasm needs (Ctrl-C stops)."""
    from .runtime.site import site_server

    try:
        server = site_server(site, host, port)
    except OSError as err:
        _fail(f"cannot listen on {host}:{port}: {err.strerror}")
    shown = f"[{host}]" if ":" in host else host
    stdout.print(f"serving {escape(str(site))} at http://{shown}:{server.server_address[1]}/ (Ctrl-C stops)", soft_wrap=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


data_app = typer.Typer(help="Download and prepare the data sets (real ones and the offline twins).", no_args_is_help=True)
app.add_typer(data_app, name="data")
DATASETS_HELP = "food101 | mmimdb | snlive | demo-food101 | demo-mmimdb | demo-snlive | demo-cue"


@data_app.command("download")
def data_download(
    dataset: Annotated[str, typer.Argument(help=DATASETS_HELP)],
    raw: Annotated[Path | None, typer.Option(help="Raw folder; default data/raw/<dataset>.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the offline twins.")] = 0,
    retries: Annotated[int, typer.Option(min=0, help="Resume an interrupted download this many times (1, 2, 4... s apart).")] = 3,
) -> None:
    """Fetch a data set in its upstream layout (resumable, checksummed); twins are generated offline.
    Only interruptions are retried: a refusal, a missing credential or an unreachable host is said at once."""
    from .data.download import download_dataset_resuming
    from .files.progress import progress_bar

    raw = raw or Path("data/raw") / dataset
    with progress_bar(console, unit_bytes=True) as bar:
        task = bar.add_task(f"download {dataset}", total=None)
        root = download_dataset_resuming(
            dataset, raw, retries, seed=seed,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
            on_retry=lambda err, attempt: console.print(f"[yellow]interrupted[/] ({escape(str(err))}); resuming, try {attempt} of {retries + 1}", soft_wrap=True),
        )
    console.print(f"[bold green]ready[/]: {dataset} in {root}")


@data_app.command("prepare")
def data_prepare(
    dataset: Annotated[str, typer.Argument(help=DATASETS_HELP)],
    raw: Annotated[Path | None, typer.Option(help="Raw folder in the upstream layout; default data/raw/<dataset>.")] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Prepared folder; default data/<dataset>.")] = None,
    workers: Annotated[int, typer.Option(help="Threads that decode images.")] = 8,
    cache_size: Annotated[int | None, typer.Option("--cache-size", min=1, help="Also cache every image as its uint8 CLIP crop of this size (the backbone's input size), for fast training.")] = None,
) -> None:
    """Write {train,val,test}.parquet, classes.json and prepare_report.json; bad pairs are dropped and counted."""
    _require("pyarrow")
    from .data.prepare import prepare_dataset
    from .files.progress import progress_bar

    raw, out = raw or Path("data/raw") / dataset, out or Path("data") / dataset
    with progress_bar(console) as bar:
        task = bar.add_task(f"{'cache' if cache_size else 'check'} images of {dataset}", total=None)
        report = prepare_dataset(
            dataset, raw, out, workers, progress=lambda done, total: bar.update(task, completed=done, total=total), cache_size=cache_size
        )
    _say_prepared(dataset, report, out)


def _say_prepared(name: str, report: dict[str, Any], out: Path) -> None:
    counts = ", ".join(f"{split} {n:,}" for split, n in report["counts"].items())
    cache = report.get("image_cache")
    cached = f"; image cache {cache['images']:,} images, {cache['bytes_on_disk'] / 2**30:.2f} GiB" if cache else ""
    console.print(f"[bold green]prepared[/] {escape(name)}: {counts}; dropped {report['dropped_total']:,}{cached} (see {escape(str(out))}/prepare_report.json)")


@data_app.command("import")
def data_import(
    pairs: Annotated[Path, typer.Argument(help="A .csv, .jsonl or .parquet file: image (a path under its folder), text, label or labels, optional split.")],
    name: Annotated[str, typer.Option("--name", help="The data set's name (config: datasets.<name>).")],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Prepared folder; default data/<name>.")] = None,
    task: Annotated[str | None, typer.Option(help="single-label or multi-label; default: multi-label when the file has a labels column.")] = None,
    workers: Annotated[int, typer.Option(help="Threads that decode images.")] = 8,
    cache_size: Annotated[int | None, typer.Option("--cache-size", min=1, help="Also cache every image as its uint8 CLIP crop of this size.")] = None,
) -> None:
    """Prepare a data set of your own with the checks and report of the upstream ones."""
    _require("pyarrow")
    from .config import READING_NAME
    from .data.importer import import_pairs
    from .files.progress import progress_bar

    if not READING_NAME.match(name):
        _fail(f"--name {name!r}: a data set name is lower-case words joined by '-' (it names a folder and a config key)")
    if task not in (None, "single-label", "multi-label"):
        _fail(f"--task {task!r} is not one of single-label, multi-label")
    out = out or Path("data") / name
    with progress_bar(console) as bar:
        bar_task = bar.add_task(f"check images of {name}", total=None)
        report = import_pairs(pairs, name, out, task, workers, lambda done, total: bar.update(bar_task, completed=done, total=total), cache_size)
    _say_prepared(name, report, out)
    console.print(f"add to config.yaml:  datasets: {{{name}: {{task: {report['task']}, data_dir: {out}}}}}", soft_wrap=True, markup=False)


class _ReleaseGroup(TyperGroup):
    """`mitp release SOURCE --out DIR` makes a release; `mitp release push DIR --repo ORG/NAME` uploads one."""

    def parse_args(self, ctx: typer.Context, args: list[str]) -> list[str]:  # type: ignore[override]
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["make", *args]
        return super().parse_args(ctx, args)


release_app = typer.Typer(
    cls=_ReleaseGroup,
    help=(
        "A release folder for the Hugging Face Hub, and its upload.\n\n"
        "mitp release RUN_OR_BUNDLE --out DIR [--bundle BUNDLE | --run RUN]: write the model card, the bundle, the prompts, "
        "the config and the results (details: mitp release make --help).\n\n"
        "mitp release push DIR --repo ORG/NAME: upload it."
    ),
    no_args_is_help=True,
)
app.add_typer(release_app, name="release")


@release_app.command("make", hidden=True)
def release_make(
    source: Annotated[Path, typer.Argument(help="A finished run folder, or a bundle folder.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="The release folder to write.")],
    bundle: Annotated[Path | None, typer.Option(help="The run's bundle (default: exported now).")] = None,
    run: Annotated[Path | None, typer.Option(help="The bundle's run, for its prompts and test metrics.")] = None,
) -> None:
    """Write a release folder: README.md (model card), the bundle, the prompts, the config and the results."""
    from .ship.release import write_release

    release = write_release(source, out, bundle=bundle, run=run)
    if not release.from_run:
        console.print("[yellow]note:[/] released from a bundle alone: the card has no training record or test metrics (give --run RUN for them)", soft_wrap=True)
    elif not release.evaluated:
        console.print(
            "[yellow]note:[/] the run was never evaluated: the card has no test metrics (no model-index); run "
            f"`mitp evaluate --checkpoint {escape(str(run or source))}` and release again",
            soft_wrap=True,
        )
    console.print(f"[bold green]released[/] {escape(str(out))}: upload it with `mitp release push {escape(str(out))} --repo ORG/NAME`", soft_wrap=True)


@release_app.command("push")
def release_push(
    folder: Annotated[Path, typer.Argument(help="A release folder (mitp release).")],
    repo: Annotated[str, typer.Option("--repo", help="ORG/NAME on the Hugging Face Hub.")],
    private: Annotated[bool, typer.Option(help="Create the repository as private.")] = False,
) -> None:
    """Upload a release folder to the Hugging Face Hub (token: HF_TOKEN or `hf auth login`)."""
    from .ship.release import push_release

    commit = push_release(folder, repo, private)
    console.print(f"[bold green]pushed[/] {escape(str(folder))} to {escape(repo)}: {escape(commit)}", soft_wrap=True)


@data_app.command("cache")
def data_cache(
    data_dir: Annotated[Path, typer.Argument(help="A prepared folder (mitp data prepare).")],
    size: Annotated[int, typer.Option("--size", min=1, help="Crop size: the backbone's input size (224 for CLIP ViT-L/14).")],
    workers: Annotated[int, typer.Option(help="Threads that decode images.")] = 8,
) -> None:
    """Cache every image of a prepared data set once, as its uint8 CLIP crop (memory-mapped by the loader)."""
    _require("pyarrow")
    from .data.cache import build_cache
    from .files.progress import progress_bar

    with progress_bar(console) as bar:
        task = bar.add_task(f"cache images of {data_dir}", total=None)
        summary = build_cache(data_dir, size, workers, progress=lambda done, total: bar.update(task, completed=done, total=total))
    console.print(f"[bold green]cached[/] {summary['images']:,} images of {data_dir} at {size} px: {summary['bytes_on_disk'] / 2**30:.2f} GiB")


@app.command("fetch-backbone")
def fetch_backbone_command(
    name: Annotated[str, typer.Argument(help="Hugging Face CLIP name, e.g. openai/clip-vit-large-patch14.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder to save it in (weights, config, tokenizer.json).")],
) -> None:
    """Save a hub backbone into a local folder, once, for machines without internet (HF_HUB_OFFLINE=1)."""
    _require(*TRAINING_LIBRARIES)
    from .model.backbone import fetch_backbone

    fetch_backbone(name, out)
    console.print(f"[bold green]backbone[/] {name} saved in {out}; pass --backbone {out} (works with HF_HUB_OFFLINE=1)")


@app.command("pretrain-standin")
def pretrain_standin(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the stand-in CLIP (save_pretrained + tokenizer.json).")],
    steps: Annotated[int, typer.Option(help="Contrastive training steps.")] = 500,
    batch_size: Annotated[int, typer.Option("--batch-size")] = 128,
    seed: Annotated[int, typer.Option()] = 0,
) -> None:
    """Pre-train the small stand-in CLIP of the offline twins on the CPU (a few minutes)."""
    _require(*TRAINING_LIBRARIES)
    if steps < 1 or batch_size < 2:
        _fail("--steps must be >= 1 and --batch-size >= 2")
    from .model.standin import StandinConfig
    from .model.standin import pretrain_standin as run_pretraining

    summary = run_pretraining(out, StandinConfig(steps=steps, batch_size=batch_size, seed=seed), log=console.print)
    console.print(f"[bold green]stand-in CLIP[/] in {out}: loss {summary['final_loss']:.3f} after {steps} steps, {summary['seconds']:.0f} s")


if __name__ == "__main__":
    app()
