"""A bundle as a static web site: `mitp bundle web BUNDLE --out SITE`, and `mitp bundle serve SITE`.

The site runs the bundle in the browser with onnxruntime-web (docs/bundle.md, "In a web page"):

    SITE/index.html, verify.html     the demo page and the test-vector page (an import map names vendor/)
    SITE/mitp/*.mjs, style.css       the browser runtime; contract.mjs is shared with the Node.js example
    SITE/bundle/                     bundle.json, tokenizer.json, the chosen models, the test vectors
    SITE/vendor/<package>/           onnxruntime-web (its wasm), tokenizers.js, entities, fast-png (+ deps)
    SITE/site.json                   what this site holds: variants, default variant, backends
    SITE/_headers, README.md         COOP/COEP headers for Netlify / Cloudflare Pages and Hugging Face Spaces

Nothing is fetched from the internet when the page runs. The vendor packages are pinned with their npm
integrity (web/vendor.json); they come from a node_modules folder (`--vendor`) or from the npm registry once,
into the mitp cache, checked before use. Multi-threaded wasm needs the page to be cross-origin isolated
(COOP + COEP headers); `mitp bundle serve` sends them.
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import io
import json
import os
import shutil
import socket
import sys
import tarfile
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

from .. import __version__
from ..errors import MitpError, machine_limit
from ..files.atomic import atomic_write_json, atomic_write_text
from ..files.outputs import build_output
from ..files.paths import inside
from .bundle import CONTRACT_FILE, external_data, read_contract
from .verify import bundle_files, user_cache

WEB = Path(__file__).with_name("web")
PAGES = ("index.html", "verify.html")
SCRIPTS = ("mitp.mjs", "contract.mjs", "demo.mjs", "verify.mjs", "served.js", "style.css")
REGISTRY = "https://registry.npmjs.org"
SCRIPT_SUFFIXES = (".js", ".mjs")
LARGE_MODEL = 1 << 30  # above 1 GiB of fp32 weights the page starts on int8, the size a browser tab can hold
ISOLATION_HEADERS = {"Cross-Origin-Opener-Policy": "same-origin", "Cross-Origin-Embedder-Policy": "require-corp"}


class SiteError(MitpError, ValueError):
    """A site cannot be built from what was given; the message says why."""


def vendor_spec() -> dict[str, Any]:
    return json.loads((WEB / "vendor.json").read_text())


# ------------------------------------------------------------------------------------- vendor packages


def _integrity_ok(data: bytes, integrity: str) -> bool:
    algorithm, _, digest = integrity.partition("-")
    return algorithm == "sha512" and base64.b64encode(hashlib.sha512(data).digest()).decode() == digest


def tarball_url(name: str, version: str, registry: str | None = None) -> str:
    registry = (registry or os.environ.get("MITP_NPM_REGISTRY") or REGISTRY).rstrip("/")
    return f"{registry}/{name}/-/{name.rsplit('/', 1)[-1]}-{version}.tgz"


Progress = Callable[[str, int, int | None], None]  # (package, bytes done, bytes in all or None)


def package_tarball(name: str, pin: dict[str, Any], progress: Progress | None = None) -> bytes:
    """The package's npm tarball, from the mitp cache or downloaded into it once, checked against its pin."""
    from ..files.fetch import DownloadError, fetch

    cached = user_cache() / "npm" / f"{name.replace('/', '+')}-{pin['version']}.tgz"
    if not cached.is_file():
        url = tarball_url(name, pin["version"])
        try:
            fetch(url, cached, progress=(lambda done, total: progress(name, done, total)) if progress else None)
        except DownloadError as err:
            raise SiteError(
                f"{err}. The site needs {name} {pin['version']}: without the network, run `npm ci` in examples/web "
                "and pass --vendor examples/web/node_modules"
            ) from err
    data = cached.read_bytes()
    if not _integrity_ok(data, pin["integrity"]):
        cached.unlink()
        raise SiteError(f"{name} {pin['version']} from the npm registry does not match its pinned integrity; it was removed, nothing was built")
    return data


def _wanted(relative: str, listed: list[str]) -> bool:
    return any(relative == item or (item.endswith("/") and relative.startswith(item) and relative.endswith(SCRIPT_SUFFIXES)) for item in listed)


def _safe_relative(relative: str) -> bool:
    parts = relative.split("/")
    return bool(relative) and not relative.startswith("/") and all(part not in ("", ".", "..") for part in parts)


def vendor_files(webgpu: bool, node_modules: Path | None = None, progress: Progress | None = None) -> Iterator[tuple[str, bytes]]:
    """(path under vendor/, content) of every pinned file the site needs."""
    for name, pin in vendor_spec()["packages"].items():
        listed = pin["files"] + (pin.get("webgpu_files", []) if webgpu else [])
        found: set[str] = set()
        if node_modules is not None:
            root = Path(node_modules) / name
            try:
                version = json.loads((root / "package.json").read_text()).get("version")
            except (OSError, ValueError):
                version = None
            if version != pin["version"]:
                have = f"has {name} {version}" if version else f"has no {name}"
                raise SiteError(f"--vendor {node_modules} {have}; the site needs {pin['version']} (run `npm ci` in examples/web)")
            for path in sorted(root.rglob("*")):
                relative = path.relative_to(root).as_posix()
                if path.is_file() and not path.is_symlink() and _wanted(relative, listed):
                    found.add(relative)
                    content = path.read_bytes()
                    if not content:  # npm checked the tarball; an emptied file is a damaged install
                        raise SiteError(f"--vendor {node_modules}: {name}/{relative} is empty; reinstall with `npm ci`")
                    yield f"{name}/{relative}", content
        else:
            with tarfile.open(fileobj=io.BytesIO(package_tarball(name, pin, progress)), mode="r:gz") as tar:
                for member in tar.getmembers():
                    relative = member.name.removeprefix("package/")
                    if member.isfile() and member.name.startswith("package/") and _safe_relative(relative) and _wanted(relative, listed):
                        found.add(relative)
                        extracted = tar.extractfile(member)
                        assert extracted is not None  # a regular file
                        yield f"{name}/{relative}", extracted.read()
        missing = [item for item in listed if not item.endswith("/") and item not in found]
        if missing:
            raise SiteError(f"{name} {pin['version']} lacks {', '.join(missing)}")


# ------------------------------------------------------------------------------------------- the site


def import_map() -> str:
    imports = {name: f"./vendor/{path}" for name, path in vendor_spec()["imports"].items()}
    return '<script type="importmap">' + json.dumps({"imports": imports}) + "</script>"


def model_bytes(bundle: Path, contract: dict[str, Any], variant: str) -> int:
    names = [contract["models"][variant]["file"], external_data(bundle, contract, variant)]
    return sum((Path(bundle) / name).stat().st_size for name in names if name)


def site_contract(bundle: Path) -> dict[str, Any]:
    """bundle.json, with what the pages read of it present and typed (models, tokenizer file, test vectors)."""
    contract = read_contract(bundle)
    where = Path(bundle) / CONTRACT_FILE
    if not contract.get("models"):  # each entry's file and the tokenizer's are checked by read_contract
        raise SiteError(f"{where}: `models` must name each variant's file, as `mitp export` writes it")
    if not isinstance(contract["tokenizer"].get("file"), str):
        raise SiteError(f"{where}: `tokenizer` must name its file, as `mitp export` writes it")
    if not isinstance(contract.get("test_vectors"), str):
        raise SiteError(f"{where} names no test vectors, which the site's verify page runs: export the bundle again")
    return contract


def choose_variants(contract: dict[str, Any], bundle: Path, wanted: list[str] | None) -> list[str]:
    """The variants to ship: those asked for, or all in the bundle."""
    available = list(contract["models"])
    variants = list(dict.fromkeys(wanted or available))
    unknown = [v for v in variants if v not in available]
    if unknown:
        raise SiteError(f"{bundle} has no {', '.join(unknown)} model (it has {', '.join(available)})")
    return variants


def default_variant(contract: dict[str, Any], bundle: Path, variants: list[str]) -> str:
    """The variant the demo page starts on: fp32, or int8 when the fp32 weights pass LARGE_MODEL bytes."""
    if "fp32" not in variants:
        return variants[0]
    return "int8" if model_bytes(bundle, contract, "fp32") > LARGE_MODEL and "int8" in variants else "fp32"


def space_card(contract: dict[str, Any]) -> str:
    """README.md with the YAML header a Hugging Face static Space reads, headers included."""
    header = "\n".join(f"  {name.lower()}: {value}" for name, value in ISOLATION_HEADERS.items())
    title = json.dumps(f"mitp {contract.get('dataset', '')} {contract.get('setting', '')}")  # a JSON string is a YAML string
    return (
        f"---\ntitle: {title}\nsdk: static\napp_file: index.html\n"
        f"custom_headers:\n{header}\n---\n\n"
        f"An mitp bundle ({contract.get('dataset')}, {contract.get('setting')}) that runs in the browser with onnxruntime-web.\n"
        "`index.html` classifies an image and a caption; `verify.html` checks the bundle's test vectors.\n"
        "Built by `mitp bundle web`; serve the folder with any static host.\n"
    )


def build_site(
    bundle: Path, out: Path, variants: list[str] | None = None, webgpu: bool = False, node_modules: Path | None = None, progress: Progress | None = None
) -> dict[str, Any]:
    """Write the static site for `bundle` at `out` (replaced whole, only if it is a site mitp wrote);
    `progress` hears of the npm tarballs downloaded (the first time only)."""
    bundle = Path(bundle)
    if Path(out).resolve().is_relative_to(bundle.resolve()):
        raise SiteError(f"--out {out} is inside the bundle {bundle}, which stays as it is: name a folder outside it")
    contract = site_contract(bundle)
    chosen = choose_variants(contract, bundle, variants)
    files = bundle_files(bundle, contract, chosen)  # each checked before anything is read or sized
    default = default_variant(contract, bundle, chosen)
    vendored = dict(vendor_files(webgpu, node_modules, progress))  # fetched before anything is written
    site = {
        "mitp_version": __version__,
        "dataset": contract.get("dataset"),
        "setting": contract.get("setting"),
        "variants": chosen,
        "default_variant": default,
        "backends": ["wasm", "webgpu"] if webgpu else ["wasm"],
        "external_data": {v: name for v in chosen if (name := external_data(bundle, contract, v))},
        "vendor": {name: pin["version"] for name, pin in vendor_spec()["packages"].items()},
    }
    try:
        _write_site(bundle, Path(out), files, vendored, site, contract)
    except OSError as err:
        if machine_limit(err) is not None:
            raise  # a full disk, a read-only file system: said as such, exit 74
        raise SiteError(f"cannot write the site at {out}: {err.strerror or err}") from err
    site["bytes"] = sum(p.stat().st_size for p in Path(out).rglob("*") if p.is_file())
    return site


def _write_site(bundle: Path, out: Path, files: list[str], vendored: dict[str, bytes], site: dict[str, Any], contract: dict[str, Any]) -> None:
    with build_output(out, "site", inputs=(bundle,)) as tmp:
        for page in PAGES:
            atomic_write_text(tmp / page, (WEB / page).read_text().replace("<!-- importmap -->", import_map()))
        (tmp / "mitp").mkdir()
        for script in SCRIPTS:
            shutil.copyfile(WEB / script, tmp / "mitp" / script)
        for name in files:
            (tmp / "bundle" / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(bundle / name, tmp / "bundle" / name)
        for relative, content in vendored.items():
            path = tmp / "vendor" / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content)
        atomic_write_json(tmp / "site.json", site)
        atomic_write_text(tmp / "_headers", "/*\n" + "".join(f"  {k}: {v}\n" for k, v in ISOLATION_HEADERS.items()))
        atomic_write_text(tmp / "README.md", space_card(contract))


# ---------------------------------------------------------------------------------------------- serve


class IsolatedHandler(http.server.SimpleHTTPRequestHandler):
    """Static files with the headers that make the page cross-origin isolated (multi-threaded wasm)."""

    timeout = 30  # seconds a connection may stay idle (a slow or silent client), then it is closed
    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map, ".mjs": "text/javascript", ".js": "text/javascript", ".wasm": "application/wasm", ".onnx": "application/octet-stream"}

    def send_head(self):  # the base class's signature
        url_path = urllib.parse.unquote(self.path.split("?", 1)[0].split("#", 1)[0])
        if "\0" in url_path or any(part.startswith(".") for part in url_path.split("/")):
            self.send_error(404, "not part of the site")  # .mitp-output, build leftovers, a NUL
            return None
        path = Path(self.translate_path(self.path))
        root = Path(self.directory)
        if path.is_dir() and not (path / "index.html").is_file():
            self.send_error(404, "not part of the site")  # no listings
            return None
        target = path / "index.html" if path.is_dir() else path
        if target.is_symlink() or (target.exists() and not (target.is_file() and inside(target, root))):
            self.send_error(404, "not part of the site")  # only regular files whose real path is in the site
            return None
        return super().send_head()

    def end_headers(self) -> None:
        for name, value in ISOLATION_HEADERS.items():
            self.send_header(name, value)
        self.send_header("Cross-Origin-Resource-Policy", "same-origin")
        super().end_headers()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass  # requests that succeed are not logged

    def log_error(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        """One line on stderr per failed request (a 404, a malformed request, a client gone)."""
        print(f"mitp bundle serve: {self.address_string()} {(format % args)[:300]!r}", file=sys.stderr)


def site_server(site: Path, host: str = "127.0.0.1", port: int = 8000) -> http.server.ThreadingHTTPServer:
    """A server for `site` (not started); port 0 picks a free one."""
    if not host.strip():
        raise SiteError("--host is empty, which would listen on every interface: name the address (0.0.0.0 for all, on purpose)")
    if not (Path(site) / "site.json").is_file():
        raise SiteError(f"{site} is not a site written by `mitp bundle web` (no site.json)")
    server_class = _IPv6Server if ":" in host else _BoundedServer
    return server_class((host, port), partial(IsolatedHandler, directory=str(site)))


class _BoundedServer(http.server.ThreadingHTTPServer):
    """At most MAX_CONNECTIONS connections at once (more are closed at once), each idle at most
    IsolatedHandler.timeout seconds; a failed request is one line on stderr, never a traceback."""

    daemon_threads = True
    MAX_CONNECTIONS = 64

    def __init__(self, *args: Any, **kwargs: Any):
        self._slots = threading.BoundedSemaphore(self.MAX_CONNECTIONS)
        super().__init__(*args, **kwargs)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)  # full: the client sees the connection closed, the server keeps its threads
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        error = sys.exc_info()[1]
        print(f"mitp bundle serve: request from {client_address[0]} failed: {type(error).__name__}: {error}", file=sys.stderr)


class _IPv6Server(_BoundedServer):
    address_family = socket.AF_INET6
