"""A fal-compatible queue server for the two Wan 2.6 image-to-video endpoints.

It answers the wire protocol in ``shared/reference/fal-protocol.md`` closely enough
for an unmodified fal-client, renders a real H.264 clip per request, models queue
and inference latency under an account concurrency limit, injects faults on
demand, and counts everything at ``GET /_local/stats``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import secrets
import ssl
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from wansweep import schema
from wansweep.localfal.config import Faults, Latency, ServerConfig
from wansweep.localfal.video import render
from wansweep.media import decode_data_uri


def input_key(endpoint: str, payload: dict[str, Any]) -> str:
    """Digest of (endpoint, request body): the key of the per-input submit counter."""
    return hashlib.sha256(json.dumps([endpoint, payload], sort_keys=True).encode()).hexdigest()[:16]


class _Dropped(Exception):
    """Raised after a partial answer so the server closes the connection mid-response."""


@dataclass
class Job:
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


class LocalFal:
    """State and handlers. ``app`` is the ASGI application."""

    def __init__(self, config: ServerConfig, media_dir: Path, ssl_bundle: str | None = None):
        self.config = config
        self.media_dir = media_dir
        self.media_dir.mkdir(parents=True, exist_ok=True)
        self.ssl_bundle = ssl_bundle
        self.jobs: dict[str, Job] = {}
        self.rng = random.Random(config.fault_seed)
        self.pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="localfal-render")
        self._slots: asyncio.Semaphore | None = None
        self._seq = 0
        self._started = 0
        self.reset_stats()
        self._webhook_client: httpx.AsyncClient | None = None
        self.app = Starlette(routes=self._routes())

    def _ssl(self) -> ssl.SSLContext | bool:
        return ssl.create_default_context(cafile=self.ssl_bundle) if self.ssl_bundle else True

    # ----------------------------------------------------------------- stats
    def reset_stats(self) -> None:
        self.stats: dict[str, Any] = {
            "submits_accepted": 0,
            "submits_rejected": 0,
            "submits_by_input": Counter(),
            "status_polls": 0,
            "status_polls_by_request": Counter(),
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
        }

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
            Route("/_local/stats", self.get_stats, methods=["GET"]),
            Route("/_local/reset", self.post_reset, methods=["POST"]),
            Route("/_local/config", self.post_config, methods=["POST"]),
            Route("/_local/expire-media", self.post_expire_media, methods=["POST"]),
            Route("/_local/media/{name}", self.get_media, methods=["GET"]),
            Route("/_local/files/{name}", self.files, methods=["GET", "PUT"]),
            Route("/v1/models/requests/by-endpoint", self.list_requests, methods=["GET"]),
            Route("/v1/models/pricing", self.pricing, methods=["GET"]),
            Route(base + "/status/stream", self.status_stream, methods=["GET"]),
            Route(base + "/status", self.status, methods=["GET"]),
            Route(base + "/cancel", self.cancel, methods=["PUT"]),
            Route(base, self.result, methods=["GET"]),
            Route("/{endpoint:path}", self.submit, methods=["POST"]),
        ]

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

    @staticmethod
    def _ingress_error(code: int) -> Response:
        html = f"<html><head><title>{code}</title></head><body><center><h1>{code}</h1></center><hr><center>nginx</center></body></html>"
        return Response(html, status_code=code, media_type="text/html")

    @staticmethod
    def _fal_error(code: int, detail: str, error_type: str, rid: str | None = None) -> JSONResponse:
        headers = {"X-Fal-Error-Type": error_type}
        if rid:
            headers["x-fal-request-id"] = rid
        return JSONResponse({"detail": detail, "error_type": error_type}, code, headers=headers)

    # ---------------------------------------------------------------- queue
    async def submit(self, request: Request) -> Response:
        endpoint = request.path_params["endpoint"].strip("/")
        if endpoint not in schema.ENDPOINTS:
            return JSONResponse({"detail": f"Application '{endpoint}' not found"}, 404)
        if not self._authorized(request):
            return self._unauthorized()
        try:
            payload = json.loads(await request.body() or b"null")
        except ValueError:
            return JSONResponse({"detail": "Request body is not valid JSON"}, 400)
        if not isinstance(payload, dict):
            return JSONResponse({"detail": "Request body must be a JSON object"}, 422)
        if self._fault("submit_429"):
            self.stats["submits_rejected"] += 1
            return JSONResponse(
                {"detail": "Too many requests"},
                429,
                headers={"Retry-After": "1", "X-Fal-Error-Type": "rate_limited"},
            )
        if self._fault("submit_5xx"):
            self.stats["submits_rejected"] += 1
            return self._fal_error(500, "Internal server error", "internal_server_error")
        if self._fault("submit_ingress_5xx"):
            self.stats["submits_rejected"] += 1
            return self._ingress_error(502)

        rid = str(uuid.uuid4())
        self._seq += 1
        job = Job(
            rid, endpoint, payload, request.query_params.get("fal_webhook"), time.time(), self._seq
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
            return _DroppedResponse(answer)
        return JSONResponse(answer, headers={"x-fal-request-id": rid})

    def _position(self, job: Job) -> int:
        return max(0, job.queue_seq - self._started - 1)

    def _job(self, request: Request) -> Job | None:
        return self.jobs.get(request.path_params["request_id"])

    def _status_body(self, job: Job, with_logs: bool) -> tuple[dict[str, Any], int]:
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
            return self._ingress_error(503)
        with_logs = request.query_params.get("logs", "false").lower() in ("true", "1")
        body, code = self._status_body(job, with_logs)
        return JSONResponse(body, code, headers={"x-fal-request-id": job.request_id})

    async def status_stream(self, request: Request) -> Response:
        if not self._authorized(request):
            return self._unauthorized()
        job = self._job(request)
        if job is None:
            return JSONResponse({"detail": "Request not found"}, 404)
        with_logs = request.query_params.get("logs", "false").lower() in ("true", "1")

        async def events():
            last = None
            while True:
                body, _ = self._status_body(job, with_logs)
                text = json.dumps(body)
                if text != last:
                    yield f"data: {text}\n\n".encode()
                    last = text
                if job.status == "COMPLETED":
                    return
                await asyncio.sleep(0.05)

        return StreamingResponse(events(), media_type="text/event-stream")

    async def result(self, request: Request) -> Response:
        if not self._authorized(request):
            return self._unauthorized()
        self.stats["result_fetches"] += 1
        job = self._job(request)
        if job is None:
            return JSONResponse({"detail": "Request not found"}, 404)
        if job.status != "COMPLETED":
            return JSONResponse({"detail": "Request is still in progress"}, 400)
        if time.time() - (job.ended_at or 0) > self.config.faults.retention:
            return JSONResponse(
                {"detail": "Request result has expired", "error_type": "result_expired"}, 410
            )
        if self._fault("result_5xx"):
            return self._fal_error(500, "Internal server error", "internal_server_error")
        headers = {"x-fal-request-id": job.request_id}
        if job.error:
            if job.error["status_code"] == 422:
                headers["X-Fal-Retryable"] = "false"
            return JSONResponse(job.error["body"], job.error["status_code"], headers=headers)
        return JSONResponse(job.output, headers=headers)

    async def cancel(self, request: Request) -> Response:
        if not self._authorized(request):
            return self._unauthorized()
        job = self._job(request)
        if job is None:
            return JSONResponse({"status": "NOT_FOUND"}, 404)
        if job.status == "COMPLETED":
            return JSONResponse({"status": "ALREADY_COMPLETED"}, 400)
        self.stats["cancels"] += 1
        job.cancelled = True
        if job.task is not None:
            job.task.cancel()
        return JSONResponse({"status": "CANCELLATION_REQUESTED"}, 202)

    # ------------------------------------------------------------ processing
    async def _run(self, job: Job, base_url: str) -> None:
        video_seconds = (
            float(job.payload.get("duration", "5"))
            if job.payload.get("duration") in schema.DURATIONS
            else 5.0
        )
        queue_s, infer_s = self.config.latency.split(job.endpoint, video_seconds)
        loop = asyncio.get_running_loop()
        try:
            if queue_s:
                await asyncio.sleep(queue_s)
            if self._slots is None:
                self._slots = asyncio.Semaphore(self.config.concurrency)
            async with self._slots:
                self._started += 1
                job.status, job.started_at = "IN_PROGRESS", time.time()
                self.stats["in_progress"] += 1
                self.stats["peak_in_progress"] = max(
                    self.stats["peak_in_progress"], self.stats["in_progress"]
                )
                job.logs.append(
                    {
                        "message": "Generating video",
                        "level": "INFO",
                        "timestamp": _iso(job.started_at),
                    }
                )
                try:
                    t0 = loop.time()
                    await self._generate(job, base_url)
                    left = infer_s - (loop.time() - t0)
                    if left > 0:
                        await asyncio.sleep(left)
                finally:
                    self.stats["in_progress"] -= 1
        except asyncio.CancelledError:
            if job.status == "IN_QUEUE":
                self._started += 1  # keeps queue positions of later jobs right
            job.error = {
                "status_code": 400,
                "body": {"detail": "Request was cancelled", "error_type": "request_cancelled"},
            }
        except Exception as exc:  # a bug here must still end the request
            job.error = {
                "status_code": 500,
                "body": {"detail": f"Internal error: {exc}", "error_type": "internal_server_error"},
            }
        job.status, job.ended_at = "COMPLETED", time.time()
        job.status_code = job.error["status_code"] if job.error else 200
        self.stats[
            "completed" if not job.error else "invalid" if job.status_code == 422 else "failed"
        ] += 1
        if job.webhook and not self._fault("webhook_drop"):
            loop.create_task(self._deliver_webhook(job))

    async def _generate(self, job: Job, base_url: str) -> None:
        payload = job.payload
        problems = [p for p in schema.check_input(payload) if p.severity == "error"]
        image = audio = None
        if not any(p.field == "image_url" for p in problems):
            try:
                image = await self._fetch(payload["image_url"])
            except Exception as exc:
                problems.append(
                    schema.Problem(
                        "image_url", "file_download_error", f"Failed to download the file: {exc}"
                    )
                )
            else:
                _, img_problems = schema.check_image(image)
                problems += [p for p in img_problems if p.severity == "error"]
        if payload.get("audio_url") and not any(p.field == "audio_url" for p in problems):
            try:
                audio = await self._fetch(payload["audio_url"])
            except Exception as exc:
                problems.append(
                    schema.Problem(
                        "audio_url", "file_download_error", f"Failed to download the file: {exc}"
                    )
                )
            else:
                problems += schema.check_audio(audio)
        if problems:
            job.error = {"status_code": 422, "body": {"detail": [p.fal_detail() for p in problems]}}
            return
        if self._fault("flagged"):
            job.error = {
                "status_code": 422,
                "body": {
                    "detail": [
                        {
                            "loc": ["body", "image_url"],
                            "msg": "Image was flagged by the safety checker",
                            "type": "content_policy_violation",
                        }
                    ]
                },
            }
            return
        if self._fault("failed"):
            job.error = {
                "status_code": 500,
                "body": {"detail": "Generation failed on the runner", "error_type": "runner_error"},
            }
            return

        settings = {**schema.FAL_DEFAULTS, **payload}
        seed = payload.get("seed")
        if seed is None:
            seed = random.randrange(2**31)
        expand = bool(settings["enable_prompt_expansion"])
        tiny = self.config.media == "tiny"
        key = hashlib.sha256(
            json.dumps(
                [
                    hashlib.sha256(image).hexdigest(),
                    hashlib.sha256(audio or b"").hexdigest(),
                    payload["prompt"],
                    seed,
                    settings["resolution"],
                    settings["duration"],
                    expand and bool(settings["multi_shots"]),
                    tiny,
                ],
                sort_keys=True,
            ).encode()
        ).hexdigest()[:24]
        name = f"{key}.mp4"
        path = self.media_dir / name
        meta_path = path.with_suffix(".json")
        if meta_path.exists() and path.exists():
            meta = json.loads(meta_path.read_text())
        else:
            clip = await asyncio.get_running_loop().run_in_executor(
                self.pool,
                lambda: render(
                    image,
                    prompt=payload["prompt"],
                    seed=seed,
                    resolution=settings["resolution"],
                    duration=settings["duration"],
                    multi_shots=expand and bool(settings["multi_shots"]),
                    audio=audio,
                    fps=4 if tiny else 16,
                    short_side=64 if tiny else None,
                ),
            )
            tmp = path.with_suffix(".part")
            tmp.write_bytes(clip.data)
            tmp.replace(path)
            meta = {
                "width": clip.width,
                "height": clip.height,
                "fps": clip.fps,
                "duration": clip.duration,
                "num_frames": clip.num_frames,
                "file_size": len(clip.data),
            }
            meta_path.write_text(json.dumps(meta))
        output: dict[str, Any] = {
            "video": {
                "url": f"{base_url}/_local/media/{name}",
                "content_type": "video/mp4",
                "file_name": name,
                **meta,
            },
            "seed": seed,
        }
        if expand:
            output["actual_prompt"] = _expand(payload["prompt"], seed)
        job.output = output

    async def _fetch(self, url: str) -> bytes:
        if url.startswith("data:"):
            return decode_data_uri(url)
        if url.startswith(("http://", "https://")):
            own = "/_local/files/"
            if own in url:
                return (self.media_dir / "files" / url.split(own, 1)[1].split("?")[0]).read_bytes()
            async with httpx.AsyncClient(
                verify=self._ssl(), timeout=30, follow_redirects=True
            ) as client:
                response = await client.get(url)
                response.raise_for_status()
                return response.content
        raise ValueError("URL must be https://, http:// or a data URI")

    async def _deliver_webhook(self, job: Job) -> None:
        body = {
            "request_id": job.request_id,
            "gateway_request_id": job.request_id,
            "status": "ERROR" if job.error else "OK",
            "payload": job.output if not job.error else job.error["body"],
            "error": None if not job.error else f"Request failed ({job.status_code})",
        }
        try:
            if self._webhook_client is None:  # one client: a TLS context per call costs ms of CPU
                self._webhook_client = httpx.AsyncClient(verify=self._ssl(), timeout=10)
            (await self._webhook_client.post(job.webhook, json=body)).raise_for_status()
            self.stats["webhooks_sent"] += 1
        except Exception:
            self.stats["webhooks_failed"] += 1

    # ---------------------------------------------------------- media, admin
    async def get_media(self, request: Request) -> Response:
        path = self.media_dir / Path(request.path_params["name"]).name
        if path.suffix != ".mp4" or not path.exists():
            return JSONResponse({"detail": "File not found"}, 404)
        self.stats["downloads"] += 1
        size = path.stat().st_size
        fail = self._fault("download_fail")
        slow = self._fault("download_slow")
        rate = self.config.faults.slow_bytes_per_s

        async def body():
            sent = 0
            with path.open("rb") as f:
                while chunk := f.read(256 * 1024):
                    if fail and sent + len(chunk) > size // 2:
                        raise _Dropped("download dropped by fault injection")
                    sent += len(chunk)
                    self.stats["bytes_served"] += len(chunk)
                    yield chunk
                    if slow:
                        await asyncio.sleep(len(chunk) / rate)

        return StreamingResponse(
            body(), media_type="video/mp4", headers={"Content-Length": str(size)}
        )

    async def files(self, request: Request) -> Response:
        """PUT stores a file that requests may then name by URL; GET serves it."""
        folder = self.media_dir / "files"
        path = folder / Path(request.path_params["name"]).name
        if request.method == "PUT":
            folder.mkdir(exist_ok=True)
            path.write_bytes(await request.body())
            return JSONResponse({"url": f"{self._base_url(request)}/_local/files/{path.name}"})
        if not path.exists():
            return JSONResponse({"detail": "File not found"}, 404)
        return Response(path.read_bytes())

    async def get_stats(self, request: Request) -> Response:
        return JSONResponse(self.snapshot())

    async def post_reset(self, request: Request) -> Response:
        self.reset_stats()
        return JSONResponse({"ok": True})

    async def post_expire_media(self, request: Request) -> Response:
        """Forget every generated video, as fal's CDN does after its retention (tests)."""
        removed = 0
        for path in self.media_dir.glob("*.mp4"):
            path.with_suffix(".json").unlink(missing_ok=True)  # the render cache entry first
            path.unlink(missing_ok=True)
            removed += 1
        return JSONResponse({"removed": removed})

    async def post_config(self, request: Request) -> Response:
        """Change latency, faults or concurrency of a running server (tests, benchmarks)."""
        body = await request.json()
        try:
            changes: dict[str, Any] = {}
            if "latency" in body:
                changes["latency"] = Latency.parse(body["latency"])
            if "faults" in body:
                changes["faults"] = Faults.parse(body["faults"])
            if "media" in body:
                changes["media"] = body["media"]
            if "concurrency" in body:
                changes["concurrency"] = int(body["concurrency"])
                self._slots = (
                    None
                    if not any(j.status != "COMPLETED" for j in self.jobs.values())
                    else self._slots
                )
        except ValueError as exc:
            return JSONResponse({"detail": str(exc)}, 422)
        self.config = replace(self.config, **changes)
        if "fault_seed" in body:
            self.rng = random.Random(body["fault_seed"])
        return JSONResponse({"ok": True})

    # -------------------------------------------------------- platform API
    async def list_requests(self, request: Request) -> Response:
        """``GET /v1/models/requests/by-endpoint``: recent requests, newest first."""
        if not self._authorized(request):
            return self._unauthorized()
        q = request.query_params
        endpoint = q.get("endpoint_id")
        start = _parse_time(q.get("start"))
        end = _parse_time(q.get("end"))
        limit = min(int(q.get("limit", 50)), 1000)
        offset = int(q.get("cursor") or 0)
        expand = "payloads" in q.get("expand", "")
        rows = [
            j
            for j in self.jobs.values()
            if (endpoint is None or j.endpoint == endpoint)
            and (start is None or j.sent_at >= start)
            and (end is None or j.sent_at <= end)
        ]
        rows.sort(key=lambda j: j.sent_at, reverse=True)
        page = rows[offset : offset + limit]
        items = []
        for j in page:
            item = {
                "request_id": j.request_id,
                "endpoint_id": j.endpoint,
                "sent_at": _iso(j.sent_at),
                "started_at": _iso(j.started_at),
                "ended_at": _iso(j.ended_at),
                "status_code": j.status_code,
                "duration": round(j.ended_at - j.started_at, 3)
                if j.ended_at and j.started_at
                else None,
            }
            if expand:
                item["json_input"] = j.payload
                item["json_output"] = j.output if not j.error else j.error["body"]
            items.append(item)
        more = offset + limit < len(rows)
        return JSONResponse(
            {"items": items, "next_cursor": str(offset + limit) if more else None, "has_more": more}
        )

    async def pricing(self, request: Request) -> Response:
        if not self._authorized(request):
            return self._unauthorized()
        from wansweep.pricing import PriceTable

        table = PriceTable.load()
        wanted = request.query_params.getlist("endpoint_id") or list(schema.ENDPOINTS)
        prices = [
            {
                "endpoint_id": e,
                "unit_price": table.unit_price(e, "720p"),
                "unit": "second",
                "currency": "USD",
            }
            for e in wanted
            if e in schema.ENDPOINTS
        ]
        return JSONResponse({"prices": prices})


class _DroppedResponse(Response):
    """Sends the answer's headers and half its body, then breaks the connection."""

    def __init__(self, answer: dict[str, Any]):
        super().__init__()
        self.answer = json.dumps(answer).encode()

    async def __call__(self, scope, receive, send) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(self.answer)).encode()),
                ],
            }
        )
        await send(
            {
                "type": "http.response.body",
                "body": self.answer[: len(self.answer) // 2],
                "more_body": True,
            }
        )
        raise _Dropped("connection dropped after accept (fault injection)")


def _expand(prompt: str, seed: int) -> str:
    flavour = ["cinematic lighting", "smooth camera motion", "rich detail", "natural colours"]
    return (
        f"{prompt.strip()} ({flavour[seed % len(flavour)]}, {flavour[(seed // 4) % len(flavour)]})"
    )


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1e6):06d}Z"


def _parse_time(text: str | None) -> float | None:
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        from datetime import datetime

        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
