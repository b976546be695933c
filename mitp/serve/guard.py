"""The outermost layer of the HTTP server (ASGI middleware): body limit, request counts, access log.

A request body over the limit is refused with 413 before it is read whole: at once from its
Content-Length, or as soon as a chunked body passes the limit. A body that has not all arrived within the
read deadline is answered 408, so a client that trickles its body cannot hold a connection for ever (the
headers have their deadline in mitp.serve.connections). Every request to a model's routes is
counted by model and status (mitp_requests_total), and every request gets one access-log line: client,
method, path, status, body bytes and milliseconds; never a caption's text or an image.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Collection, MutableMapping
from typing import Any

from .metrics import ServeMetrics

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

access_log = logging.getLogger("mitp.serve.access")
CLOSED_ROUTES = ("/v2/repository", "/v1/")  # models are chosen on the command line, never over the network
BODY_METHODS = ("POST", "PUT", "PATCH")


class BodyTooLarge(Exception):
    pass


class RequestGuard:
    def __init__(self, app: ASGIApp, max_body_bytes: int, models: Collection[str], metrics: ServeMetrics | None = None, read_seconds: float = 60.0):
        self.app, self.max_body_bytes, self.models = app, max_body_bytes, set(models)
        self.metrics = metrics or ServeMetrics()
        self.read_seconds = read_seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, state = time.monotonic(), {"status": 500, "bytes": 0}
        path = scope.get("path", "")
        if path.startswith(CLOSED_ROUTES) or "/versions/" in path:  # and model versions, which are not served
            state["status"] = 404
            await _error(send, 404, "not a route of this server")  # KServe's model repository: load and unload by anyone
            self._record(scope, state, time.monotonic() - started)
            return
        try:
            declared = _content_length(scope)
            if declared is not None and declared > self.max_body_bytes:
                raise BodyTooLarge
            if scope["method"] in BODY_METHODS:
                async with asyncio.timeout(self.read_seconds):
                    receive = await self._bounded(receive, state)

            async def send_status(message: Message) -> None:
                if message["type"] == "http.response.start":
                    state["status"], state["started"] = message["status"], 1
                await send(message)

            await self.app(scope, receive, send_status)
        except BodyTooLarge:
            state["status"] = 413
            await _error(send, 413, f"the request body is over this server's limit of {self.max_body_bytes:,} bytes: send fewer or smaller images per request")
        except TimeoutError:
            state["status"] = 408
            await _error(send, 408, f"the request body did not all arrive within {self.read_seconds:g} s")
        except asyncio.CancelledError:  # uvicorn ends what the grace period did not finish: said, not a traceback
            if state["status"] == 500 and not state.get("started"):
                state["status"] = 503
                await _error(send, 503, "the server is shutting down: retry on another replica", [(b"retry-after", b"1")])
        finally:
            self._record(scope, state, time.monotonic() - started)

    async def _bounded(self, receive: Receive, state: dict[str, int]) -> Receive:
        """The body read whole up to the limit (BodyTooLarge past it), then replayed to the app."""
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                raise BodyTooLarge
            chunks.append(chunk)
            more = message.get("more_body", False)
        state["bytes"] = size
        body, sent = b"".join(chunks), False

        async def replay() -> Message:
            nonlocal sent
            if sent:
                return await receive()  # a disconnect, after the body
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        return replay

    def _record(self, scope: Scope, state: dict[str, int], seconds: float) -> None:
        path = scope.get("path", "")
        model = _model_of(path)
        if model is not None:
            self.metrics.requests.labels(model if model in self.models else "(unknown)", str(state["status"])).inc()
        client = scope.get("client") or ("-", 0)
        shown = path.encode("unicode_escape").decode("ascii")[:300]  # a newline or escape in a URL cannot forge a log line
        access_log.info("%s %s %s %d %dB %.1fms", client[0], scope.get("method", "-"), shown, state["status"], state["bytes"], 1000 * seconds)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _model_of(path: str) -> str | None:
    """`x` for /v2/models/x and /v2/models/x/..., None for the server's own routes."""
    parts = path.split("/")
    return parts[3] if len(parts) > 3 and parts[1] == "v2" and parts[2] == "models" and parts[3] else None


async def _error(send: Send, status: int, message: str, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    body = json.dumps({"error": message}).encode()
    head = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), (b"connection", b"close")]
    await send({"type": "http.response.start", "status": status, "headers": head + (headers or [])})
    await send({"type": "http.response.body", "body": body})
