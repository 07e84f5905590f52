"""A small ASGI app served by uvicorn in a thread of its own (fal's webhooks, the review page),
on a socket bound by the caller (so port 0 gives a free port the caller knows at once)."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

IDLE_S = 10.0  # a connection that says nothing for this long is closed


def bind(host: str, port: int) -> socket.socket:
    """A listening address of our own (``OSError`` when it cannot be had)."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    return sock


def serve_in_thread(app: Any, sock: socket.socket, name: str, **config: Any) -> Any:
    """Start serving ``app`` on ``sock``; returns the uvicorn server once it accepts (set its
    ``should_exit`` to stop it). Idle connections are closed after :data:`IDLE_S`, those that
    never send a request included (uvicorn's own keep-alive timer starts only after a
    response: a client that connects and says nothing would hold its connection for ever)."""
    import uvicorn
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class IdleClosing(H11Protocol):
        def connection_made(self, transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self.timeout_keep_alive_task = self.loop.call_later(
                self.timeout_keep_alive, self.timeout_keep_alive_handler
            )

    server = uvicorn.Server(
        uvicorn.Config(
            app,
            http=IdleClosing,
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_keep_alive=int(IDLE_S),
            **config,
        )
    )
    threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name=name, daemon=True).start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.01)
    return server
