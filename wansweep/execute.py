"""One job, start to archive: the steps that spend money, written so none happens twice.

sidecar exists             -> done, nothing to do (the archive is the cache)
ledger has a result        -> archive from it (no new submit)
ledger has a request_id    -> resume: poll that request
ledger says "submitting"   -> the answer was lost: look the request up in fal's listing
otherwise                  -> reserve budget, ledger "submitting", submit once, ledger request_id
"""

from __future__ import annotations

import base64
import hashlib
import mimetypes
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wansweep import __version__, media
from wansweep.archive import SIDECAR, STRIP, THUMB, VIDEO, Budget, BudgetExceeded, Ledger, job_file
from wansweep.falqueue import AmbiguousSubmit, FalError, FalQueue, Handle, Stopped, body_digest
from wansweep.manifest import load_media
from wansweep.store import Store, presign
from wansweep.sweep import Job, PollSpec


@dataclass
class Runtime:
    """What every job of a run shares (one per process)."""

    store: Store
    fal: FalQueue
    budget: Budget
    poll: PollSpec = field(default_factory=PollSpec)
    max_attempts: int = 2
    endpoint_slots: dict[str, threading.BoundedSemaphore] = field(default_factory=dict)
    endpoint_concurrency: int = 8
    resubmit_expired: bool = False
    guard: Callable[[str], AbstractContextManager] | None = None  # e.g. a fleet-wide limit
    active: int = 0  # jobs in run_job right now
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def ledger(self) -> Ledger:
        return Ledger(self.store)

    @contextmanager
    def slot(self, endpoint: str) -> Iterator[None]:
        """Held from submit to result: this process's per-endpoint limit, then the guard's."""
        with self._lock:
            if endpoint not in self.endpoint_slots:
                self.endpoint_slots[endpoint] = threading.BoundedSemaphore(
                    self.endpoint_concurrency
                )
            local = self.endpoint_slots[endpoint]
        with local, self.guard(endpoint) if self.guard else nullcontext():
            yield


def outcome(job: Job, status: str, **extra: Any) -> dict[str, Any]:
    return {
        "job_key": job.job_key,
        "arm": job.arm,
        "row_id": job.row_id,
        "status": status,
        "estimated_usd": job.estimated_usd,
        **extra,
    }


def media_url(uri: str) -> str:
    """What fal is given for an image or audio: URLs pass through, s3:// is presigned,
    a local file goes inline as a data URI (fal accepts them; nothing is made public)."""
    if uri.startswith(("http://", "https://", "data:")):
        return uri
    if uri.startswith("s3://"):
        return presign(uri, expires_s=3600)
    data = load_media(uri)
    mime = mimetypes.guess_type(uri)[0] or "application/octet-stream"
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def request_body(job: Job) -> dict[str, Any]:
    body = {**job.request_fields(), "image_url": media_url(job.image_uri)}
    if job.audio_uri:
        body["audio_url"] = media_url(job.audio_uri)
    return body


def run_job(job: Job, rt: Runtime) -> dict[str, Any]:
    """Run one job to its archive; never raises for a job-level failure (returns its outcome)."""
    with rt._lock:
        rt.active += 1
    try:
        return _run_job(job, rt)
    finally:
        with rt._lock:
            rt.active -= 1


def _run_job(job: Job, rt: Runtime) -> dict[str, Any]:
    if rt.store.exists(job_file(job.job_key, SIDECAR)):
        return outcome(job, "cached")
    ledger = rt.ledger
    entry = ledger.get(job.job_key) or {}
    resumed = bool(entry.get("request_id") or entry.get("result"))
    try:
        with rt.slot(job.endpoint):
            entry = _generate(job, rt, ledger, entry)
        try:
            _archive(job, rt, ledger, entry)
        except FalError as exc:
            if exc.kind != "expired" or not rt.resubmit_expired:
                raise
            # fal's copy of the video is gone (CDN expiry) and ours was never made: generate
            # it again, as the user allowed; _generate still holds to max_attempts
            entry = ledger.put(
                job.job_key, entry, status="retrying", error=str(exc), result=None, handle=None
            )
            with rt.slot(job.endpoint):
                entry = _generate(job, rt, ledger, entry)
            _archive(job, rt, ledger, entry)
            resumed = False  # generated anew
    except Stopped:
        return outcome(job, "cancelled", request_id=entry.get("request_id"))
    except BudgetExceeded as exc:
        return outcome(job, "skipped", error=str(exc))
    except FalError as exc:
        entry = ledger.get(job.job_key) or entry
        ledger.put(
            job.job_key,
            entry,
            status="failed" if exc.kind != "expired" else "expired",
            error=str(exc),
            error_kind=exc.kind,
        )
        return outcome(
            job,
            "failed" if exc.kind != "expired" else "expired",
            error=str(exc),
            error_kind=exc.kind,
            request_id=entry.get("request_id"),
        )
    return outcome(
        job,
        "resumed" if resumed else "archived",
        request_id=entry.get("request_id"),
        submits=entry.get("submits", 0),
    )


def _generate(job: Job, rt: Runtime, ledger: Ledger, entry: dict[str, Any]) -> dict[str, Any]:
    """Make sure fal has produced this job's result, paying at most once per attempt."""
    attempts = entry.get("attempts", 0)
    reserved = False  # this process's budget holds this job's estimate
    while True:
        if entry.get("result"):
            return entry
        fresh = False  # submitted by this call (else taken over: maybe long done at fal)
        handle = Handle(**entry["handle"]) if entry.get("handle") else None
        if handle is None and entry.get("status") == "submitting":
            # A submit whose answer was lost: did fal take it?
            handle = rt.fal.find_submitted(
                job.endpoint, entry["body_digest"], entry["submitted_at"]
            )
            if handle is not None:
                entry = _submitted(ledger, job, entry, handle, reconciled=True)
            else:
                attempts = max(0, attempts - 1)  # fal never took it: that attempt cost nothing
        if handle is None:
            if attempts >= rt.max_attempts:
                raise FalError(
                    entry.get("error") or "no attempts left", entry.get("error_kind", "failed")
                )
            if rt.fal.stop.is_set():  # cancelled while waiting for a slot: submit nothing
                raise Stopped("run cancelled before submit")
            body = request_body(job)
            digest = body_digest(body)
            if not reserved:
                rt.budget.reserve(
                    job.estimated_usd, f"job {job.job_key} (row {job.row_index}, {job.arm})"
                )
                reserved = True
            attempts += 1
            entry = ledger.put(
                job.job_key,
                entry,
                status="submitting",
                endpoint=job.endpoint,
                body_digest=digest,
                submitted_at=time.time(),
                attempts=attempts,
                handle=None,
                request_id=None,
            )
            try:
                handle = rt.fal.submit(job.endpoint, body)
            except AmbiguousSubmit as exc:
                entry = ledger.put(job.job_key, entry, status="submitting", ambiguous=str(exc))
                continue  # reconcile through the listing above
            except FalError:
                rt.budget.release(job.estimated_usd)  # not accepted: nothing was spent
                raise
            entry = _submitted(ledger, job, entry, handle, submits=entry.get("submits", 0) + 1)
            fresh = True
        poll = rt.poll
        try:
            done = rt.fal.wait(
                handle, poll.first, poll.factor, poll.max, poll.webhook_fallback, not fresh
            )
            result = rt.fal.result(handle, generation_failed=bool(done.error))
        except Stopped:
            try:
                rt.fal.cancel(handle)
            finally:
                ledger.put(job.job_key, entry, status="cancelled", cancelled_at=time.time())
            raise
        except FalError as exc:
            if exc.kind == "failed" and attempts < rt.max_attempts:
                rt.budget.release(job.estimated_usd)  # fal does not bill failed (5xx) generations
                reserved = False
                entry = ledger.put(
                    job.job_key, entry, status="retrying", error=str(exc), handle=None
                )
                continue
            if exc.kind == "cancelled" and attempts < rt.max_attempts:
                # cancelled by an earlier run (Ctrl-C, flow cancel) before fal finished it
                entry = ledger.put(
                    job.job_key, entry, status="retrying", error=str(exc), handle=None
                )
                continue
            if exc.kind == "expired" and rt.resubmit_expired and attempts < rt.max_attempts:
                entry = ledger.put(
                    job.job_key, entry, status="retrying", error=str(exc), handle=None
                )
                continue
            raise
        return ledger.put(
            job.job_key,
            entry,
            status="completed",
            result=result,
            completed_at=time.time(),
            inference_seconds=done.metrics.get("inference_time"),
        )


def _submitted(ledger: Ledger, job: Job, entry: dict[str, Any], handle: Handle, **extra: Any):
    """Record that fal holds this job's request: from here on it is resumed, never resubmitted."""
    return ledger.put(
        job.job_key,
        entry,
        status="submitted",
        request_id=handle.request_id,
        handle=handle.__dict__,
        **extra,
    )


def _archive(job: Job, rt: Runtime, ledger: Ledger, entry: dict[str, Any]) -> None:
    """Video first, checksum verified, thumbnail, then the sidecar last."""
    result = entry["result"]
    video = result["video"]
    store = rt.store
    with tempfile.TemporaryDirectory(prefix="wansweep-") as tmp:
        local = Path(tmp) / VIDEO
        video_key = job_file(job.job_key, VIDEO)
        size, sha = entry.get("video_size"), entry.get("video_sha256")
        # Killed between upload and sidecar: the stored copy is fetched once and checked here,
        # and fal is not asked again when it is whole.
        if not (
            sha
            and store.size(video_key) == size
            and _stored_copy_matches(store, video_key, local, sha)
        ):
            size, sha = rt.fal.download(video["url"], local, video.get("file_size"))
            entry = ledger.put(job.job_key, entry, video_size=size, video_sha256=sha)
            store.put_file(video_key, local, "video/mp4")
            if store.sha256(video_key) != sha:
                raise FalError(
                    f"archive check failed for {job.job_key}: stored checksum differs", "transient"
                )
        probe = media.probe(local)
        first, middle, last = media.frames_at(local, (0.0, 0.5, 1.0))
        store.put_bytes(job_file(job.job_key, THUMB), media.thumbnail_jpeg(first), "image/jpeg")
        store.put_bytes(
            job_file(job.job_key, STRIP), media.strip_jpeg([first, middle, last]), "image/jpeg"
        )
        try:
            import io

            from PIL import Image

            fidelity = media.similarity(Image.open(io.BytesIO(load_media(job.image_uri))), first)
        except Exception:
            fidelity = None
    archived_at = time.time()
    submitted = entry.get("submitted_at")
    completed = entry.get("completed_at")
    inference = entry.get("inference_seconds")
    meta = {
        "job_key": job.job_key,
        "arm": job.arm,
        "endpoint": job.endpoint,
        "row": {"index": job.row_index, "id": job.row_id, **job.extra},
        "input": {
            **job.request_fields(),
            "image": {"uri": _public_uri(job.image_uri), "sha256": job.image_sha256},
            **(
                {"audio": {"uri": _public_uri(job.audio_uri), "sha256": job.audio_sha256}}
                if job.audio_uri
                else {}
            ),
        },
        "request_id": entry.get("request_id"),
        "seed_requested": job.seed,
        "seed": result.get("seed"),
        "actual_prompt": result.get("actual_prompt"),
        "fal_video": {k: v for k, v in video.items() if k != "url"},
        "timings": {
            "submitted_at": submitted,
            # fal reports inference time, not a start time: started = completed - inference
            "started_at": completed - inference if completed and inference is not None else None,
            "completed_at": completed,
            "archived_at": archived_at,
            "inference_seconds": inference,
            "queue_seconds": round(completed - submitted - inference, 3)
            if submitted and completed and inference is not None
            else None,
            "wall_seconds": round(completed - submitted, 3) if submitted and completed else None,
        },
        "video": {
            "key": job_file(job.job_key, VIDEO),
            "sha256": sha,
            "size": size,
            **probe.as_dict(),
        },
        "first_frame_similarity": fidelity,
        "estimated_usd": job.estimated_usd,
        "tool_version": __version__,
    }
    if os.environ.get("WANSWEEP_FAULT_EXIT_BEFORE_SIDECAR"):  # fault injection for tests
        os._exit(137)
    store.put_json(job_file(job.job_key, SIDECAR), meta)
    ledger.put(job.job_key, entry, status="archived", archived_at=archived_at)


def _stored_copy_matches(store: Store, key: str, local: Path, sha: str) -> bool:
    store.download_file(key, local)
    h = hashlib.sha256()
    with local.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest() == sha


def _public_uri(uri: str | None) -> str | None:
    """Never inline data in metadata: data URIs are recorded by kind only."""
    if uri and uri.startswith("data:"):
        return uri.split(",", 1)[0] + ",..."
    return uri
