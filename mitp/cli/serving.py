"""`mitp serve`: bundles as models behind the Open Inference Protocol (KServe's server; the `serve` extra)."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from ..errors import MitpError
from .common import _fail, _model_folder, _require, app, console

MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
MAX_BATCH = 512  # the warm-up runs a full batch: far past what one onnxruntime call gains from


@app.command("serve")
def serve(
    bundles: Annotated[list[Path], typer.Argument(help="Bundle folders or releases (as `mitp predict --model` takes them).", show_default=False)],
    name: Annotated[list[str] | None, typer.Option("--name", help="Model name, one per bundle in order; default <data set>-<setting>.", show_default=False)] = None,
    host: Annotated[str, typer.Option(help="Interface to listen on; 0.0.0.0 for every interface (in a container).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="HTTP port (REST, health, /metrics).", min=1, max=65535)] = 8080,
    grpc_port: Annotated[int | None, typer.Option(help="gRPC: not served yet (refused; see docs/serving.md).", min=1, max=65535, show_default=False)] = None,
    variant: Annotated[str, typer.Option(help="fp32 | fp16 (GPUs) | int8 (CPUs): which of each bundle's models serves.")] = "fp32",
    provider: Annotated[str, typer.Option(help="auto (CUDA when it runs) | cuda | cpu.")] = "auto",
    max_batch_size: Annotated[int | None, typer.Option(help="Rows gathered into one model call at most; default 4 on a CPU, 16 on a GPU.", min=1, max=MAX_BATCH, show_default=False)] = None,
    max_delay_ms: Annotated[float, typer.Option(help="How long the oldest request waits for others to join its batch.", min=0, max=10_000)] = 5.0,
    max_queue: Annotated[int, typer.Option(help="Rows in progress per model at most (decoding, queued, running); past it, 503 at once.", min=1, max=65536)] = 256,
    max_body_mb: Annotated[float, typer.Option(help="Largest request body; larger ones get 413 before they are read.", min=0.001, max=4096)] = 64.0,
    read_timeout: Annotated[float, typer.Option(help="Seconds a request's headers, and then its body, may take to arrive (408 or closed past it).", min=1, max=3600)] = 60.0,
    grace: Annotated[int, typer.Option(help="Seconds that requests in flight get to finish after SIGTERM.", min=0, max=3600)] = 30,
    share_backbone: Annotated[bool, typer.Option("--share-backbone/--own-backbones", help="Load a backbone that several bundles name once for all of them (less memory, slower calls on a CPU), or once per bundle.")] = True,
) -> None:
    """Serve bundles over HTTP to any Open Inference Protocol (KServe v2) client.

    Each bundle is verified against its test vectors and warmed up before it is ready; one that fails is not served, and the rest are. Bundles of one backbone load its weights once for all of them; a release without its backbone is completed from the local backbone store (mitp bundle share).

    Routes: GET /v2/health/live, /v2/health/ready, /v2/models/NAME, /v2/models/NAME/ready and /metrics (Prometheus); POST /v2/models/NAME/infer with inputs `image` (BYTES [B], image files) and `text` (BYTES [B], captions), outputs `logits`, `probabilities` and `label`.

    SIGTERM stops accepting, finishes the requests in flight and exits 0. In a container, as a KServe InferenceService, behind a Kubernetes probe: docs/serving.md.
    """
    _require("kserve", extra="serve")
    from ..runtime.weights import sharing
    from ..serve.model import Batching, BundleModel
    from ..serve.server import Listen, check_listen, load_models
    from ..serve.server import serve as run_server

    names = list(name or [])
    if names and len(names) != len(bundles):
        _fail(f"give one --name per bundle, in order: {len(names)} names for {len(bundles)} bundles")
    folders = [_model_folder(b) for b in bundles]
    names = names or [_default_name(f) for f in folders]
    for model_name in names:
        if not MODEL_NAME.match(model_name):
            _fail(f"model name {model_name!r}: use letters, digits, '.', '_' and '-' (it is part of each URL)")
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        _fail(f"two bundles would be served as {', '.join(duplicates)}: give each a --name")
    if max_batch_size is not None and max_queue < max_batch_size:
        _fail(f"--max-queue ({max_queue}) must hold at least one full batch (--max-batch-size {max_batch_size})")
    listen = Listen(host=host, port=port, grpc_port=grpc_port, grace_seconds=grace, max_body_bytes=int(max_body_mb * 2**20), read_seconds=read_timeout)
    try:
        check_listen(listen)
    except MitpError as err:
        _fail(str(err))
    _configure_logging()
    batching = Batching(max_batch_size, max_delay_ms / 1000, max_queue)
    caches = sharing(folders, variant) if share_backbone else [None] * len(folders)  # one backbone's weights once for all its bundles
    models = [BundleModel(n, f, variant, provider, batching, shared=c) for n, f, c in zip(names, folders, caches, strict=True)]
    ready = load_models(models, say=lambda m: console.print(f"[bold yellow]warning:[/] {escape(m)}", soft_wrap=True))
    for model in ready:
        how = f"{model.variant}, {model.predictor.provider if model.predictor else '?'}, batches of {model.max_batch_size}" + (", backbone shared" if model.shared else "")
        console.print(f"serving [bold]{escape(model.name)}[/] from {escape(str(model.bundle))} ({how})", soft_wrap=True)
    where = f"http://{host}:{port}" if ":" not in host else f"http://[{host}]:{port}"
    console.print(f"ready on {where}/v2 (metrics at {where}/metrics)", soft_wrap=True)
    run_server(ready, listen)


def _default_name(bundle: Path) -> str:
    """<data set>-<setting> from bundle.json; the folder's name when the contract cannot be read (its
    verification then says why it is not served)."""
    from ..runtime.bundle import read_contract

    try:
        contract = read_contract(bundle)
    except MitpError:
        return bundle.name
    return f"{contract['dataset']}-{contract['setting']}"


def _configure_logging() -> None:
    """One line per event on stderr, as the rest of mitp: access lines, warnings, the server's own."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
