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

from wansweep.errors import (
    AmbiguousSubmit,
    FailureKind,
    FalError,
    FalUnavailable,
    NotSent,
    Stopped,
)
from wansweep.fal import policy
from wansweep.fal.connection import Connection, detail
from wansweep.fal.download import DownloadMixin
from wansweep.fal.platform import PlatformMixin
from wansweep.fal.stream import Completion, StatusStreams, StreamBroken, StreamUnsupported
from wansweep.fal.types import FalResult, Handle, PollSpec
from wansweep.fal.webhooks import WebhookReceiver

log = logging.getLogger(__name__)


# fal's documented start deadline (docs: model-apis common-parameters; both official clients
# send this name). wansweep once sent X-Fal-Request-Start-Timeout, which no fal source names:
# fal would treat it as an unknown header, so it is not sent (a second name adds nothing but
# a header fal ignores).
START_DEADLINE = "X-Fal-Request-Timeout"
# Model fallbacks off: the current docs name x-app-fal-disable-fallback, the older reliability
# page x-fal-disable-fallbacks; both are sent, as neither page says the other is gone.
NO_FALLBACKS = {"x-app-fal-disable-fallback": "true", "x-fal-disable-fallbacks": "true"}
# What fal may answer when another endpoint served a request: fal documents none; these are
# the names of fal's own (unreleased) fallback code, read when present, never relied on.
SERVED_BY = ("x-app-fal-api-fallback-endpoint", "x-fal-bill-as")
BILLABLE_UNITS = "x-fal-billable-units"
MIN_DEADLINE_S = 2  # both official clients refuse a start timeout of 1 s or less


def submit_headers(deadline_s: float, allow_fallbacks: bool) -> dict[str, str]:
    """The headers of every submit: the start deadline, and fallbacks off unless allowed."""
    headers = {START_DEADLINE: str(max(MIN_DEADLINE_S, int(deadline_s)))}
    return headers if allow_fallbacks else {**headers, **NO_FALLBACKS}


def served_by(headers: Any, endpoint: str | None = None) -> str | None:
    """The endpoint an answer says served the request, when it names one other than ours."""
    for name in SERVED_BY:
        value = headers.get(name)
        if value and value != endpoint:
            return value
    return None


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
        # set when the run sends nothing more (a cause every job would meet): submits still
        # retrying stop at their next try instead of meeting it again
        self.halted = threading.Event()
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
        *,
        deadline_s: float,
        marker: tuple[str, int] | None = None,
        allow_fallbacks: bool = False,
    ) -> Handle:
        """POST once per attempt; POST again only while fal surely did not take the job.

        Raises :class:`AmbiguousSubmit` when fal may hold it, :class:`NotSent` when it surely
        does not (refused before queueing, or never connected). Every submit carries fal's
        documented start deadline (``X-Fal-Request-Timeout``: an accepted request that has not
        started by then ends unbilled, which is what lets fal's records prove, later, that a
        lost submit was never accepted) and, unless fallbacks are allowed, the headers that
        turn fal's model fallbacks off (an arm served by another model is a wrong answer).
        ``marker`` (job key, attempt) goes into the webhook URL, when webhooks are on."""
        url = f"{self.config.queue_base}/{endpoint}"
        params = None
        if self.webhooks:
            hook = self.webhooks.url_for(*marker) if marker else self.webhooks.url
            params = {"fal_webhook": hook}
        headers = submit_headers(deadline_s, allow_fallbacks)
        last, last_exc, last_code = "", None, None
        for attempt in range(self.attempts):
            if self.halted.is_set():  # only tries fal did not take came before: none sent
                raise NotSent("not sent: the run stopped submitting", run_wide=True)
            try:
                response = self.http.post(url, json=body, params=params, headers=headers)
            except httpx.TransportError as exc:
                if policy.classify_submit_error(exc) is policy.SubmitVerdict.AMBIGUOUS:
                    raise AmbiguousSubmit(f"{type(exc).__name__}: {exc}") from exc
                last, last_exc = f"{type(exc).__name__}: {exc}", exc
                self.pause_before_retry(attempt)
                continue
            code = response.status_code
            verdict = policy.classify_submit_answer(code, response.headers, response.text)
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
                last, last_exc, last_code = f"{code}: {detail(response)}", None, code
                self.pause_before_retry(attempt, response.headers)
                continue
            kind = (
                FailureKind.INVALID
                if verdict is policy.SubmitVerdict.INVALID
                else FailureKind.REJECTED
            )
            raise NotSent(
                f"submit refused before fal queued it ({code}): {detail(response)}",
                kind,
                code,
                run_wide=policy.run_wide(code),
            )
        raise NotSent(
            f"submit not accepted after {self.attempts} tries, none of which fal queued ({last})",
            FailureKind.TRANSIENT,
            last_code,
            run_wide=policy.run_wide(exc=last_exc),
        )

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
        from here (no stream offered, or ``policy.RETRIES.stream_breaks`` breaks in a row)."""
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
            if breaks >= policy.RETRIES.stream_breaks:
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

    def result(
        self, handle: Handle, generation_failed: bool = False, endpoint: str | None = None
    ) -> FalResult:
        """A completed request's result, with the billing units fal charged and the endpoint
        that served it when fal says another did; :class:`FalError` says how the job ended
        otherwise."""
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
            units = response.headers.get(BILLABLE_UNITS)
            return FalResult(response.json(), units, served_by(response.headers, endpoint))
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
