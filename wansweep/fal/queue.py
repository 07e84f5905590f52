"""fal's queue: submit, wait, result, cancel.

Why submit is our own POST: fal-client re-POSTs a submit after a transport error or a
timeout, and fal's queue has no idempotency key, so one lost answer can mean two paid
jobs. Here a submit is sent again only when :mod:`wansweep.fal.policy` says fal surely did
not take it; otherwise :class:`AmbiguousSubmit` is raised and the caller settles it through
fal's own records. Status and cancel go through fal-client's own request handle.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import fal_client
import httpx

from wansweep.errors import AmbiguousSubmit, FailureKind, FalError, FalUnavailable, Stopped
from wansweep.fal import policy
from wansweep.fal.connection import Connection, detail
from wansweep.fal.download import DownloadMixin
from wansweep.fal.platform import PlatformMixin
from wansweep.fal.stream import Completion, StatusStreams, StreamBroken, StreamUnsupported
from wansweep.fal.types import Handle, PollSpec
from wansweep.fal.webhooks import WebhookReceiver

log = logging.getLogger(__name__)

STREAM_BREAKS = 5  # breaks in a row (no event between them) before a job polls instead


class FalQueue(PlatformMixin, DownloadMixin, Connection):
    """Thread-safe: one per process, shared by every job."""

    def __init__(
        self,
        config,
        *,
        webhooks: WebhookReceiver | None = None,
        stream_idle: float = 30.0,
        **kwargs: Any,
    ):
        super().__init__(config, **kwargs)
        self.webhooks = webhooks
        self.streams = StatusStreams(dict(self.http.headers), self.stop, stream_idle)
        self.streams_off = False  # the server offers no status stream: every job polls
        self._closed = threading.Event()
        threading.Thread(target=self._wake_waiters_on_stop, daemon=True).start()

    def close(self) -> None:
        self._closed.set()
        self.streams.close()
        super().close()

    def _wake_waiters_on_stop(self) -> None:
        """A stopped run wakes every waiter at once: webhook waits return, streams close."""
        while not self._closed.is_set():
            if self.stop.wait(1.0):
                self.streams.cancel_all()
                if self.webhooks is not None:
                    self.webhooks.wake_all()
                return

    def _handle(self, h: Handle) -> fal_client.SyncRequestHandle:
        return fal_client.SyncRequestHandle(
            request_id=h.request_id,
            response_url=h.response_url,
            status_url=h.status_url,
            cancel_url=h.cancel_url,
            client=self.http,
        )

    def handle_for(self, endpoint: str, request_id: str) -> Handle:
        """The URLs of a request known only by id (status/result use owner/app only)."""
        app = "/".join(endpoint.split("/")[:2])
        base = f"{self.config.queue_base}/{app}/requests/{request_id}"
        return Handle(request_id, base, base + "/status", base + "/cancel")

    # -------------------------------------------------------------- submit
    def submit(
        self,
        endpoint: str,
        body: dict[str, Any],
        start_timeout: float | None = None,
        marker: tuple[str, int] | None = None,
    ) -> Handle:
        """POST once per attempt; POST again only when fal surely did not take the job.

        Raises :class:`AmbiguousSubmit` when fal may hold it, :class:`FalError` (invalid or
        rejected) when refused, :class:`FalUnavailable` when every try was turned away.
        ``marker`` (job key, attempt) goes into the webhook URL, when webhooks are on."""
        url = f"{self.config.queue_base}/{endpoint}"
        params = None
        if self.webhooks:
            hook = self.webhooks.url_for(*marker) if marker else self.webhooks.url
            params = {"fal_webhook": hook}
        # A start deadline bounds how long an accepted request can stay unfinished, which is
        # what lets fal's records prove, later, that a lost submit was never accepted.
        headers = (
            {"X-Fal-Request-Start-Timeout": str(int(start_timeout))} if start_timeout else None
        )
        last = ""
        for attempt in range(self.attempts):
            try:
                response = self.http.post(url, json=body, params=params, headers=headers)
            except httpx.TransportError as exc:
                if policy.classify_submit_error(exc) is policy.SubmitVerdict.AMBIGUOUS:
                    raise AmbiguousSubmit(f"{type(exc).__name__}: {exc}") from exc
                last = f"{type(exc).__name__}: {exc}"
                self.pause_before_retry(attempt)
                continue
            verdict = policy.classify_submit_answer(
                response.status_code, response.headers, response.text
            )
            code = response.status_code
            if verdict is policy.SubmitVerdict.ACCEPTED:
                try:
                    data = response.json()
                    return Handle(
                        data["request_id"],
                        data["response_url"],
                        data["status_url"],
                        data["cancel_url"],
                    )
                except (ValueError, KeyError, TypeError) as exc:
                    raise AmbiguousSubmit(f"{code} from {url} names no request: {exc}") from None
            if verdict is policy.SubmitVerdict.AMBIGUOUS:
                raise AmbiguousSubmit(f"{code} from {url}: {detail(response)}", code)
            if verdict is policy.SubmitVerdict.RETRY:
                last = f"{code}: {detail(response)}"
                self.pause_before_retry(attempt, response.headers)
                continue
            kind = (
                FailureKind.INVALID
                if verdict is policy.SubmitVerdict.INVALID
                else FailureKind.REJECTED
            )
            raise FalError(f"submit rejected ({code}): {detail(response)}", kind, code)
        raise FalUnavailable(f"submit not accepted after {self.attempts} attempts ({last})")

    # ---------------------------------------------------------- wait/result
    def wait(self, handle: Handle, poll: PollSpec, check_now: bool = False) -> Completion:
        """Until fal completes the request; the :class:`Completion` says when and how it was seen.

        With webhooks: a status check when fal's webhook comes, else every
        ``poll.webhook_fallback`` s. Else, by default, fal's status stream (see
        :mod:`wansweep.fal.stream`), with polling (first after ``poll.first`` s, each wait
        ``poll.factor`` times longer, up to ``poll.max``) when the server offers no stream or
        streams keep breaking. ``check_now``: a request taken over from an earlier run may be
        long done; look at once. Raises :class:`FalError` (EXPIRED) when fal no longer knows
        the request, :class:`Stopped` when the run is cancelled."""
        fh = self._handle(handle)
        try:
            if check_now:
                status = self._status(handle, fh)
                if isinstance(status, fal_client.Completed):
                    return Completion.between(status, None, "poll")
            if self.webhooks:
                return self._wait_for_webhook(handle, fh, poll.webhook_fallback)
            if poll.stream and not self.streams_off:
                done = self._wait_streaming(handle, fh)
                if done is not None:
                    return done
            return self._wait_polling(handle, fh, poll)
        finally:
            if self.webhooks:
                self.webhooks.forget(handle.request_id)

    def _status(self, handle: Handle, fh: fal_client.SyncRequestHandle) -> fal_client.Status:
        try:
            return self.with_retries("status", fh.status)
        except fal_client.client.FalClientHTTPError as exc:
            if exc.status_code == 404:
                raise FalError(
                    f"fal no longer knows request {handle.request_id}", FailureKind.EXPIRED, 404
                ) from exc
            raise FalUnavailable(
                f"status failed ({exc.status_code}): {exc}", exc.status_code
            ) from exc

    def _wait_streaming(
        self, handle: Handle, fh: fal_client.SyncRequestHandle
    ) -> Completion | None:
        """Follow the stream; after each break, one status check, then reconnect (at once
        after a stream that delivered events, with backoff while breaks repeat). None: poll
        from here (no stream offered, or ``STREAM_BREAKS`` breaks in a row)."""
        breaks = 0
        while True:
            try:  # events parsed by fal-client's own parser of its status format
                return self.streams.follow(handle.status_url, fh._parse_status)
            except StreamUnsupported:
                unsupported = True
            except StreamBroken as exc:
                unsupported = False
                breaks = 1 if exc.events else breaks + 1
            broke_at = time.time()  # the stream was watching until now
            status = self._status(handle, fh)
            if isinstance(status, fal_client.Completed):
                return Completion.between(status, broke_at, "poll")
            if unsupported:  # the request exists, so it is the stream the server lacks
                if not self.streams_off:
                    log.info("fal's status stream is not offered here: polling instead")
                self.streams_off = True
                return None
            if breaks >= STREAM_BREAKS:
                return None
            if breaks > 1:
                self.pause_before_retry(breaks - 2)

    def _wait_polling(
        self, handle: Handle, fh: fal_client.SyncRequestHandle, poll: PollSpec
    ) -> Completion:
        unfinished_at, delay = time.time(), poll.first
        while True:
            self.sleep(delay)
            delay = min(poll.max, delay * poll.factor)
            status = self._status(handle, fh)
            if isinstance(status, fal_client.Completed):
                return Completion.between(status, unfinished_at, "poll")
            unfinished_at = time.time()

    def _wait_for_webhook(
        self, handle: Handle, fh: fal_client.SyncRequestHandle, fallback: float
    ) -> Completion:
        unfinished_at = time.time()
        while True:
            woken = self.webhooks.wait(handle.request_id, fallback)
            if self.stop.is_set():
                raise Stopped("run cancelled")
            woken_at = time.time()
            status = self._status(handle, fh)
            if isinstance(status, fal_client.Completed):
                if woken:  # fal sends the webhook when the request completes
                    return Completion(status, time.time(), woken_at, 0.0, "webhook")
                return Completion.between(status, unfinished_at, "poll")
            unfinished_at = time.time()

    def result(self, handle: Handle, generation_failed: bool = False) -> dict[str, Any]:
        """A completed request's result; :class:`FalError` says how the job ended otherwise."""
        response = self.send(
            "result",
            lambda: self.http.get(handle.response_url),
            lambda r: (
                policy.classify_result(r.status_code, generation_failed, r.headers)
                is policy.ResultVerdict.RETRY
            ),
        )
        code = response.status_code
        verdict = policy.classify_result(code, generation_failed, response.headers)
        if verdict is policy.ResultVerdict.OK:
            return response.json()
        if verdict is policy.ResultVerdict.RETRY:
            raise FalUnavailable(f"result failed ({code}): {detail(response)}", code)
        kind = (
            FailureKind.FAILED  # never started: not billed, may be tried again
            if policy.start_timed_out(code, response.headers)
            else policy.result_failure(code, response.text)
        )
        text = {
            FailureKind.INVALID: detail(response),
            FailureKind.EXPIRED: f"result of {handle.request_id} is gone ({code}): {detail(response)}",
            FailureKind.FAILED: f"generation failed ({code}): {detail(response)}",
            FailureKind.CANCELLED: f"request {handle.request_id} was cancelled",
        }.get(kind, f"result rejected ({code}): {detail(response)}")
        raise FalError(text, kind, code)

    def is_running(self, handle: Handle) -> bool | None:
        """Has fal started this request? (None: it could not be told.)"""
        try:
            status = self._handle(handle).status()
        except Exception:  # noqa: BLE001 (a best-effort look before a cancel)
            return None
        return not isinstance(status, fal_client.Queued)

    def cancel(self, handle: Handle) -> None:
        """Ask fal to cancel (a running request may still finish, and be billed)."""
        try:
            self.with_retries("cancel", self._handle(handle).cancel)
        except fal_client.client.FalClientHTTPError as exc:
            if exc.status_code not in (400, 404):  # already completed / unknown: nothing to cancel
                raise
