"""Inspecting and shipping bundles: mitp bundle verify, share, web and serve (torch-free)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from .common import (
    _fail,
    _model_folder,
    app,
    console,
    stdout,
)

bundle_app = typer.Typer(help="Inspect and check exported bundles (torch-free).", no_args_is_help=True)
app.add_typer(bundle_app, name="bundle")


@bundle_app.command("verify")
def bundle_verify(
    bundle: Annotated[Path, typer.Argument(help="Bundle folder from `mitp export`.")],
    variant: Annotated[list[str] | None, typer.Option("--variant", help="Check only these variants (fp32, fp16, int8); default: all in the bundle.")] = None,
    provider: Annotated[str, typer.Option(help="auto | cuda | cpu")] = "cpu",
) -> None:
    """Check a bundle against its own contract and test vectors: metadata, tokenizer, preprocessing, logits."""
    from ..runtime.verify import verify_bundle

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


@bundle_app.command("share")
def bundle_share(
    bundle: Annotated[Path, typer.Argument(help="Bundle folder from `mitp export` (with its backbone file).")],
) -> None:
    """Put the bundle's backbone weights into the local backbone store ($MITP_BACKBONES, else
    ~/.cache/mitp/backbones), where a bundle of the same backbone that carries its trained part alone finds them."""
    from ..runtime.weights import backbone_store, share_backbone

    for name, added in share_backbone(_model_folder(bundle)):
        console.print(f"{'added' if added else 'already there'}: {escape(str(backbone_store() / name))}", soft_wrap=True)


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
    from ..files.progress import progress_bar
    from ..runtime.site import build_site

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
    from ..runtime.site import site_server

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
