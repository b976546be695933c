"""A loopback HTTP server that stands in for the download hosts (and later a model hub): no network."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Route:
    """What one path answers: `body` with `status` and `headers`. A 200 answers a Range request with a 206
    from the asked offset; `cut` closes the connection after that many body bytes (a broken link)."""

    body: bytes = b""
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    cut: int | None = None
    reply: Callable[[bytes], bytes] | None = None  # a POST's answer, computed from its body


class Loopback:
    """A server on 127.0.0.1 with a free port: set `routes[path]`, read `requests` (path, headers) and the
    POSTs' `bodies` (path, body) after."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.bodies: list[tuple[str, bytes]] = []
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.loopback = self  # type: ignore[attr-defined]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def seen(self, header: str) -> list[tuple[str, str | None]]:
        """(path, value of `header`) of every request so far."""
        return [(path, headers.get(header)) for path, headers in self.requests]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        loopback: Loopback = self.server.loopback  # type: ignore[attr-defined]
        loopback.requests.append((self.path, dict(self.headers.items())))
        route = loopback.routes.get(self.path, Route(b"not found", status=404))
        body, status = route.body, route.status
        if status == 200 and "Range" in self.headers:
            body, status = body[int(self.headers["Range"].split("=")[1].split("-")[0]) :], 206
        self._answer(status, route.headers, body, route.cut)

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        loopback: Loopback = self.server.loopback  # type: ignore[attr-defined]
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        loopback.requests.append((self.path, dict(self.headers.items())))
        loopback.bodies.append((self.path, body))
        route = loopback.routes.get(self.path, Route(b"not found", status=404))
        self._answer(route.status, {"Content-Type": "application/json", **route.headers}, route.reply(body) if route.reply else route.body)

    def _answer(self, status: int, headers: dict[str, str], body: bytes, cut: int | None = None) -> None:
        """Status, headers, the body's length and the body (only its first `cut` bytes, then the connection closes)."""
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body if cut is None else body[:cut])
        if cut is not None:
            self.wfile.flush()
            self.close_connection = True

    def log_message(self, *args: object) -> None:
        pass
