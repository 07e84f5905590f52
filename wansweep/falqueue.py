"""The one place that talks to fal.

Why submit is our own POST: fal-client re-POSTs a submit after a transport error or a
timeout, and fal's queue has no idempotency key, so one lost answer can mean two paid
jobs. Here a submit is retried only when fal certainly did not accept it (connection
refused, 429, 5xx other than a gateway timeout). When the answer was lost after the
request went out, :class:`AmbiguousSubmit` is raised and the caller reconciles through
fal's request listing before deciding anything. Status, result and cancel go through
fal-client's own :class:`fal_client.SyncRequestHandle`.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import fal_client
import httpx

from wansweep import __version__
from wansweep.webhooks import WebhookReceiver

T = TypeVar("T")
TRANSIENT_CODES = {408, 429, 500, 502, 503, 504}


class FalError(Exception):
    """A job-level failure. ``kind``: invalid (422, never retried), failed (generation failed,
    not billed, may be retried), expired (result gone), cancelled, rejected (other 4xx), transient."""

    def __init__(self, message: str, kind: str, status_code: int | None = None):
        super().__init__(message)
        self.kind, self.status_code = kind, status_code


class AmbiguousSubmit(Exception):
    """The submit went out but its answer was lost: fal may or may not hold the job."""


class Stopped(Exception):
    """The run was cancelled while this job waited."""


@dataclass(frozen=True)
class FalConfig:
    queue_base: str  # e.g. https://queue.fal.run
    api_base: str  # e.g. https://api.fal.ai/v1
    key: str

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
        return cls(f"https://{queue_host}", api.rstrip("/"), key)


@dataclass(frozen=True)
class Handle:
    request_id: str
    response_url: str
    status_url: str
    cancel_url: str


def body_digest(body: dict[str, Any]) -> str:
    """Digest of a request body; matches a listed request's json_input to our submit."""
    return hashlib.sha256(
        json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()


def _retry_after(response: httpx.Response | None) -> float | None:
    if response is None:
        return None
    value = response.headers.get("retry-after")
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:300]
    detail = body.get("detail", body) if isinstance(body, dict) else body
    if isinstance(detail, list):
        return "; ".join(
            f"{'.'.join(str(x) for x in d.get('loc', [])[1:]) or 'input'}: {d.get('msg')}"
            if isinstance(d, dict)
            else str(d)
            for d in detail
        )
    return str(detail)


class FalQueue:
    """Thread-safe: one per process, shared by every job."""

    def __init__(
        self,
        config: FalConfig,
        *,
        max_connections: int = 64,
        stop: threading.Event | None = None,
        attempts: int = 8,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        webhooks: WebhookReceiver | None = None,
    ):
        self.config = config
        self.stop = stop or threading.Event()
        self.webhooks = webhooks
        self._closed = threading.Event()
        if webhooks is not None:
            threading.Thread(target=self._wake_waiters_on_stop, daemon=True).start()
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
        )

    def close(self) -> None:
        self._closed.set()
        self.http.close()

    def _wake_waiters_on_stop(self) -> None:
        while not self._closed.is_set():
            if self.stop.wait(1.0):
                self.webhooks.wake_all()
                return

    # ------------------------------------------------------------- helpers
    def _sleep(self, seconds: float) -> None:
        if self.stop.wait(seconds):
            raise Stopped("run cancelled")

    def _delay(self, attempt: int, response: httpx.Response | None = None) -> float:
        hinted = _retry_after(response)
        base = min(self.max_backoff, self.backoff * 2**attempt) * random.uniform(0.5, 1.5)
        return max(hinted or 0.0, base)

    def _retrying(self, what: str, call: Callable[[], T]) -> T:
        """Retry an idempotent call on 429, 5xx and transport errors, honouring Retry-After."""
        for attempt in range(self.attempts):
            try:
                return call()
            except fal_client.client.FalClientHTTPError as exc:
                if exc.status_code not in TRANSIENT_CODES or attempt == self.attempts - 1:
                    raise
                self._sleep(self._delay(attempt, exc.response))
            except httpx.TransportError as exc:
                if attempt == self.attempts - 1:
                    raise FalError(f"{what}: {type(exc).__name__}: {exc}", "transient") from exc
                self._sleep(self._delay(attempt))
        raise AssertionError("unreachable")

    def _handle(self, h: Handle) -> fal_client.SyncRequestHandle:
        return fal_client.SyncRequestHandle(
            request_id=h.request_id,
            response_url=h.response_url,
            status_url=h.status_url,
            cancel_url=h.cancel_url,
            client=self.http,
        )

    def handle_for(self, endpoint: str, request_id: str) -> Handle:
        app = "/".join(endpoint.split("/")[:2])
        base = f"{self.config.queue_base}/{app}/requests/{request_id}"
        return Handle(request_id, base, base + "/status", base + "/cancel")

    # -------------------------------------------------------------- submit
    def submit(self, endpoint: str, body: dict[str, Any]) -> Handle:
        """POST once per attempt; re-POST only when fal surely did not take the job."""
        url = f"{self.config.queue_base}/{endpoint}"
        params = {"fal_webhook": self.webhooks.url} if self.webhooks else None
        last = ""
        for attempt in range(self.attempts):
            try:
                response = self.http.post(url, json=body, params=params)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:  # nothing was sent
                last = f"{type(exc).__name__}: {exc}"
                self._sleep(self._delay(attempt))
                continue
            except httpx.TransportError as exc:  # sent; the answer was lost
                raise AmbiguousSubmit(f"{type(exc).__name__}: {exc}") from exc
            if response.status_code == 200:
                data = response.json()
                return Handle(
                    data["request_id"], data["response_url"], data["status_url"], data["cancel_url"]
                )
            if response.status_code == 504:  # a gateway timeout may hide an accepted job
                raise AmbiguousSubmit(f"504 from {url}: {_detail(response)}")
            if response.status_code in TRANSIENT_CODES:
                last = f"{response.status_code}: {_detail(response)}"
                self._sleep(self._delay(attempt, response))
                continue
            kind = "invalid" if response.status_code == 422 else "rejected"
            raise FalError(
                f"submit rejected ({response.status_code}): {_detail(response)}",
                kind,
                response.status_code,
            )
        raise FalError(f"submit not accepted after {self.attempts} attempts ({last})", "transient")

    def find_submitted(
        self, endpoint: str, digest: str, since: float, grace: float = 20.0
    ) -> Handle | None:
        """Look for our request in fal's request listing (Platform API), by input digest.

        The listing may lag behind the queue: "not there" is believed only once the submit is
        ``grace`` seconds old (we wait out the rest, then look again)."""
        found = self._find_in_listing(endpoint, digest, since)
        if found is None and (left := since + grace - time.time()) > 0:
            self._sleep(left)
            found = self._find_in_listing(endpoint, digest, since)
        return found

    def _find_in_listing(self, endpoint: str, digest: str, since: float) -> Handle | None:
        start = datetime.fromtimestamp(since - 120, UTC).isoformat().replace("+00:00", "Z")
        cursor: str | None = None
        while True:
            params = {"endpoint_id": endpoint, "start": start, "limit": 100, "expand": "payloads"}
            if cursor:
                params["cursor"] = cursor

            response = self._api_get("/models/requests/by-endpoint", params, "request listing")
            page = response.json()
            for item in page.get("items", []):
                if item.get("json_input") is not None and body_digest(item["json_input"]) == digest:
                    return self.handle_for(endpoint, item["request_id"])
            cursor = page.get("next_cursor")
            if not page.get("has_more") or not cursor:
                return None

    def _api_get(self, path: str, params: Any, what: str) -> httpx.Response:
        """GET on fal's Platform API, retried on 429/5xx/transport errors; 200 or FalError."""

        def get() -> httpx.Response:
            r = self.http.get(f"{self.config.api_base}{path}", params=params)
            if r.status_code in TRANSIENT_CODES:
                raise fal_client.client.FalClientHTTPError(
                    _detail(r), r.status_code, dict(r.headers), r
                )
            return r

        try:
            response = self._retrying(what, get)
        except fal_client.client.FalClientHTTPError as exc:
            raise FalError(
                f"{what} failed ({exc.status_code}): {exc}", "transient", exc.status_code
            ) from exc
        if response.status_code != 200:
            raise FalError(
                f"{what} answered {response.status_code}: {_detail(response)}",
                "rejected",
                response.status_code,
            )
        return response

    def prices(self, endpoints: list[str]) -> dict[str, dict[str, Any]]:
        """fal's Platform API pricing: {endpoint: {unit_price, unit, currency}}."""

        params = [("endpoint_id", e) for e in endpoints]
        response = self._api_get("/models/pricing", params, "pricing API")
        return {p["endpoint_id"]: p for p in response.json().get("prices", [])}

    # ---------------------------------------------------------- wait/result
    def wait(
        self,
        handle: Handle,
        first: float,
        factor: float,
        longest: float,
        fallback: float = 60.0,
        check_now: bool = False,
    ) -> fal_client.Completed:
        """Poll politely: first after ``first`` s, then each wait ``factor`` times longer, up to
        ``longest``. With webhooks, check when fal's webhook comes, else every ``fallback`` s.
        ``check_now``: a request taken over from an earlier run may be long done; look at once."""
        fh = self._handle(handle)
        delays = self._delays(first, factor, longest, fallback)
        try:
            for delay in itertools.chain([0.0] if check_now else [], delays):
                self._pause(handle, delay)
                try:
                    status = self._retrying("status", fh.status)
                except fal_client.client.FalClientHTTPError as exc:
                    if exc.status_code == 404:
                        raise FalError(
                            f"fal no longer knows request {handle.request_id}", "expired", 404
                        ) from exc
                    raise FalError(
                        f"status failed ({exc.status_code}): {exc}", "transient", exc.status_code
                    ) from exc
                if isinstance(status, fal_client.Completed):
                    return status
            raise AssertionError("unreachable")
        finally:
            if self.webhooks:
                self.webhooks.forget(handle.request_id)

    def _delays(self, first: float, factor: float, longest: float, fallback: float):
        if self.webhooks:
            yield from itertools.repeat(fallback)
        delay = first
        while True:
            yield delay
            delay = min(longest, delay * factor)

    def _pause(self, handle: Handle, delay: float) -> None:
        if self.webhooks is None:
            self._sleep(delay)
            return
        self.webhooks.wait(handle.request_id, delay)
        if self.stop.is_set():
            raise Stopped("run cancelled")

    def result(self, handle: Handle, generation_failed: bool = False) -> dict[str, Any]:
        """Fetch a completed request's result. A 5xx is final only when the status said the
        generation failed; otherwise it is the gateway's and is retried."""

        def get() -> httpx.Response:
            r = self.http.get(handle.response_url)
            if r.status_code in (408, 429, 502, 503, 504) or (
                r.status_code >= 500 and not generation_failed
            ):
                raise fal_client.client.FalClientHTTPError(
                    _detail(r), r.status_code, dict(r.headers), r
                )
            return r

        try:
            response = self._retrying("result", get)
        except fal_client.client.FalClientHTTPError as exc:
            raise FalError(
                f"result failed ({exc.status_code}): {exc}", "transient", exc.status_code
            ) from exc
        code = response.status_code
        if code == 200:
            return response.json()
        if code == 422:
            raise FalError(_detail(response), "invalid", 422)
        if code in (404, 410):
            raise FalError(
                f"result of {handle.request_id} is gone ({code}): {_detail(response)}",
                "expired",
                code,
            )
        if code >= 500:
            raise FalError(f"generation failed ({code}): {_detail(response)}", "failed", code)
        if code == 400 and "cancel" in response.text.lower():
            raise FalError(f"request {handle.request_id} was cancelled", "cancelled", code)
        raise FalError(f"result rejected ({code}): {_detail(response)}", "rejected", code)

    def cancel(self, handle: Handle) -> None:
        try:
            self._handle(handle).cancel()
        except fal_client.client.FalClientHTTPError as exc:
            if exc.status_code not in (400, 404):  # already completed / unknown: nothing to cancel
                raise

    # ------------------------------------------------------------ download
    def download(self, url: str, dest: Path, expected_size: int | None = None) -> tuple[int, str]:
        """Stream a video to ``dest`` (never whole in memory); returns (size, sha256)."""
        for attempt in range(self.attempts):
            h = hashlib.sha256()
            size = 0
            try:
                with self.http.stream("GET", url) as response:
                    if response.status_code in TRANSIENT_CODES:
                        raise httpx.HTTPStatusError(
                            "transient", request=response.request, response=response
                        )
                    if response.status_code != 200:
                        raise FalError(
                            f"video download failed ({response.status_code}) from {url}",
                            "expired" if response.status_code in (403, 404, 410) else "rejected",
                            response.status_code,
                        )
                    with dest.open("wb") as f:
                        for chunk in response.iter_bytes(1 << 20):
                            f.write(chunk)
                            h.update(chunk)
                            size += len(chunk)
                if expected_size and size != expected_size:
                    raise httpx.ReadError(f"got {size} bytes, expected {expected_size}")
                return size, h.hexdigest()
            except (httpx.TransportError, httpx.HTTPStatusError) as exc:
                if attempt == self.attempts - 1:
                    raise FalError(f"video download failed: {exc}", "transient") from exc
                self._sleep(self._delay(attempt, getattr(exc, "response", None)))
        raise AssertionError("unreachable")
