"""The local server's scheduler: each request waits in its queue, takes one of the account's
``concurrency`` slots (or ends with fal's 504 past its start deadline), runs, and is billed as
fal bills."""

from __future__ import annotations

import asyncio

from wansweep.localfal.queue import FalRequest, iso


class SchedulerMixin:
    """Part of :class:`~wansweep.localfal.server.LocalFal`: running requests under the limit."""

    async def _run(self, job: FalRequest, base_url: str) -> None:
        video_seconds = float(job.settings_seconds())
        queue_s, infer_s = self.config.latency.split(job.endpoint, video_seconds)
        loop = asyncio.get_running_loop()
        try:
            if queue_s:
                await asyncio.sleep(queue_s)
            await self._take_slot(job)
            try:
                self._started += 1
                job.set_status("IN_PROGRESS", self.now())
                self.stats["in_progress"] += 1
                self.stats["peak_in_progress"] = max(
                    self.stats["peak_in_progress"], self.stats["in_progress"]
                )
                job.logs.append(
                    {
                        "message": "Generating video",
                        "level": "INFO",
                        "timestamp": iso(job.started_at),
                    }
                )
                t0 = loop.time()
                await self._generate(job, base_url)
                left = infer_s - (loop.time() - t0)
                if left > 0:
                    await asyncio.sleep(left)
            finally:
                self.stats["in_progress"] -= 1
                await self._free_slot()
        except _StartTimeout:
            self._started += 1  # keeps queue positions of later jobs right
            job.error = {
                "status_code": 504,
                "body": {
                    "detail": "Request timed out before it started",
                    "error_type": "request_timeout",
                },
                "headers": {"X-Fal-Request-Timeout-Type": "user"},
            }
        except asyncio.CancelledError:
            if job.status == "IN_QUEUE":
                self._started += 1
            job.error = {
                "status_code": 400,
                "body": {"detail": "Request was cancelled", "error_type": "request_cancelled"},
            }
        except Exception as exc:  # a bug here must still end the request
            job.error = {
                "status_code": 500,
                "body": {
                    "detail": f"Internal error: {type(exc).__name__}",
                    "error_type": "internal_server_error",
                },
            }
        job.status_code = job.error["status_code"] if job.error else 200
        job.set_status("COMPLETED", self.now())
        self._bill(job, video_seconds)
        self.stats[
            "completed" if not job.error else "invalid" if job.status_code == 422 else "failed"
        ] += 1
        if job.webhook and not self._fault("webhook_drop"):
            loop.create_task(self._deliver_webhook(job))

    async def _take_slot(self, job: FalRequest) -> None:
        """Wait for one of the account's ``concurrency`` slots (read at every change, so a new
        limit applies at once); past the request's start timeout, give up (fal: 504)."""
        if self._slot_free is None:
            self._slot_free = asyncio.Condition()
        async with self._slot_free:
            wait = self._slot_free.wait_for(lambda: self._running < self.config.concurrency)
            if job.start_timeout is None:
                await wait
            else:
                left = job.sent_at + job.start_timeout - self.now()
                try:
                    await asyncio.wait_for(wait, timeout=max(0.0, left))
                except TimeoutError:
                    raise _StartTimeout from None
            self._running += 1

    async def _free_slot(self) -> None:
        async with self._slot_free:
            self._running -= 1
            self._slot_free.notify_all()

    def _bill(self, job: FalRequest, video_seconds: float) -> None:
        """fal bills a produced video, and a 422 after GPU time (the flagged case); never a 5xx,
        a start timeout or a request cancelled before it ran. As fal does, in units of the
        pricing API's one price per endpoint (its base rate here), a dearer tier counting
        more units: 5 s at 1080p of a 0.10/0.15 endpoint is 7.5 units of 0.10. The price is
        the profile's (configs/endpoints). A rerouted request is billed as the endpoint that
        served it."""
        from wansweep.plan.endpoints import profile

        flagged = job.error and job.error.get("gpu_time")
        if job.status_code == 200 or flagged:
            billed_as = profile(job.served_by or job.endpoint)
            try:
                job.unit_price = self.unit_price(billed_as.id)
                settings = profile(job.endpoint).settings_of(job.payload)
                cost = billed_as.estimate(settings) * self.config.price_factor
            except Exception:  # a request its profile cannot price (a 422 among them)
                job.unit_price, cost = 0.0, 0.0
            job.billed_units = round(cost / job.unit_price, 8) if job.unit_price else 0.0


class _StartTimeout(Exception):
    """The request did not start within its X-Fal-Request-Timeout."""
