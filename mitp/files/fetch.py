"""Resumable HTTP downloads: a file arrives whole or not at all.

A download goes to `<name>.part` and resumes there with an HTTP Range request after an interruption;
only a complete (and, where a checksum is known, verified) file is renamed to its final name. An
Authorization header never follows a redirect to another origin. Torch-free: the data sets and the
runtime's web site both fetch through here.
"""

from __future__ import annotations

import http.client
import os
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Callable
from pathlib import Path

from ..errors import MitpError
from .atomic import file_sha256

CHUNK = 1 << 20


class DownloadError(MitpError, RuntimeError):
    """A download or extraction failed, or the data set needs a manual step; the message says which."""


class TransientDownloadError(DownloadError):
    """A download that was interrupted and can resume: trying again can succeed (exit code 75, EX_TEMPFAIL)."""

    exit_code = 75


class _SameOriginAuthRedirects(urllib.request.HTTPRedirectHandler):
    """Follow redirects, but never carry the Authorization header to another origin (scheme, host, port):
    the Kaggle API redirects to a storage host that must not see the API key."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and _origin(newurl) != _origin(req.full_url):
            for name in [h for h in new.headers if h.lower() == "authorization"]:
                del new.headers[name]
            new.unredirected_hdrs.pop("Authorization", None)
        return new


def _origin(url: str) -> tuple[str, str | None, int | None]:
    parts = urllib.parse.urlsplit(url)
    return parts.scheme, parts.hostname, parts.port or {"http": 80, "https": 443}.get(parts.scheme)


_opener = urllib.request.build_opener(_SameOriginAuthRedirects)


def fetch(
    url: str, dest: Path, sha256: str | None = None, headers: dict[str, str] | None = None, progress: Callable | None = None
) -> Path:
    """Download `url` to `dest`, resuming `dest.part`; check it (sha256 where known, else that it is the
    archive its name says) before the final rename, so a page of HTML or a cut body never gets it.

    `progress(done_bytes, total_bytes)` is called as data arrive (total may be None)."""
    dest = Path(dest)
    if dest.is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    done = part.stat().st_size if part.exists() else 0
    # The bytes are stored as sent, and resumed by byte offset: only an unencoded body can be.
    request = urllib.request.Request(url, headers={"User-Agent": "mitp", "Accept-Encoding": "identity", **(headers or {})})
    if done:
        request.add_header("Range", f"bytes={done}-")
    host = urllib.parse.urlsplit(url).hostname
    try:
        with _opener.open(request, timeout=60) as response:
            encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
            if encoding not in ("identity", ""):
                raise DownloadError(f"download of {url} refused: the server sent a {encoding}-encoded body although asked for none; nothing was kept")
            if done and response.status != 206:  # the server ignored Range: start over
                done = 0
            length = response.headers.get("Content-Length")
            total = done + int(length) if length else None
            with open(part, "ab" if done else "wb") as f:
                while chunk := response.read(CHUNK):
                    f.write(chunk)
                    done += len(chunk)
                    if progress:
                        progress(done, total)
        if total is not None and done < total:  # the connection closed early: keep the part file
            raise ConnectionError(f"got {done:,} of {total:,} bytes")
    except urllib.error.HTTPError as err:
        if err.code == 416 and done:  # range not satisfiable: the part file is already complete
            pass
        elif err.code in (401, 403):
            raise DownloadError(f"download of {url} was refused (HTTP {err.code} {err.reason}): check the credentials and that you accepted the data set's terms") from err
        else:
            raise DownloadError(f"download of {url} failed: HTTP {err.code} {err.reason}") from err
    except (urllib.error.URLError, http.client.HTTPException, TimeoutError, ConnectionError, OSError) as err:
        reason = getattr(err, "reason", err)
        if part.exists() and part.stat().st_size:
            raise TransientDownloadError(f"download of {url} interrupted ({reason}); run again to resume from {part}") from err
        raise DownloadError(f"cannot reach {host} ({reason}): check the network connection, then run again") from err
    if sha256 is not None:
        actual = file_sha256(part)
        if actual != sha256:
            part.unlink()
            raise DownloadError(f"{url}: sha256 {actual} does not match the expected {sha256}; the partial file was removed")
    else:
        problem = archive_problem(part, dest.name)
        if problem:
            part.unlink()
            raise DownloadError(f"{url} did not send the expected file ({problem}); the partial file was removed, run again")
    os.replace(part, dest)
    return dest


def archive_problem(path: Path, name: str) -> str | None:
    """Why `path` is not the archive that `name` promises (None if it looks whole): checked by magic bytes,
    and for zip files by their central directory, which a truncated body lacks."""
    with open(path, "rb") as f:
        head = f.read(4)
    if name.endswith(".zip"):
        if not head.startswith(b"PK") or not zipfile.is_zipfile(path):
            return "not a complete zip archive" + (" but an HTML page" if head.lstrip().startswith(b"<") else "")
    elif name.endswith((".gz", ".tgz")):
        if not head.startswith(b"\x1f\x8b"):
            return "not a gzip file" + (" but an HTML page" if head.lstrip().startswith(b"<") else "")
    return None
