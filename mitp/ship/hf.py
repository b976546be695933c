"""mitp's calls to the Hugging Face Hub, and what their failures tell the user.

Every error huggingface_hub can raise on a push or a pull (offline mode, no or a refused token, a
repository that is missing, private or gated, rate limits, the Hub failing, the network cut) becomes one
`HubError` whose message says what to do; the token never appears in it. Torch-free.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import MitpError

LOGIN = "set HF_TOKEN, or run `hf auth login`"


class HubError(MitpError, RuntimeError):
    """A call to the Hugging Face Hub failed; the message says why and what to do."""


def hub_message(err: BaseException, doing: str, repo: str) -> str:
    """One line for an error of huggingface_hub (or of the network under it) while `doing` on `repo`."""
    from huggingface_hub import errors

    status = getattr(getattr(err, "response", None), "status_code", None)
    if isinstance(err, errors.OfflineModeIsEnabled) or (isinstance(err, errors.LocalEntryNotFoundError) and _offline()):
        what = "is not in this machine's Hub cache" if "download" in doing else "needs the network"
        return f"{doing} {repo}: HF_HUB_OFFLINE=1 is set and the repository {what}; unset HF_HUB_OFFLINE on a machine with internet"
    if isinstance(err, errors.LocalTokenNotFoundError):
        return f"{doing} {repo}: no Hugging Face token found; {LOGIN}"
    if isinstance(err, errors.HFValidationError):
        return f"{doing} {repo}: not a valid repository name (ORG/NAME: letters, digits, '-', '_', '.')"
    if isinstance(err, errors.GatedRepoError):
        return f"{doing} {repo}: the repository is gated; accept its conditions on its Hub page with your account, then {LOGIN}"
    if isinstance(err, errors.RepositoryNotFoundError):
        return f"{doing} {repo}: no such repository, or it is private and the token may not read it: check the name, or {LOGIN}"
    if isinstance(err, errors.RevisionNotFoundError | errors.EntryNotFoundError):
        return f"{doing} {repo}: the repository has no such revision or file: is it a release made by `mitp release`?"
    if status == 401:
        return f"{doing} {repo}: the Hub refused the token (HTTP 401): {LOGIN} with a valid token"
    if status == 403:
        return f"{doing} {repo}: the token may not do this (HTTP 403): use a token with write access to {repo.split('/')[0]}"
    if status == 429:
        return f"{doing} {repo}: the Hub is rate-limiting this machine (HTTP 429): wait a few minutes, then run the command again"
    if isinstance(status, int) and status >= 500:
        return f"{doing} {repo}: the Hub failed (HTTP {status}): try again later"
    if isinstance(err, errors.HfHubHTTPError):
        return f"{doing} {repo}: the Hub answered HTTP {status or '?'} ({_short(err)})"
    if isinstance(err, errors.LocalEntryNotFoundError):
        return f"{doing} {repo}: the Hub cannot be reached and the repository is not in this machine's Hub cache: check the network"
    return f"{doing} {repo}: cannot reach the Hub at {_endpoint()} ({type(err).__name__}): check the network, or HF_ENDPOINT"


def calling_hub(doing: str, repo: str, call: Callable[[], Any]) -> Any:
    """`call()`, with any failure of the Hub or the network under it raised as one HubError."""
    try:
        return call()
    except MitpError:
        raise
    except Exception as err:  # huggingface_hub's errors, httpx's and the socket's: all are said in one line
        raise HubError(_without_token(hub_message(err, doing, repo))) from err


def model_folder(model: Path) -> Path:
    """A bundle or release folder as given, or a release on the Hugging Face Hub (ORG/NAME, not a folder
    here) downloaded into the Hub's cache (HF_HUB_OFFLINE=1 reads the cache only)."""
    name = str(model)
    if model.exists() or name.count("/") != 1 or name.startswith((".", "/")):
        return model
    try:
        import huggingface_hub  # noqa: F401
    except ImportError:
        raise HubError(f"--model {name}: not a folder here; reading a release from the Hub needs huggingface_hub (python -m pip install huggingface_hub)") from None
    return download_release(name)


def download_release(repo: str) -> Path:
    """The snapshot of release `repo` in the Hub cache (downloaded if needed; HF_HUB_OFFLINE=1 reads the cache only)."""
    from huggingface_hub import snapshot_download

    return Path(calling_hub("download", repo, lambda: snapshot_download(repo)))


def _offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def _endpoint() -> str:
    from huggingface_hub import constants

    return str(constants.ENDPOINT)


def _short(err: BaseException) -> str:
    return " ".join(str(err).split())[:160]


def _without_token(message: str) -> str:
    token = os.environ.get("HF_TOKEN")
    return message.replace(token, "<token>") if token else message
