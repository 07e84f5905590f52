"""fal's status stream, and what a wait learns: when a request completed and how we saw it.

``GET <status_url>/stream`` (server-sent events) sends one ``data:`` JSON status per change and
ends after COMPLETED, so a job sees its completion the moment fal reports it, on one
connection, instead of at its next poll. fal does not document whether a new connection
first repeats the current status, whether a quiet stream gets keep-alives, or how long one
stays open. So (see :meth:`wansweep.fal.queue.FalQueue.wait`):

- a stream that ends before COMPLETED, fails, or stays silent for ``idle`` seconds is
  *broken*: the caller checks status once (a completion the stream missed is found there)
  and reconnects, backing off while breaks repeat;
- 404/405, or an answer that is not an event stream, means the server offers no stream:
  the caller polls.

Every stream of a process lives on one event-loop thread: a stream is open only while its
job waits, so at most one per waiting job, and a stopped run cancels them all at once
(each connection closed), which a thread blocked in a socket read could not do.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import fal_client
import httpx
from httpx_sse import EventSource, SSEError

from wansweep.errors import Stopped


class StreamUnsupported(Exception):
    """The server answered the stream with 404/405 or something other than events."""

    def __init__(self, code: int):
        super().__init__(f"status stream answered {code}")
        self.code = code


class StreamBroken(Exception):
    """The stream ended or failed before COMPLETED. ``events``: how many it delivered."""

    def __init__(self, why: str, events: int = 0):
        super().__init__(why)
        self.events = events


@dataclass(frozen=True)
class Completion:
    """How a wait ended. Times are this machine's clock.

    ``completed_at`` is our best estimate of when fal completed the request: the moment a
    live stream (or fal's webhook) said so, else the middle of the window between the last
    look that saw it unfinished and the look that saw it done; ``uncertainty`` is half that
    window (0 for a live stream or a webhook; None when no earlier look bounds it, e.g. a
    request taken over from an earlier run). ``detected_at`` is when this process knew."""

    status: fal_client.Completed
    detected_at: float
    completed_at: float
    uncertainty: float | None
    via: str  # "stream", "webhook" or "poll"

    @classmethod
    def between(cls, status: fal_client.Completed, after: float | None, via: str) -> Completion:
        """Seen done now, last seen unfinished at ``after`` (None: never)."""
        now = time.time()
        if after is None:
            return cls(status, now, now, None, via)
        return cls(status, now, (after + now) / 2, round((now - after) / 2, 3), via)


Parse = Callable[[Any], fal_client.Status]

# seconds a stream may take to end after COMPLETED before it is cut: a server that ends it
# sends the end with COMPLETED; one that holds it open costs each job no more than this
DRAIN = 0.5


class StatusStreams:
    """Thread-safe: every status stream of a process, on one event-loop thread."""

    def __init__(self, headers: dict[str, str], stop: threading.Event, idle: float = 30.0):
        self._headers, self._stop, self.idle = headers, stop, idle
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: httpx.AsyncClient | None = None
        self._pending: set[concurrent.futures.Future] = set()
        self._lock = threading.Lock()

    def follow(self, status_url: str, parse: Parse) -> Completion:
        """Block until the stream reports COMPLETED. Raises :class:`StreamBroken`,
        :class:`StreamUnsupported`, or :class:`Stopped` when the run is cancelled."""
        future = asyncio.run_coroutine_threadsafe(self._follow(status_url, parse), self._start())
        with self._lock:
            self._pending.add(future)
        if self._stop.is_set():  # a stop that came before the future was registered
            future.cancel()
        try:
            return future.result()
        except concurrent.futures.CancelledError:
            raise Stopped("run cancelled") from None
        finally:
            with self._lock:
                self._pending.discard(future)

    def cancel_all(self) -> None:
        """Close every open stream (the run was stopped); their waiters raise Stopped."""
        with self._lock:
            pending = list(self._pending)
        for future in pending:
            future.cancel()

    def close(self) -> None:
        self.cancel_all()
        loop, client = self._loop, self._client
        if loop is None:
            return
        if client is not None:
            asyncio.run_coroutine_threadsafe(client.aclose(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)

    def _start(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                threading.Thread(
                    target=loop.run_forever, name="wansweep-status-streams", daemon=True
                ).start()
                self._loop = loop
            return self._loop

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:  # made on the loop's thread, used only there
            self._client = httpx.AsyncClient(
                headers=self._headers,
                # A read waits at most ``idle`` s for an event or a keep-alive: a silent
                # stream is treated as broken, so a stalled connection cannot hide a completion.
                timeout=httpx.Timeout(10.0, read=self.idle),
                limits=httpx.Limits(max_connections=None, max_keepalive_connections=16),
                follow_redirects=True,
            )
        return self._client

    async def _follow(self, status_url: str, parse: Parse) -> Completion:
        events = 0
        try:
            async with self._http().stream(
                "GET", status_url + "/stream", params={"logs": "0"}
            ) as response:
                if response.status_code in (404, 405):
                    raise StreamUnsupported(response.status_code)
                if response.status_code != 200:
                    raise StreamBroken(f"status stream answered {response.status_code}")
                stream = EventSource(response).aiter_sse()
                async for event in stream:
                    status = parse(json.loads(event.data))
                    events += 1
                    if isinstance(status, fal_client.Completed):
                        now = time.time()
                        await _read_to_end(stream)
                        return Completion(status, now, now, 0.0, "stream")
        except SSEError:  # 200 but not text/event-stream: not a stream this server offers
            raise StreamUnsupported(200) from None
        except httpx.TransportError as exc:
            raise StreamBroken(f"{type(exc).__name__}: {exc}", events) from exc
        except (ValueError, KeyError, TypeError) as exc:
            raise StreamBroken(f"unreadable status event: {exc}", events) from exc
        raise StreamBroken("the stream ended before COMPLETED", events)


async def _read_to_end(stream: Any) -> None:
    """Read what follows COMPLETED, up to the stream's end: a response read to its end leaves
    its connection to the next job's stream, where one left unread is closed (a TCP and TLS
    handshake per job, on both sides). fal ends the stream after COMPLETED; a server that
    holds it open is cut after ``DRAIN`` seconds. The completion is known already: nothing
    read or failing here changes it."""
    try:
        async with asyncio.timeout(DRAIN):
            async for _ in stream:
                pass
    except (TimeoutError, httpx.HTTPError, SSEError):
        pass
