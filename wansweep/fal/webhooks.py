"""fal webhooks: a receiver that wakes a waiting job as soon as fal says it is done, and tells
settling which request a lost submit became, for webhooks fal signed and nothing else.

Every delivery is verified before anything else, as fal's docs require (model-apis, webhooks):

- the headers ``X-Fal-Webhook-Request-Id``, ``-User-Id``, ``-Timestamp`` and ``-Signature`` (hex);
- an ED25519 signature over ``request_id\\nuser_id\\ntimestamp\\nsha256hex(body)``, by any key of
  fal's JWKS (:class:`Jwks`: fetched from ``WANSWEEP_FAL_JWKS_URL``, by default both URLs fal has
  published; kept at most 24 hours; fetched again at most once a minute when a signature does
  not verify);
- a timestamp within 300 s of fal's time (our clock, corrected by what fal's ``Date`` headers
  say, when known);
- a body of at most 1 MB (else 413), JSON, whose ``request_id`` has fal's form (a UUID) and is
  the signed one;
- a URL whose job and attempt carry a token this process issued (an HMAC of both): a webhook
  fal signed for someone else's request, pointed at our address, names nothing here.

Anything else gets 401, 400 or 413 and changes nothing. A verified webhook wakes its job, which
then asks fal for the status and the result itself, and (once per job attempt) hands the
request id to ``on_marker`` for settling a lost submit; that request still counts only once
fal's own records confirm it (:meth:`wansweep.fal.platform.PlatformMixin.confirm`).

Configured per process, because each worker needs an address fal can reach:
``WANSWEEP_WEBHOOK_URL`` (what fal calls) and optionally ``WANSWEEP_WEBHOOK_LISTEN``
(``host:port`` to bind; defaults to the URL's own host and port; port 0 in the URL picks a
free port, which only fal on this machine, such as the local server, can be told about).
Served by uvicorn (at most :data:`MAX_CONNECTIONS` at once, idle connections closed after 10 s).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import secrets
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlencode, urlsplit

import httpx

from wansweep.fal.policy import RETRIES
from wansweep.serve import bind, serve_in_thread

JOB_KEY = re.compile(r"[0-9a-f]{24}")
REQUEST_ID = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)
MAX_PENDING = 100_000  # webhooks for requests nobody waits on (yet) kept at most
MAX_BODY = 1 << 20  # a webhook carries a small result, never more
MAX_CONNECTIONS = 1000  # served at once (more are answered 503, which fal retries)
TIMESTAMP_WINDOW = 300.0  # fal's docs: reject a timestamp more than 5 minutes off
JWKS_URLS = (  # fal's current docs, then the older page's: keys from both are accepted
    "https://rest.fal.ai/.well-known/jwks.json",
    "https://rest.alpha.fal.ai/.well-known/jwks.json",
)
JWKS_MAX_AGE = 24 * 3600.0  # fal's docs: do not cache longer than 24 hours
HEADERS = ("x-fal-webhook-request-id", "x-fal-webhook-user-id", "x-fal-webhook-timestamp")


class Unverified(Exception):
    """A delivery that is not fal's: ``status`` is the HTTP answer it gets."""

    def __init__(self, why: str, status: int = 401):
        super().__init__(why)
        self.status = status


class Jwks:
    """fal's webhook public keys, fetched from ``urls`` (thread-safe)."""

    def __init__(self, urls: tuple[str, ...], clock: Callable[[], float] = time.monotonic):
        self.urls, self.clock = urls, clock
        self._keys: list = []
        self._fetched: float | None = None
        self._tried: float | None = None
        self._lock = threading.Lock()

    def keys(self, refresh: bool = False) -> list:
        """The keys; fetched when never fetched, older than a day, or (``refresh``) when a
        signature failed and the last try is a minute old."""
        now = self.clock()
        with self._lock:
            stale = self._fetched is None or now - self._fetched > JWKS_MAX_AGE
            allowed = self._tried is None or now - self._tried > RETRIES.jwks_refetch_s
            if (stale or refresh) and allowed:
                self._tried = now
                keys = self._fetch()
                if keys:
                    self._keys, self._fetched = keys, now
            return list(self._keys)

    def _fetch(self) -> list:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

        found = []
        for url in self.urls:
            try:
                body = httpx.get(url, timeout=10).raise_for_status().json()
            except (httpx.HTTPError, ValueError):
                continue
            for jwk in body.get("keys", []) if isinstance(body, dict) else []:
                if not isinstance(jwk, dict) or not isinstance(jwk.get("x"), str):
                    continue
                if jwk.get("kty", "OKP") != "OKP" or jwk.get("crv", "Ed25519") != "Ed25519":
                    continue
                try:  # fal's own example forgets that base64url drops its padding
                    raw = base64.urlsafe_b64decode(jwk["x"] + "=" * (-len(jwk["x"]) % 4))
                    found.append(Ed25519PublicKey.from_public_bytes(raw))
                except ValueError:
                    continue
        return found


def verify(headers: dict[str, str], body: bytes, keys: list, fal_now: float) -> str:
    """The request id of a delivery fal signed; :class:`Unverified` otherwise. ``headers``
    with lower-case names."""
    from cryptography.exceptions import InvalidSignature

    values = [headers.get(name, "") for name in (*HEADERS, "x-fal-webhook-signature")]
    if not all(values):
        raise Unverified("a webhook header is missing")
    request_id, user_id, timestamp, signature = values
    if not timestamp.isdigit() or abs(fal_now - int(timestamp)) > TIMESTAMP_WINDOW:
        raise Unverified("the timestamp is missing or more than 5 minutes off")
    try:
        signed = bytes.fromhex(signature)
    except ValueError:
        raise Unverified("the signature is not hexadecimal") from None
    digest = hashlib.sha256(body).hexdigest()
    message = "\n".join([request_id, user_id, timestamp, digest]).encode()
    for key in keys:
        try:
            key.verify(signed, message)
            return request_id
        except InvalidSignature:
            continue
    raise Unverified("no key of fal's verifies the signature")


@dataclass
class Delivery:
    """A verified webhook: the request it names, and the job attempt its URL names (if any)."""

    request_id: str
    job: str | None = None
    attempt: int | None = None


class WebhookReceiver:
    """Thread-safe; one per process and listening address."""

    def __init__(
        self,
        url: str,
        listen: str | None = None,
        jwks: Jwks | None = None,
        fal_now: Callable[[], float] = time.time,
    ):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"WANSWEEP_WEBHOOK_URL={url!r}: expected an http(s) URL fal can reach")
        if listen:
            host, port = parse_listen(listen)
        else:
            default = 443 if parts.scheme == "https" else 80
            host, port = parts.hostname, default if parts.port is None else parts.port
        self.jwks = jwks or Jwks(jwks_urls())
        self.fal_now = fal_now  # fal's time now (runtime sets it from fal's Date headers)
        self._secret = secrets.token_bytes(32)
        self._lock = threading.Lock()
        self._events: dict[str, threading.Event] = {}
        self.on_marker: Callable[[str, int, str], None] | None = None
        self.refused = 0  # deliveries refused (for the logs and tests)
        try:
            sock = bind(host, port)
        except OSError as exc:
            raise RuntimeError(
                f"cannot listen for fal webhooks on {host}:{port} ({exc}); "
                "set WANSWEEP_WEBHOOK_LISTEN=HOST:PORT"
            ) from exc
        bound = sock.getsockname()[1]
        self.address = f"{host}:{bound}"
        # a URL with port 0 (fal on this machine, e.g. the local server) takes the bound port
        self.url = (
            url if parts.port != 0 else parts._replace(netloc=f"{parts.hostname}:{bound}").geturl()
        )
        self._server = _serve(self, sock, parts.path or "/")

    # ------------------------------------------------------------------ deliveries
    def url_for(self, job_key: str, attempt: int) -> str:
        """The webhook URL of one submit: it names the job and attempt (with a token only
        this process can make), so fal's call names the request even when the submit's own
        answer was lost."""
        sep = "&" if "?" in self.url else "?"
        query = {"job": job_key, "attempt": attempt, "token": self._token(job_key, attempt)}
        return f"{self.url}{sep}{urlencode(query)}"

    def _token(self, job_key: str, attempt: int) -> str:
        digest = hmac.new(self._secret, f"{job_key}:{attempt}".encode(), hashlib.sha256)
        return digest.hexdigest()[:32]

    def receive(self, headers: dict[str, str], query: dict[str, str], body: bytes) -> Delivery:
        """Check one delivery and act on it; :class:`Unverified` says why it was refused."""
        if len(body) > MAX_BODY:
            raise Unverified("the body is over 1 MB", 413)
        keys = self.jwks.keys()
        try:
            signed_id = verify(headers, body, keys, self.fal_now())
        except Unverified as exc:
            if "no key" not in str(exc):
                raise
            signed_id = verify(headers, body, self.jwks.keys(refresh=True), self.fal_now())
        try:
            request_id = json.loads(body)["request_id"]
        except (ValueError, KeyError, TypeError):
            raise Unverified("the body names no request", 400) from None
        if not isinstance(request_id, str) or not REQUEST_ID.fullmatch(request_id):
            raise Unverified("the request id is not of fal's form (a UUID)", 400)
        if request_id != signed_id:
            raise Unverified("the body's request id is not the signed one")
        delivery = Delivery(request_id)
        job, attempt, token = (query.get(k, "") for k in ("job", "attempt", "token"))
        if JOB_KEY.fullmatch(job) and attempt.isdigit() and len(attempt) < 4:
            if hmac.compare_digest(token, self._token(job, int(attempt))):
                delivery = Delivery(request_id, job, int(attempt))
        self.notify(request_id)
        if delivery.job is not None and self.on_marker is not None:
            try:
                self.on_marker(delivery.job, delivery.attempt, request_id)
            except Exception:  # a marker is a help for settling, never a reason to fail
                pass
        return delivery

    # ------------------------------------------------------------------ waiting jobs
    def _event(self, request_id: str, capped: bool = False) -> threading.Event | None:
        with self._lock:
            event = self._events.get(request_id)
            if event is None and (not capped or len(self._events) < MAX_PENDING):
                event = self._events[request_id] = threading.Event()
            return event

    def notify(self, request_id: str) -> None:
        event = self._event(request_id, capped=True)  # may come before its waiter
        if event is not None:
            event.set()

    def wait(self, request_id: str, timeout: float) -> bool:
        """Block until fal's webhook for ``request_id`` arrived (True) or ``timeout`` passed."""
        event = self._event(request_id)
        if event.wait(timeout):
            event.clear()
            return True
        return False

    def forget(self, request_id: str) -> None:
        with self._lock:
            self._events.pop(request_id, None)

    def wake_all(self) -> None:
        """Wake every waiter (the run was cancelled: they check why and stop)."""
        with self._lock:
            events = list(self._events.values())
        for event in events:
            event.set()

    def close(self) -> None:
        self._server.should_exit = True


def _serve(receiver: WebhookReceiver, sock: socket.socket, path: str):
    """The receiver's ASGI app on uvicorn, in a thread of its own."""
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    async def deliver(request: Request) -> Response:
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > MAX_BODY:
            receiver.refused += 1
            return Response(status_code=413)
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_BODY:
                receiver.refused += 1
                return Response(status_code=413)
        headers = {k.lower(): v for k, v in request.headers.items()}
        try:  # in a worker thread: fetching keys or writing a marker must not stall the loop
            await run_in_threadpool(
                receiver.receive, headers, dict(request.query_params), bytes(body)
            )
        except Unverified as exc:
            receiver.refused += 1
            return Response(status_code=exc.status)
        return Response(status_code=200)

    app = Starlette(routes=[Route(path, deliver, methods=["POST"])])
    # fal calls back for many jobs at once: a deep backlog, and many connections at once
    return serve_in_thread(
        app, sock, "wansweep-webhooks", limit_concurrency=MAX_CONNECTIONS, backlog=1024
    )


def jwks_urls() -> tuple[str, ...]:
    """Where fal's webhook keys are: ``WANSWEEP_FAL_JWKS_URL`` (comma-separated; the local fal
    server sets it to its own) or fal's published URLs."""
    configured = os.environ.get("WANSWEEP_FAL_JWKS_URL", "")
    return tuple(u.strip() for u in configured.split(",") if u.strip()) or JWKS_URLS


def parse_listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"WANSWEEP_WEBHOOK_LISTEN={text!r}: expected HOST:PORT")
    return host or "0.0.0.0", int(port)


_receivers: dict[str, WebhookReceiver] = {}
_lock = threading.Lock()


def receiver_from_env() -> WebhookReceiver | None:
    """The process's receiver when ``WANSWEEP_WEBHOOK_URL`` is set, started on first use."""
    url = os.environ.get("WANSWEEP_WEBHOOK_URL")
    if not url:
        return None
    listen = os.environ.get("WANSWEEP_WEBHOOK_LISTEN")
    with _lock:
        key = f"{url} {listen}"
        if key not in _receivers:
            _receivers[key] = WebhookReceiver(url, listen)
        return _receivers[key]
