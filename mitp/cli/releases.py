"""Releases for the Hugging Face Hub: mitp release (make) and push."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from typer.core import TyperGroup

from .common import (
    app,
    console,
)


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
    backbone: Annotated[bool, typer.Option("--backbone/--without-backbone", help="Include the frozen backbone's weights, or carry the trained part alone (completed from the local backbone store).")] = True,
) -> None:
    """Write a release folder: README.md (model card), the bundle, the prompts, the config and the results."""
    from ..ship.release import write_release

    release = write_release(source, out, bundle=bundle, run=run, with_backbone=backbone)
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
    from ..ship.release import push_release

    commit = push_release(folder, repo, private)
    console.print(f"[bold green]pushed[/] {escape(str(folder))} to {escape(repo)}: {escape(commit)}", soft_wrap=True)
