"""The local server's queue: submit, status (and its stream), result, cancel, the scheduler
that runs each request under the account's concurrency limit, and webhook delivery."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from wansweep.localfal.faults import Dropped, DroppedResponse, fal_error, ingress_error
from wansweep.plan.endpoints import profile, registry


def input_key(endpoint: str, payload: dict[str, Any]) -> str:
    """Digest of (endpoint, request body): the key of the per-input submit counter."""
    return hashlib.sha256(json.dumps([endpoint, payload], sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class FalRequest:
    """One request as the server holds it."""

    request_id: str
    endpoint: str
    payload: dict[str, Any]
    webhook: str | None
    sent_at: float
    queue_seq: int
    status: str = "IN_QUEUE"
    started_at: float | None = None
    ended_at: float | None = None
    status_code: int | None = None
    output: dict[str, Any] | None = None
    error: dict[str, Any] | None = None  # {"status_code": int, "body": {...}}
    logs: list[dict[str, Any]] = field(default_factory=list)
    task: asyncio.Task | None = None
    cancelled: bool = False
    start_timeout: float | None = None  # X-Fal-Request-Timeout: seconds to start
    payload_stored: bool = True  # False: listed without its payload (payload storage off)
    headers: dict[str, str] = field(default_factory=dict)  # the X-Fal-* headers it was sent
    served_by: str | None = None  # another endpoint served it (a model fallback)
    billed_units: float | None = None  # set when the request ends billed
    unit_price: float = 0.0  # per unit, as the pricing API says
    changed: asyncio.Event = field(default_factory=asyncio.Event)  # set at each status change

    def settings_seconds(self) -> int:
        """Seconds of video the request asks for (5 when its fields do not say)."""
        from wansweep.plan.endpoints import profile

        try:
            prof = profile(self.endpoint)
            return prof.seconds(prof.settings_of(self.payload))
        except (ValueError, TypeError, KeyError):
            return 5

    def set_status(self, status: str, at: float) -> None:
        """Change status and wake its streams in one step: a stream and a status poll never
        disagree about when a request started or ended."""
        self.status = status
        if status == "IN_PROGRESS":
            self.started_at = at
        elif status == "COMPLETED":
            self.ended_at = at
        self.changed.set()
        self.changed = asyncio.Event()


def iso(ts: float | None) -> str | None:
    """fal's timestamp format (UTC, microseconds, Z)."""
    if ts is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1e6):06d}Z"


class QueueRoutes:
    """Part of :class:`~wansweep.localfal.server.LocalFal`: the queue protocol."""

    async def submit(self, request: Request) -> Response:
        endpoint = request.path_params["endpoint"].strip("/")
        if endpoint not in registry().ids:
            return JSONResponse({"detail": f"Application '{endpoint}' not found"}, 404)
        if not self._authorized(request):
            return self._unauthorized()
        try:
            payload = json.loads(await request.body() or b"null")
        except ValueError:
            return JSONResponse({"detail": "Request body is not valid JSON"}, 400)
        if not isinstance(payload, dict):
            return JSONResponse({"detail": "Request body must be a JSON object"}, 422)
        if self._fault("submit_401"):
            self.stats["submits_rejected"] += 1
            return self._unauthorized()
        if self._fault("submit_429"):
            self.stats["submits_rejected"] += 1
            return JSONResponse(
                {"detail": "Too many requests"},
                429,
                headers={"Retry-After": "1", "X-Fal-Error-Type": "rate_limited"},
            )
        if self._fault("submit_5xx"):
            self.stats["submits_rejected"] += 1
            return fal_error(500, "Internal server error", "internal_server_error")
        if self._fault("submit_ingress_5xx"):
            self.stats["submits_rejected"] += 1
            return ingress_error(502)

        rid = str(uuid.uuid4())
        self._seq += 1
        job = FalRequest(
            rid, endpoint, payload, request.query_params.get("fal_webhook"), self.now(), self._seq
        )
        job.headers = {
            k.lower(): v
            for k, v in request.headers.items()
            if k.lower().startswith(("x-fal-", "x-app-fal-"))
        }
        # fal's documented start deadline; any other name is a header fal does not know
        job.start_timeout = _seconds(job.headers.get("x-fal-request-timeout"))
        fallbacks_off = any(job.headers.get(h, "").lower() == "true" for h in FALLBACKS_OFF)
        if not fallbacks_off and self._fault("fallback"):  # fal rerouted it to another model
            job.served_by = fallback_for(endpoint)
        job.payload_stored = request.headers.get("x-fal-store-io") != "0" and not self._fault(
            "listing_payloads"
        )
        self.jobs[rid] = job
        self.stats["submits_accepted"] += 1
        self.stats["submits_by_input"][input_key(endpoint, payload)] += 1
        job.task = asyncio.get_running_loop().create_task(self._run(job, self._base_url(request)))

        app = "/".join(endpoint.split("/")[:2])
        base = f"{self._base_url(request)}/{app}/requests/{rid}"
        answer = {
            "status": "IN_QUEUE",
            "request_id": rid,
            "queue_position": self._position(job),
            "response_url": base,
            "status_url": base + "/status",
            "cancel_url": base + "/cancel",
        }
        if self._fault("drop_after_accept"):
            return DroppedResponse(answer)
        if self._fault("submit_5xx_after_accept"):  # fal's app took it, then answered 500
            return fal_error(500, "Internal server error", "internal_server_error", rid)
        return JSONResponse(answer, headers={"x-fal-request-id": rid})

    def _position(self, job: FalRequest) -> int:
        return max(0, job.queue_seq - self._started - 1)

    def _job(self, request: Request) -> FalRequest | None:
        return self.jobs.get(request.path_params["request_id"])

    def _status_body(self, job: FalRequest, with_logs: bool) -> tuple[dict[str, Any], int]:
        logs = job.logs if with_logs else None
        if job.status == "IN_QUEUE":
            return {
                "status": "IN_QUEUE",
                "queue_position": self._position(job),
                "response_url": None,
            }, 202
        if job.status == "IN_PROGRESS":
            return {"status": "IN_PROGRESS", "logs": logs}, 202
        body: dict[str, Any] = {"status": "COMPLETED", "logs": logs, "metrics": {}}
        if job.started_at and job.ended_at:
            body["metrics"]["inference_time"] = round(job.ended_at - job.started_at, 3)
        if job.error:
            body["error"] = (
                job.error["body"].get("detail")
                if isinstance(job.error["body"].get("detail"), str)
                else "Validation error"
            )
            body["error_type"] = job.error["body"].get("error_type", "validation_error")
        return body, 200

    async def status(self, request: Request) -> Response:
        if not self._authorized(request):
            return self._unauthorized()
        self.stats["status_polls"] += 1
        job = self._job(request)
        if job is None:
            return JSONResponse({"detail": "Request not found"}, 404)
        self.stats["status_polls_by_request"][job.request_id] += 1
        if self._fault("status_429"):
            return JSONResponse({"detail": "Too many requests"}, 429, headers={"Retry-After": "1"})
        if self._fault("status_5xx"):
            return ingress_error(503)
        with_logs = request.query_params.get("logs", "false").lower() in ("true", "1")
        body, code = self._status_body(job, with_logs)
        headers = {"x-fal-request-id": job.request_id, **self._served_headers(job)}
        return JSONResponse(body, code, headers=headers)

    async def status_stream(self, request: Request) -> Response:
        """Server-sent events: the current status at once, then one ``data:`` event per change
        (queue positions refreshed every ``STREAM_KEEPALIVE`` s, else a ``:`` comment keeps the
        connection alive); the stream ends after COMPLETED. ``status_stream=404|405`` answers
        that instead, as a server without streams might; the ``stream_drop`` fault breaks one."""
        if not self._authorized(request):
            return self._unauthorized()
        if self.config.status_stream != "on":
            code = int(self.config.status_stream)
            return JSONResponse(
                {"detail": "Not Found" if code == 404 else "Method Not Allowed"}, code
            )
        job = self._job(request)
        if job is None:
            return JSONResponse({"detail": "Request not found"}, 404)
        self.stats["stream_connects"] += 1
        self.stats["status_polls_by_request"][job.request_id] += 1
        with_logs = request.query_params.get("logs", "false").lower() in ("true", "1")
        return StreamingResponse(
            self._events(job, with_logs),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "x-fal-request-id": job.request_id},
        )

    async def _events(self, job: FalRequest, with_logs: bool):
        self.stats["streams_open"] += 1
        self.stats["peak_streams_open"] = max(
            self.stats["peak_streams_open"], self.stats["streams_open"]
        )
        try:
            last = None
            while True:
                changed = job.changed  # taken before the body, so no change slips between
                body, _ = self._status_body(job, with_logs)
                text = json.dumps(body)
                if self._fault("stream_drop"):
                    raise Dropped("status stream dropped (fault injection)")
                if text != last:
                    yield f"data: {text}\n\n".encode()
                    last = text
                else:
                    yield b": keep-alive\n\n"
                if job.status == "COMPLETED":
                    return
                try:
                    await asyncio.wait_for(changed.wait(), STREAM_KEEPALIVE)
                except TimeoutError:
                    pass
        finally:
            self.stats["streams_open"] -= 1

    async def result(self, request: Request) -> Response:
        if not self._authorized(request):
            return self._unauthorized()
        self.stats["result_fetches"] += 1
        job = self._job(request)
        if job is None:
            return JSONResponse({"detail": "Request not found"}, 404)
        if job.status != "COMPLETED":
            return JSONResponse({"detail": "Request is still in progress"}, 400)
        if self.now() - (job.ended_at or 0) > self.config.faults.retention:
            return JSONResponse(
                {"detail": "Request result has expired", "error_type": "result_expired"}, 410
            )
        if self._fault("result_5xx"):
            return fal_error(500, "Internal server error", "internal_server_error")
        headers = (
            {"x-fal-request-id": job.request_id, **job.error.get("headers", {})}
            if job.error
            else {"x-fal-request-id": job.request_id}
        )
        headers |= self._served_headers(job)
        if job.billed_units is not None:  # fal's billing units of this request (docs: headers)
            headers["x-fal-billable-units"] = f"{job.billed_units:.8f}".rstrip("0").rstrip(".")
        if job.error:
            if job.error["status_code"] == 422:
                headers["X-Fal-Retryable"] = "false"
            return JSONResponse(job.error["body"], job.error["status_code"], headers=headers)
        return JSONResponse(job.output, headers=headers)

    @staticmethod
    def _served_headers(job: FalRequest) -> dict[str, str]:
        """What a rerouted request's answers say (the names of fal's own fallback code)."""
        if job.served_by is None:
            return {}
        return {
            "x-app-fal-api-fallback": "true",
            "x-app-fal-api-fallback-endpoint": job.served_by,
            "x-fal-bill-as": job.served_by,
        }

    async def cancel(self, request: Request) -> Response:
        """A queued request is removed. For a running one fal only signals the app, which may
        finish it anyway (and bill it): ``cancel_running=complete`` (the default) does that."""
        if not self._authorized(request):
            return self._unauthorized()
        job = self._job(request)
        if job is None:
            return JSONResponse({"status": "NOT_FOUND"}, 404)
        if job.status == "COMPLETED":
            return JSONResponse({"status": "ALREADY_COMPLETED"}, 400)
        self.stats["cancels"] += 1
        job.cancelled = True
        running = job.status == "IN_PROGRESS"
        if job.task is not None and not (running and self.config.cancel_running == "complete"):
            job.task.cancel()
        return JSONResponse({"status": "CANCELLATION_REQUESTED"}, 202)


# the headers that turn fal's model fallbacks off (docs, old and new names)
FALLBACKS_OFF = ("x-app-fal-disable-fallback", "x-fal-disable-fallbacks")


def fallback_for(endpoint: str) -> str:
    """The 'equivalent alternative endpoint' fal would reroute a request to (here: another
    endpoint of the same model family)."""
    family = profile(endpoint).family
    others = [p.id for p in registry().profiles if p.family == family and p.id != endpoint]
    return others[0] if others else endpoint


STREAM_KEEPALIVE = 10.0  # seconds between events on a quiet stream


def _seconds(text: str | None) -> float | None:
    try:
        return max(0.0, float(text)) if text else None
    except ValueError:
        return None
