"""The local server's own routes (``/_local/...``): media, uploaded files, counters, config."""

from __future__ import annotations

import asyncio
import json
import random
from dataclasses import replace
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from wansweep.localfal.config import Faults, Latency
from wansweep.localfal.faults import Dropped


class AdminRoutes:
    """Part of :class:`~wansweep.localfal.server.LocalFal`: what tests and rehearsals use."""

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
                        raise Dropped("download dropped by fault injection")
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
        name = Path(request.path_params["name"]).name
        if request.method == "PUT":
            if not name or name.startswith("."):
                return JSONResponse({"detail": "invalid file name"}, 422)
            folder.mkdir(exist_ok=True)
            (folder / name).write_bytes(await request.body())
            return JSONResponse({"url": f"{self._base_url(request)}/_local/files/{name}"})
        try:
            return Response(self.own_file(name).read_bytes())
        except FileNotFoundError:
            return JSONResponse({"detail": "File not found"}, 404)

    async def get_stats(self, request: Request) -> Response:
        return JSONResponse(self.snapshot())

    async def get_requests(self, request: Request) -> Response:
        """Every request's own times (the server's clock): what tests compare reports with."""
        return JSONResponse(
            [
                {
                    "request_id": j.request_id,
                    "sent_at": j.sent_at,
                    "started_at": j.started_at,
                    "ended_at": j.ended_at,
                    "status_code": j.status_code,
                    "headers": j.headers,  # the X-Fal-* headers the submit carried
                    "served_by": j.served_by,
                    "billed_units": j.billed_units,
                }
                for j in self.jobs.values()
            ]
        )

    async def post_sign_webhook(self, request: Request) -> Response:
        """The headers this server would sign a webhook body with (``{"request_id", "body",
        "timestamp"?}``): for testing a receiver with deliveries fal would really send, stale
        ones included."""
        try:
            asked = await request.json()
            body = json.dumps(asked["body"]).encode()
            headers = self.sign_webhook(str(asked["request_id"]), body, asked.get("timestamp"))
        except (ValueError, KeyError, TypeError) as exc:
            return JSONResponse({"detail": f"expected request_id and body: {exc}"}, 422)
        return JSONResponse({"headers": headers, "content": body.decode()})

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
        """Change latency, faults, concurrency, listing mode, cancel behaviour or clock of a
        running server (tests, benchmarks). Every value is checked; nothing changes on error."""
        try:
            body = await request.json()
            if not isinstance(body, dict):
                raise ValueError("expected a JSON object")
            unknown = set(body) - CONFIGURABLE
            if unknown:
                raise ValueError(
                    f"unknown setting(s) {sorted(unknown)}; known: {sorted(CONFIGURABLE)}"
                )
            changes: dict[str, Any] = {}
            if "latency" in body:
                changes["latency"] = Latency.parse(str(body["latency"]))
            if "faults" in body:
                changes["faults"] = Faults.parse(str(body["faults"]))
            for name in ("media", "listing", "cancel_running", "status_stream"):
                if name in body:
                    changes[name] = str(body[name])
            if "concurrency" in body:
                changes["concurrency"] = int(body["concurrency"])
            if "clock_offset" in body:
                changes["clock_offset"] = float(body["clock_offset"])
            if "price_factor" in body:
                changes["price_factor"] = float(body["price_factor"])
            config = replace(self.config, **changes)  # validates (ServerConfig.__post_init__)
            seed = int(body["fault_seed"]) if "fault_seed" in body else None
        except (ValueError, TypeError) as exc:
            return JSONResponse({"detail": str(exc)}, 422)
        self.config = config
        if self._slot_free is not None:  # a higher limit lets waiting requests start now
            async with self._slot_free:
                self._slot_free.notify_all()
        if seed is not None:
            self.rng = random.Random(seed)
        return JSONResponse({"ok": True})


CONFIGURABLE = {
    "latency",
    "faults",
    "media",
    "listing",
    "cancel_running",
    "status_stream",
    "concurrency",
    "clock_offset",
    "price_factor",
    "fault_seed",
}
