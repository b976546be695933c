"""A deadline on each request's headers, which uvicorn does not set.

Without one, a client that opens connections and sends their headers a byte at a time (slowloris) holds
every connection slot until the server answers even its health probes with 503. uvicorn's h11 protocol
is kept whole; this subclass only closes a connection that has not sent a complete request's headers
within `header_seconds` of opening, or that has begun the next request's headers and not finished them
within `header_seconds` of its last response. An idle keep-alive connection is left to uvicorn's own
keep-alive timeout. The body has its own deadline (mitp.serve.guard).
"""

from __future__ import annotations

import asyncio

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol


class HeaderDeadline(H11Protocol):
    header_seconds: float = 30.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._answered = False
        self._deadline: asyncio.TimerHandle | None = None
        self._arm()

    def on_response_complete(self) -> None:
        self._answered = True
        super().on_response_complete()
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        super().connection_lost(exc)

    def _arm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        self._deadline = self.loop.call_later(self.header_seconds, self._headers_late)

    def _headers_late(self) -> None:
        waiting = self.conn.their_state is h11.IDLE  # no request's headers complete since the last response
        started = bool(self.conn.trailing_data[0])  # some of the next request's bytes have come
        if waiting and (started or not self._answered) and not self.transport.is_closing():
            self.transport.close()


def with_header_deadline(seconds: float) -> type[HeaderDeadline]:
    """The protocol class for uvicorn's `http` setting, with its deadline."""
    return type("HeaderDeadline", (HeaderDeadline,), {"header_seconds": seconds})
