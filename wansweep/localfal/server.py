"""A fal-compatible queue server for the two Wan 2.6 image-to-video endpoints.

It answers the wire protocol in ``shared/reference/fal-protocol.md`` closely enough
for an unmodified fal-client, renders a real H.264 clip per request, models queue
and inference latency under an account concurrency limit, injects faults on
demand, and counts everything at ``GET /_local/stats``.
"""

from __future__ import annotations

import asyncio
import random
import secrets
import ssl
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from email.utils import formatdate
from pathlib import Path
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from wansweep.localfal.admin import AdminRoutes
from wansweep.localfal.config import ServerConfig
from wansweep.localfal.generate import GenerateMixin
from wansweep.localfal.platform import PlatformRoutes
from wansweep.localfal.queue import FalRequest, QueueRoutes, input_key
from wansweep.localfal.scheduler import SchedulerMixin
from wansweep.localfal.webhooks import WebhookMixin

__all__ = ["LocalFal", "input_key"]


class LocalFal(
    QueueRoutes, SchedulerMixin, GenerateMixin, PlatformRoutes, AdminRoutes, WebhookMixin
):
    """State, routes and auth. ``app`` is the ASGI application."""

    def __init__(self, config: ServerConfig, media_dir: Path, ssl_bundle: str | None = None):
        self.config = config
        self.media_dir = media_dir
        self.media_dir.mkdir(parents=True, exist_ok=True)
        self.ssl_bundle = ssl_bundle
        self.jobs: dict[str, FalRequest] = {}
        self.rng = random.Random(config.fault_seed)
        self.pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="localfal-render")
        self._slot_free: asyncio.Condition | None = None  # an account slot was freed
        self._running = 0  # requests holding a slot
        self._seq = 0
        self._started = 0
        self.reset_stats()
        self._webhook_client: httpx.AsyncClient | None = None
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        self._webhook_key = Ed25519PrivateKey.generate()  # signs its webhooks, as fal's does
        self.app = _DateHeader(_CountConnections(Starlette(routes=self._routes()), self), self)

    def now(self) -> float:
        """The server's clock (this machine's, shifted by ``clock_offset``): every timestamp
        it gives out, its ``Date`` headers included, is on this clock."""
        return time.time() + self.config.clock_offset

    def unit_price(self, endpoint: str) -> float:
        """The pricing API's one price of an endpoint (its profile's base rate), times
        ``price_factor``: fal's prices may move away from the profiles'."""
        from wansweep.plan.endpoints import profile

        return round((profile(endpoint).base_rate() or 1.0) * self.config.price_factor, 6)

    def _ssl(self) -> ssl.SSLContext | bool:
        return ssl.create_default_context(cafile=self.ssl_bundle) if self.ssl_bundle else True

    # ----------------------------------------------------------------- stats
    def reset_stats(self) -> None:
        open_now = getattr(self, "stats", {}).get("streams_open", 0)  # a gauge, not a count
        self.stats: dict[str, Any] = {
            "submits_accepted": 0,
            "submits_rejected": 0,
            "submits_by_input": Counter(),
            "status_polls": 0,
            "status_polls_by_request": Counter(),  # status polls and stream connects
            "stream_connects": 0,
            "streams_open": open_now,
            "peak_streams_open": open_now,
            "result_fetches": 0,
            "downloads": 0,
            "bytes_served": 0,
            "cancels": 0,
            "webhooks_sent": 0,
            "webhooks_failed": 0,
            "completed": 0,
            "failed": 0,
            "invalid": 0,
            "in_progress": 0,
            "peak_in_progress": 0,
            "faults": Counter(),
            "connections": 0,  # TCP connections clients opened (kept-alive ones count once)
        }
        self.client_addresses: set[tuple] = set()

    def snapshot(self) -> dict[str, Any]:
        s = dict(self.stats)
        s["submits_by_input"] = dict(s["submits_by_input"])
        s["status_polls_by_request"] = dict(s["status_polls_by_request"])
        s["faults"] = dict(s["faults"])
        s["queued"] = sum(1 for j in self.jobs.values() if j.status == "IN_QUEUE")
        s["config"] = {
            "latency": self.config.latency.__dict__,
            "faults": self.config.faults.rates,
            "retention": self.config.faults.retention,
            "concurrency": self.config.concurrency,
            "media": self.config.media,
        }
        return s

    def _fault(self, name: str) -> bool:
        rate = self.config.faults.rates.get(name, 0.0)
        if rate > 0 and self.rng.random() < rate:
            self.stats["faults"][name] += 1
            return True
        return False

    # ---------------------------------------------------------------- routes
    def _routes(self) -> list[Route]:
        base = "/{owner}/{alias}/requests/{request_id}"
        return [
            Route("/.well-known/jwks.json", self.jwks, methods=["GET"]),
            Route("/_local/stats", self._admin(self.get_stats), methods=["GET"]),
            Route("/_local/reset", self._admin(self.post_reset), methods=["POST"]),
            Route("/_local/sign-webhook", self._admin(self.post_sign_webhook), methods=["POST"]),
            Route("/_local/requests", self._admin(self.get_requests), methods=["GET"]),
            Route("/_local/config", self._admin(self.post_config), methods=["POST"]),
            Route("/_local/expire-media", self._admin(self.post_expire_media), methods=["POST"]),
            # generated videos are public, as on fal's CDN
            Route("/_local/media/{name}", self.get_media, methods=["GET"]),
            Route("/_local/files/{name}", self._admin(self.files), methods=["GET", "PUT"]),
            Route("/v1/models/requests/by-endpoint", self.list_requests, methods=["GET"]),
            Route("/v1/models/pricing", self.pricing, methods=["GET"]),
            Route("/api/openapi/queue/openapi.json", self.openapi, methods=["GET"]),
            Route("/v1/models/usage", self.usage, methods=["GET"]),
            Route(base + "/status/stream", self.status_stream, methods=["GET"]),
            Route(base + "/status", self.status, methods=["GET"]),
            Route(base + "/cancel", self.cancel, methods=["PUT"]),
            Route(base, self.result, methods=["GET"]),
            Route("/{endpoint:path}", self.submit, methods=["POST"]),
        ]

    def _admin(self, handler):
        """With ``--key``, the server's own routes want the key too (else anyone reaching the
        port could reconfigure it or read its files)."""

        async def checked(request: Request):
            if self.config.key is not None and not self._authorized(request):
                return self._unauthorized()
            return await handler(request)

        return checked

    def _base_url(self, request: Request) -> str:
        return f"{request.url.scheme}://{request.url.netloc}"

    def _authorized(self, request: Request) -> bool:
        auth = request.headers.get("authorization", "")
        if not auth.startswith("Key ") or len(auth) <= 4:
            return False
        return self.config.key is None or secrets.compare_digest(auth[4:], self.config.key)

    @staticmethod
    def _unauthorized() -> JSONResponse:
        return JSONResponse({"detail": "No user found for Key ID and Secret"}, status_code=401)


class _DateHeader:
    """ASGI middleware: every answer carries a ``Date`` on the server's clock (fal's clients
    may read fal's time from it; ``clock_offset`` makes a skewed client testable)."""

    def __init__(self, app, fal: LocalFal):
        self.app, self.fal = app, fal

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def with_date(message):
            if message["type"] == "http.response.start":
                date = formatdate(self.fal.now(), usegmt=True).encode()
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"date"]
                message = {**message, "headers": [*headers, (b"date", date)]}
            await send(message)

        await self.app(scope, receive, with_date)


class _CountConnections:
    """ASGI middleware: counts the TCP connections clients opened (distinct client address
    and port), so a test sees whether a client keeps its connections alive."""

    def __init__(self, app, fal: LocalFal):
        self.app, self.fal = app, fal

    async def __call__(self, scope, receive, send):
        client = tuple(scope.get("client") or ())
        if scope["type"] == "http" and client not in self.fal.client_addresses:
            self.fal.client_addresses.add(client)
            self.fal.stats["connections"] += 1
        return await self.app(scope, receive, send)
