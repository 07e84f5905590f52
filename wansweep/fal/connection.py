"""One authenticated connection to fal per process: configuration, the HTTP client, and the
retry loop that every idempotent call goes through (decisions in :mod:`wansweep.fal.policy`)."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import fal_client
import httpx

from wansweep import __version__
from wansweep.errors import FalUnavailable, Stopped
from wansweep.fal import policy

T = TypeVar("T")


@dataclass(frozen=True)
class FalConfig:
    queue_base: str  # e.g. https://queue.fal.run
    api_base: str  # e.g. https://api.fal.ai/v1
    key: str
    # an endpoint's OpenAPI document (?endpoint_id=...), as fal's model pages name it
    openapi_url: str = "https://fal.ai/api/openapi/queue/openapi.json"

    @classmethod
    def from_env(cls) -> FalConfig:
        key = os.environ.get("FAL_KEY") or (
            f"{os.environ['FAL_KEY_ID']}:{os.environ['FAL_KEY_SECRET']}"
            if os.environ.get("FAL_KEY_ID") and os.environ.get("FAL_KEY_SECRET")
            else ""
        )
        if not key:
            raise RuntimeError(
                "FAL_KEY is not set: export FAL_KEY, or run against the local server"
            )
        run_host = os.environ.get("FAL_RUN_HOST", "fal.run")
        queue_host = os.environ.get("FAL_QUEUE_RUN_HOST", f"queue.{run_host}")
        api = os.environ.get("WANSWEEP_FAL_API_URL", "https://api.fal.ai/v1")
        openapi = os.environ.get("WANSWEEP_FAL_OPENAPI_URL", cls.openapi_url)
        return cls(f"https://{queue_host}", api.rstrip("/"), key, openapi)


def detail(response: httpx.Response) -> str:
    """fal's error text of an answer (its ``detail``, 422 details joined), at most 300 chars."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:300]
    found = body.get("detail", body) if isinstance(body, dict) else body
    if isinstance(found, list):
        return "; ".join(
            f"{'.'.join(str(x) for x in d.get('loc', [])[1:]) or 'input'}: {d.get('msg')}"
            if isinstance(d, dict)
            else str(d)
            for d in found
        )
    return str(found)[:300]


class Connection:
    """Thread-safe: the HTTP client, the run's stop event and the retry loop."""

    def __init__(
        self,
        config: FalConfig,
        *,
        max_connections: int = 64,
        stop: threading.Event | None = None,
        attempts: int = policy.RETRIES.http_tries,
        backoff: float = policy.RETRIES.backoff_s,
        max_backoff: float = policy.RETRIES.max_backoff_s,
    ):
        self.config = config
        self.stop = stop or threading.Event()
        self.attempts, self.backoff, self.max_backoff = attempts, backoff, max_backoff
        self.http = httpx.Client(
            headers={
                "Authorization": f"Key {config.key}",
                "User-Agent": f"wansweep/{__version__} fal-client/{fal_client.__version__}",
            },
            timeout=httpx.Timeout(60.0, connect=10.0),
            limits=httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            ),
            follow_redirects=True,
            event_hooks={"response": [self._read_clock]},
        )
        self.clock_offset: float | None = None  # fal's clock minus ours, from Date headers
        # Videos come from fal's CDN (public URLs): the key is never sent with them, so a
        # result naming another host cannot collect it.
        self.cdn = httpx.Client(
            headers={"User-Agent": f"wansweep/{__version__}"},
            timeout=httpx.Timeout(60.0, connect=10.0),
            limits=httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            ),
            follow_redirects=True,
        )

    def _read_clock(self, response: httpx.Response) -> None:
        """Learn fal's time from its ``Date`` header, so windows in fal's records are set on
        fal's clock: a client clock minutes off cannot hide a request or lose one."""
        date = response.headers.get("date")
        if not date:
            return
        try:
            from email.utils import parsedate_to_datetime

            offset = parsedate_to_datetime(date).timestamp() - time.time()
        except (TypeError, ValueError):
            return
        self.clock_offset = offset  # 1 s resolution: windows keep a margin for it

    def fal_time(self, local: float) -> float:
        """A moment of this machine's clock, on fal's clock (as far as fal has told us)."""
        return local + (self.clock_offset or 0.0)

    def close(self) -> None:
        self.http.close()
        self.cdn.close()

    def sleep(self, seconds: float) -> None:
        """Wait, unless the run is cancelled first (then :class:`Stopped`)."""
        if self.stop.wait(seconds):
            raise Stopped("run cancelled")

    def pause_before_retry(self, attempt: int, headers: Any = None) -> None:
        self.sleep(
            policy.backoff(attempt, policy.retry_after(headers), self.backoff, self.max_backoff)
        )

    def send(
        self,
        what: str,
        call: Callable[[], httpx.Response],
        retry: Callable[[httpx.Response], bool] = lambda r: policy.retry_idempotent(r.status_code),
    ) -> httpx.Response:
        """An idempotent request, repeated on transport errors and on answers ``retry`` names.
        Returns the last answer (any status); :class:`FalUnavailable` when no try got one."""
        for attempt in range(self.attempts):
            try:
                response = call()
            except httpx.TransportError as exc:
                if attempt == self.attempts - 1:
                    raise FalUnavailable(f"{what}: {type(exc).__name__}: {exc}") from exc
                self.pause_before_retry(attempt)
                continue
            if not retry(response) or attempt == self.attempts - 1:
                return response
            self.pause_before_retry(attempt, response.headers)
        raise AssertionError("unreachable")

    def with_retries(self, what: str, call: Callable[[], T]) -> T:
        """A fal-client call (status, cancel), repeated on fal-client's own HTTP errors that the
        policy deems transient and on transport errors."""
        for attempt in range(self.attempts):
            try:
                return call()
            except fal_client.client.FalClientHTTPError as exc:
                if not policy.retry_idempotent(exc.status_code) or attempt == self.attempts - 1:
                    raise
                self.pause_before_retry(attempt, exc.response_headers)
            except httpx.TransportError as exc:
                if attempt == self.attempts - 1:
                    raise FalUnavailable(f"{what}: {type(exc).__name__}: {exc}") from exc
                self.pause_before_retry(attempt)
        raise AssertionError("unreachable")
