"""`mitp serve`: bundles behind KServe's model server (the Open Inference Protocol, REST and gRPC).

KServe gives the protocol's routes, health, model metadata, Prometheus metrics at /metrics and a
graceful shutdown (on SIGTERM uvicorn stops accepting, finishes the requests in flight within the grace
period, and the process exits 0). mitp adds what is its own: each bundle verified against its test vectors
and warmed up before it is registered (a bundle that fails is not served; the server says why and serves
the rest), dynamic batching per model (mitp.serve.batcher), the body limit, request counts and access log
(mitp.serve.guard), deadlines on a request's headers and body, and a 503 with Retry-After when a model's
queue is full. The infer route is mitp's (mitp.serve.protocol reads the request, so that a malformed one
is a 400 with one line, never a traceback or the body echoed back); KServe's data plane runs it. KServe
binds every interface; here the REST server binds `host` (loopback unless told otherwise).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from http import HTTPStatus

import orjson
from fastapi.exceptions import RequestValidationError
from kserve import ModelServer, model_server
from kserve.constants.constants import INFERENCE_CONTENT_LENGTH_HEADER
from kserve.errors import InvalidInput, ModelNotFound, ModelNotReady
from kserve.protocol.rest.server import RESTServer
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..errors import MitpError
from .batcher import Overloaded
from .connections import with_header_deadline
from .guard import RequestGuard
from .metrics import ServeMetrics
from .model import BundleModel, BundleNotServed
from .protocol import parse_request

log = logging.getLogger("mitp.serve")


class ServeError(MitpError):
    """Nothing could be served, or the options cannot work together."""


@dataclass(frozen=True)
class Listen:
    host: str = "127.0.0.1"
    port: int = 8080
    grpc_port: int | None = None  # refused for now: KServe 0.21's gRPC fails these outputs
    grace_seconds: int = 30
    max_body_bytes: int = 64 * 2**20
    read_seconds: float = 60.0  # for a request's headers, and again for its body
    max_connections: int = 1024  # past it uvicorn answers 503 at once


def load_models(models: Sequence[BundleModel], say=log.warning) -> list[BundleModel]:
    """The models that verified and warmed up; each one that did not is said, with why."""
    ready = []
    for model in models:
        try:
            model.load()
        except (BundleNotServed, MitpError, OSError) as err:
            say(f"not serving {model.name}: {err}")
            continue
        ready.append(model)
    if not ready:
        raise ServeError("no bundle could be served (each reason is above)")
    return ready


def check_listen(listen: Listen) -> None:
    """Refuse what cannot be served as asked, before any bundle loads: gRPC, and an address that cannot be
    bound (a port in use, a host that is not this machine's)."""
    if listen.grpc_port is not None:
        raise ServeError("--grpc-port: gRPC is not served yet (KServe 0.21's gRPC path fails every inference of these outputs); use HTTP")
    if not listen.host.strip():  # the resolver reads "" as every interface
        raise ServeError("--host is empty: give an address (127.0.0.1, or 0.0.0.0 for every interface)")
    try:
        found = socket.getaddrinfo(listen.host, listen.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as err:
        raise ServeError(f"--host {listen.host!r} is not an address or a name of this machine ({err})") from None
    family, kind, proto, _, address = found[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            probe.bind(address)
        except OSError as err:
            why = "the port is in use" if err.errno == errno.EADDRINUSE else err.strerror
            raise ServeError(f"cannot listen on {listen.host}:{listen.port}: {why}") from None


def serve(models: Sequence[BundleModel], listen: Listen = Listen()) -> None:
    """Serve `models` (loaded, ready) until SIGTERM or SIGINT; returns after a graceful shutdown."""
    check_listen(listen)

    logging.getLogger("kserve.trace").setLevel(logging.WARNING)  # KServe's per-request timing lines
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)  # mitp.serve.access has one line per request
    warnings.filterwarnings("ignore", message="ORJSONResponse is deprecated")  # KServe's, on every response
    app = model_server.app  # KServe's FastAPI app, which its REST server serves
    guard = {"max_body_bytes": listen.max_body_bytes, "read_seconds": listen.read_seconds, "metrics": ServeMetrics()}
    app.add_middleware(RequestGuard, models=[m.name for m in models], **guard)
    by_name = {m.name: m for m in models}

    async def infer(request: Request, model_name: str) -> Response:
        """POST /v2/models/{model_name}/infer, read by mitp.serve.protocol and run by KServe's data plane."""
        model = by_name.get(model_name)
        if model is None:
            raise ModelNotFound(model_name)
        if not model.ready:  # shutting down
            raise ModelNotReady(model_name)
        body = await request.body()  # read whole, within the limits, by the guard
        parsed = parse_request(body, request.headers.get(INFERENCE_CONTENT_LENGTH_HEADER), model_name, model.batching.max_queue)
        response, _ = await server.dataplane.infer(model_name=model_name, request=parsed, headers=dict(request.headers))
        content, json_length = response.to_rest()
        if isinstance(content, bytes):
            return Response(content, media_type="application/octet-stream", headers={INFERENCE_CONTENT_LENGTH_HEADER: str(json_length)})
        return Response(orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY), media_type="application/json")

    async def bad_input(_request, exc: Exception) -> JSONResponse:  # the client's error: its access-log line says enough
        return JSONResponse({"error": str(exc)}, status_code=HTTPStatus.BAD_REQUEST)

    async def bad_request(_request, exc: RequestValidationError) -> JSONResponse:  # FastAPI's 422 would echo the body
        first = (exc.errors() or [{}])[0]
        where = ".".join(str(part) for part in first.get("loc", ())) or "the request"
        return JSONResponse({"error": f"{where}: {first.get('msg', 'not a valid request')}"}, status_code=HTTPStatus.BAD_REQUEST)

    async def not_found(_request, exc: Exception) -> JSONResponse:
        return JSONResponse({"error": str(exc)[:300]}, status_code=HTTPStatus.NOT_FOUND)

    async def http_error(_request, exc: StarletteHTTPException) -> JSONResponse:  # FastAPI's {"detail": ...}, as ours
        return JSONResponse({"error": str(exc.detail)[:300]}, status_code=exc.status_code, headers=exc.headers)

    async def overloaded(_request, exc: Exception) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, status_code=HTTPStatus.SERVICE_UNAVAILABLE, headers={"Retry-After": "1"})

    class Rest(RESTServer):
        def _register_endpoints(self, app) -> None:  # mitp's infer route first: FastAPI takes the first match
            app.add_api_route("/v2/models/{model_name}/infer", infer, methods=["POST"])
            super()._register_endpoints(app)

        def _add_exception_handlers(self, app) -> None:  # KServe's, but a client's bad input logs no traceback
            super()._add_exception_handlers(app)
            app.add_exception_handler(InvalidInput, bad_input)
            app.add_exception_handler(RequestValidationError, bad_request)
            app.add_exception_handler(StarletteHTTPException, http_error)
            app.add_exception_handler(ModelNotFound, not_found)
            app.add_exception_handler(Overloaded, overloaded)

    class Server(ModelServer):
        def start(self, models: list) -> None:  # ModelServer.start for one process, with the REST host ours
            self._register_and_check_atleast_one_model_is_ready(models)
            self._rest_server = Rest(
                model_server.FASTAPI_APP_IMPORT_STRING, self.dataplane, self.model_repository_extension, self.http_port,
                grace_period=self.grace_period, event_loop=self.event_loop, timeout_keep_alive=self.timeout_keep_alive,
            )
            config = self._rest_server.config
            config.host, config.limit_concurrency = listen.host, listen.max_connections
            config.http = with_header_deadline(listen.read_seconds)
            self.servers.append(self._rest_server.start())
            self.setup_event_loop()
            self.register_signal_handler()
            try:
                asyncio.run(self._serve())
            finally:
                for model in models:
                    model.close()

    server = Server(
        http_port=listen.port, enable_grpc=False,
        grace_period=listen.grace_seconds, enable_docs_url=False, enable_latency_logging=False, workers=1,
    )
    server.start(list(models))
