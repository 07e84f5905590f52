"""fal webhooks: a small receiver that wakes a waiting job as soon as fal says it is done.

fal calls ``fal_webhook`` (a URL given at submit) when a request ends. The webhook is only
a wake-up call: the waiting job still asks fal for the status and the result over its own
authenticated connection, so a forged or replayed webhook can cost one status call, never
a wrong video. Webhooks can be lost, so waiting jobs still check the status now and then
(``poll.webhook_fallback`` seconds).

Configured per process, because each worker needs an address fal can reach:
``WANSWEEP_WEBHOOK_URL`` (what fal calls) and optionally ``WANSWEEP_WEBHOOK_LISTEN``
(``host:port`` to bind; defaults to the URL's own host and port; port 0 in the URL picks a
free port, which only fal on this machine, such as the local server, can be told about).
"""

from __future__ import annotations

import json
import os
import re
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlencode, urlsplit

JOB_KEY = re.compile(r"[0-9a-f]{24}")
MAX_PENDING = 100_000  # webhooks for requests nobody waits on (yet) kept at most


MAX_BODY = 1 << 20  # a webhook carries a small result, never more
MAX_THREADS = 64  # connections served at once; more wait in the listen backlog


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024  # fal calls back for many jobs at once; the default 5 drops them

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._slots = threading.BoundedSemaphore(MAX_THREADS)

    def process_request(self, request, client_address):
        self._slots.acquire()  # bounded threads: the accept loop waits for a free one
        super().process_request(request, client_address)

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


class WebhookReceiver:
    """Thread-safe; one per process and listening address."""

    def __init__(self, url: str, listen: str | None = None):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"WANSWEEP_WEBHOOK_URL={url!r}: expected an http(s) URL fal can reach")
        if listen:
            host, port = parse_listen(listen)
        else:
            default = 443 if parts.scheme == "https" else 80
            host, port = parts.hostname, default if parts.port is None else parts.port
        self._lock = threading.Lock()
        self._events: dict[str, threading.Event] = {}
        self.on_marker: Callable[[str, int, str], None] | None = None
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            timeout = 10  # seconds an idle or slow connection may hold its thread

            def do_POST(self):  # noqa: N802 (http.server's naming)
                length = self.headers.get("Content-Length", "")
                if not length.isdigit() or int(length) > MAX_BODY:
                    self.send_response(413 if length.isdigit() else 400)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                try:
                    request_id = json.loads(self.rfile.read(int(length)))["request_id"]
                    if not isinstance(request_id, str) or not 0 < len(request_id) <= 200:
                        raise TypeError
                except (ValueError, KeyError, TypeError, OSError):
                    self.send_response(400)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                receiver.notify(request_id)
                receiver.mark(urlsplit(self.path).query, request_id)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):  # keep worker logs clean
                pass

        try:
            self.server = _Server((host, port), Handler)
        except OSError as exc:
            raise RuntimeError(
                f"cannot listen for fal webhooks on {host}:{port} ({exc}); "
                "set WANSWEEP_WEBHOOK_LISTEN=HOST:PORT"
            ) from exc
        bound = self.server.server_address[1]
        self.address = f"{host}:{bound}"
        # a URL with port 0 (fal on this machine, e.g. the local server) takes the bound port
        self.url = (
            url if parts.port != 0 else parts._replace(netloc=f"{parts.hostname}:{bound}").geturl()
        )
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def _event(self, request_id: str, capped: bool = False) -> threading.Event | None:
        with self._lock:
            event = self._events.get(request_id)
            if event is None and (not capped or len(self._events) < MAX_PENDING):
                event = self._events[request_id] = threading.Event()
            return event

    def url_for(self, job_key: str, attempt: int) -> str:
        """The webhook URL of one submit: it names the job and attempt, so fal's call names
        the request even when the submit's own answer was lost."""
        sep = "&" if "?" in self.url else "?"
        return f"{self.url}{sep}{urlencode({'job': job_key, 'attempt': attempt})}"

    def mark(self, query: str, request_id: str) -> None:
        """Pass (job, attempt, request id) of a webhook whose URL names them to ``on_marker``."""
        if self.on_marker is None:
            return
        values = parse_qs(query)
        job, attempt = values.get("job", [""])[0], values.get("attempt", [""])[0]
        if JOB_KEY.fullmatch(job) and attempt.isdigit() and len(request_id) <= 200:
            try:
                self.on_marker(job, int(attempt), request_id)
            except Exception:  # a marker is a help for settling, never a reason to fail
                pass

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
        self.server.shutdown()
        self.server.server_close()


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
