"""How ``vprdistill serve`` runs the app: uvicorn over h11, with connection limits and timeouts.

uvicorn on its own times out a connection only once it has answered a request
on it (``timeout_keep_alive``): a client that connects and sends nothing, or
sends a request a byte at a time, holds its connection open for ever. Here
every request must arrive in full within ``request_timeout`` seconds of the
connection opening (or of the previous answer on it); a connection that misses
the deadline gets 408 if it has not sent its request head, and is closed.
"""

from __future__ import annotations

import asyncio
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from vprdistill.serve.limits import KEEP_ALIVE_S, MAX_CONNECTIONS, MAX_HEADER_BYTES, REQUEST_TIMEOUT_S


class RequestDeadlineProtocol(H11Protocol):
    """uvicorn's h11 protocol, closing connections whose request does not arrive within ``request_timeout``."""

    request_timeout: float = REQUEST_TIMEOUT_S

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._deadline: asyncio.TimerHandle | None = None
        self._arm_deadline()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm_deadline()  # the next request on this connection gets a deadline of its own

    def connection_lost(self, exc: Exception | None) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        super().connection_lost(exc)

    def _arm_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        self._deadline = self.loop.call_later(self.request_timeout, self._deadline_passed)

    def _deadline_passed(self) -> None:
        self._deadline = None
        if self.transport.is_closing() or self.conn.their_state not in (h11.IDLE, h11.SEND_BODY):
            return  # closed already, or the request is in: the app is answering it, at its own pace
        if self.conn.their_state is h11.IDLE and self.conn.our_state is h11.IDLE:
            body = b"request not received in time\n"
            headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"connection", b"close")]
            try:
                self.transport.write(self.conn.send(h11.Response(status_code=408, headers=headers)))
                self.transport.write(self.conn.send(h11.Data(data=body)))
                self.transport.write(self.conn.send(h11.EndOfMessage()))
            except h11.LocalProtocolError:
                pass  # h11 refuses to answer in this state: closing is all that is left
        # A request cut off mid-body: closing tells the app (its receive() reports a disconnect).
        self.transport.close()


def server_config(
    app: Any,
    host: str = "127.0.0.1",
    port: int = 8000,
    request_timeout: float = REQUEST_TIMEOUT_S,
    max_connections: int = MAX_CONNECTIONS,
    log_level: str = "info",
) -> uvicorn.Config:
    """The uvicorn configuration of the service (``uvicorn.Server(server_config(app)).run()``)."""
    if request_timeout <= 0 or max_connections < 1:
        raise ValueError(
            f"request_timeout and max_connections must be positive, got {request_timeout}, {max_connections}"
        )
    # uvicorn builds the protocol from its class, so the timeout travels as a class attribute.
    protocol = type("RequestDeadlineProtocol", (RequestDeadlineProtocol,), {"request_timeout": float(request_timeout)})
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        http=protocol,
        timeout_keep_alive=KEEP_ALIVE_S,
        h11_max_incomplete_event_size=MAX_HEADER_BYTES,
        limit_concurrency=max_connections,
        log_level=log_level,
    )
