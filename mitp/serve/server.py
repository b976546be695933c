"""`mitp serve`: bundles behind KServe's model server (the Open Inference Protocol, REST and gRPC).

KServe gives the protocol's routes, health, model metadata, Prometheus metrics at /metrics and a
graceful shutdown (on SIGTERM uvicorn stops accepting, finishes the requests in flight within the grace
period, and the process exits 0). mitp adds what is its own: each bundle verified against its test vectors
and warmed up before it is registered (a bundle that fails is not served; the server says why and serves
the rest), dynamic batching per model (mitp.serve.batcher), the body limit, request counts and access log
(mitp.serve.guard), and a 503 with Retry-After when a model's queue is full. KServe binds every interface;
here the REST server binds `host` (loopback unless told otherwise).
"""

from __future__ import annotations

import asyncio
import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from http import HTTPStatus

from ..errors import MitpError
from .batcher import Overloaded
from .guard import RequestGuard
from .metrics import ServeMetrics
from .model import BundleModel, BundleNotServed
from .protocol import BytesDataPlane

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
    """Refuse what cannot be served as asked, before any bundle loads."""
    if listen.grpc_port is not None:
        raise ServeError("--grpc-port: gRPC is not served yet (KServe 0.21's gRPC path fails every inference of these outputs); use HTTP")


def serve(models: Sequence[BundleModel], listen: Listen = Listen()) -> None:
    """Serve `models` (loaded, ready) until SIGTERM or SIGINT; returns after a graceful shutdown."""
    check_listen(listen)
    from kserve import ModelServer, model_server
    from kserve.errors import InvalidInput, ModelNotFound
    from kserve.protocol.rest.server import RESTServer
    from starlette.responses import JSONResponse

    logging.getLogger("kserve.trace").setLevel(logging.WARNING)  # KServe's per-request timing lines
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)  # mitp.serve.access has one line per request
    warnings.filterwarnings("ignore", message="ORJSONResponse is deprecated")  # KServe's, on every response
    app = model_server.app  # KServe's FastAPI app, which its REST server serves
    app.add_middleware(RequestGuard, max_body_bytes=listen.max_body_bytes, models=[m.name for m in models], metrics=ServeMetrics())

    async def bad_input(_request, exc: Exception) -> JSONResponse:  # the client's error: its access-log line says enough
        return JSONResponse({"error": str(exc)}, status_code=HTTPStatus.BAD_REQUEST)

    async def not_found(_request, exc: Exception) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, status_code=HTTPStatus.NOT_FOUND)

    async def overloaded(_request, exc: Exception) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, status_code=HTTPStatus.SERVICE_UNAVAILABLE, headers={"Retry-After": "1"})

    class Rest(RESTServer):
        def _add_exception_handlers(self, app) -> None:  # KServe's, but a client's bad input logs no traceback
            super()._add_exception_handlers(app)
            app.add_exception_handler(InvalidInput, bad_input)
            app.add_exception_handler(ModelNotFound, not_found)
            app.add_exception_handler(Overloaded, overloaded)

    class Server(ModelServer):
        def __init__(self, **kwargs: object):
            super().__init__(**kwargs)
            self.dataplane = BytesDataPlane(model_registry=self.registered_models)

        def start(self, models: list) -> None:  # ModelServer.start for one process, with the REST host ours
            self._register_and_check_atleast_one_model_is_ready(models)
            self._rest_server = Rest(
                model_server.FASTAPI_APP_IMPORT_STRING, self.dataplane, self.model_repository_extension, self.http_port,
                grace_period=self.grace_period, event_loop=self.event_loop, timeout_keep_alive=self.timeout_keep_alive,
            )
            self._rest_server.config.host = listen.host
            self._rest_server.config.limit_concurrency = listen.max_connections
            self.servers.append(self._rest_server.start())
            self.setup_event_loop()
            self.register_signal_handler()
            asyncio.run(self._serve())

    server = Server(
        http_port=listen.port, enable_grpc=False,
        grace_period=listen.grace_seconds, enable_docs_url=False, enable_latency_logging=False, workers=1,
    )
    server.start(list(models))
