"""One job, start to archive: the steps that spend money, written so none happens twice.

The state table (which ledger status leads to which step) is in :mod:`wansweep.lifecycle`;
every ledger status is set here, each in one place:

- ``submitting``, ``submitted``: :func:`_submit` and :func:`_submitted`
- ``retrying``: :func:`_generate` (after a failure :func:`_may_try_again` allows)
- ``cancelled``: :func:`_await_result` (the run was stopped while the job waited)
- ``completed``: :func:`_await_result`
- ``archived``: :func:`_archive`
- ``failed``, ``expired``: :func:`_run_job` (a :class:`FalError` nothing could recover)
"""

from __future__ import annotations

import base64
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
from wansweep.archive import VIDEO, Ledger, job_file, public_uri
from wansweep.errors import AmbiguousSubmit, BudgetExceeded, FailureKind, FalError, Stopped
from wansweep.fal import FalQueue, body_digest
from wansweep.lifecycle import Handle, JobResult, LedgerEntry, LedgerStatus, Outcome
from wansweep.manifest import load_media
from wansweep.pricing import Budget
from wansweep.store import Store, presign
from wansweep.sweep import Job, PollSpec


@dataclass
class Runtime:
    """What every job of a run shares (one per process)."""

    store: Store
    fal: FalQueue
    budget: Budget
    poll: PollSpec
    max_attempts: int
    endpoint_concurrency: int
    resubmit_expired: bool = False
    guard: Callable[[str], AbstractContextManager] | None = None  # e.g. a fleet-wide limit
    endpoint_slots: dict[str, threading.BoundedSemaphore] = field(default_factory=dict)
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
    """The body fal is sent for a job: its fields plus the media as fal can fetch them."""
    body = {**job.request_fields(), "image_url": media_url(job.image_uri)}
    if job.audio_uri:
        body["audio_url"] = media_url(job.audio_uri)
    return body


def run_job(job: Job, rt: Runtime) -> JobResult:
    """Run one job to its archive. Never raises for a job-level failure (it is the outcome);
    raises only what the caller may retry as a whole (store or network trouble)."""
    with rt._lock:
        rt.active += 1
    try:
        return _run_job(job, rt)
    finally:
        with rt._lock:
            rt.active -= 1


def _result(
    job: Job, outcome: Outcome, entry: LedgerEntry | None = None, **extra: Any
) -> JobResult:
    return JobResult(
        job_key=job.job_key,
        arm=job.arm,
        row_id=job.row_id,
        outcome=outcome,
        estimated_usd=job.estimated_usd,
        request_id=entry.request_id if entry else None,
        submits=entry.submits if entry else 0,
        **extra,
    )


def _run_job(job: Job, rt: Runtime) -> JobResult:
    if rt.store.exists(job_file(job.job_key, "meta.json")):
        return _result(job, Outcome.CACHED)
    ledger = rt.ledger
    entry = ledger.get(job.job_key) or LedgerEntry(job.job_key)
    resumed = bool(entry.request_id or entry.result)
    try:
        with rt.slot(job.endpoint):
            entry = _generate(job, rt, ledger, entry)
        try:
            _archive(job, rt, ledger, entry)
        except FalError as exc:
            if exc.kind is not FailureKind.EXPIRED or not rt.resubmit_expired:
                raise
            # fal's copy of the video is gone (CDN expiry) and ours was never made: generate
            # it again, as the user allowed; _generate still holds to max_attempts
            entry = ledger.put(
                entry, status=LedgerStatus.RETRYING, error=str(exc), result=None, handle=None
            )
            with rt.slot(job.endpoint):
                entry = _generate(job, rt, ledger, entry)
            _archive(job, rt, ledger, entry)
            resumed = False  # generated anew
    except Stopped:
        return _result(job, Outcome.CANCELLED, entry)
    except BudgetExceeded as exc:
        return _result(job, Outcome.SKIPPED, entry, error=str(exc))
    except FalError as exc:
        entry = ledger.get(job.job_key) or entry
        expired = exc.kind is FailureKind.EXPIRED
        entry = ledger.put(
            entry,
            status=LedgerStatus.EXPIRED if expired else LedgerStatus.FAILED,
            error=str(exc),
            error_kind=exc.kind,
        )
        return _result(
            job,
            Outcome.EXPIRED if expired else Outcome.FAILED,
            entry,
            error=str(exc),
            error_kind=exc.kind,
        )
    return _result(job, Outcome.RESUMED if resumed else Outcome.ARCHIVED, entry)


def _generate(job: Job, rt: Runtime, ledger: Ledger, entry: LedgerEntry) -> LedgerEntry:
    """Make sure fal has produced this job's result, paying at most once per attempt."""
    reserved = False  # this process's budget holds this job's estimate
    while entry.result is None:
        handle, fresh = entry.handle, False  # fresh: submitted by this call, not taken over
        if handle is None and entry.status is LedgerStatus.SUBMITTING:
            entry, handle = _settle_lost_submit(job, rt, ledger, entry)
        if handle is None:
            if entry.attempts >= rt.max_attempts:
                raise FalError(
                    entry.error or "no attempts left", entry.error_kind or FailureKind.FAILED
                )
            if not reserved:
                rt.budget.reserve(
                    job.estimated_usd, f"job {job.job_key} (row {job.row_index}, {job.arm})"
                )
                reserved = True
            try:
                entry = _submit(job, rt, ledger, entry)
            except FalError:
                rt.budget.release(job.estimated_usd)  # not accepted: nothing was spent
                raise
            if entry.handle is None:
                continue  # the answer was lost: settled through fal's records above
            handle, fresh = entry.handle, True
        try:
            entry = _await_result(job, rt, ledger, entry, handle, check_now=not fresh)
        except FalError as exc:
            if exc.kind is FailureKind.FAILED and reserved:
                rt.budget.release(job.estimated_usd)  # fal does not bill failed (5xx) generations
                reserved = False
            if not _may_try_again(exc, entry, rt):
                raise
            entry = ledger.put(entry, status=LedgerStatus.RETRYING, error=str(exc), handle=None)
    return entry


def _may_try_again(exc: FalError, entry: LedgerEntry, rt: Runtime) -> bool:
    """After a generation ended badly: may another attempt be submitted?"""
    if entry.attempts >= rt.max_attempts:
        return False
    if exc.kind in (FailureKind.FAILED, FailureKind.CANCELLED):
        return True  # unbilled failure; or cancelled by an earlier run before fal finished it
    return exc.kind is FailureKind.EXPIRED and rt.resubmit_expired


def _settle_lost_submit(
    job: Job, rt: Runtime, ledger: Ledger, entry: LedgerEntry
) -> tuple[LedgerEntry, Handle | None]:
    """A submit whose answer was lost: did fal take it? Look in fal's request listing."""
    handle = rt.fal.find_submitted(job.endpoint, entry.body_digest, entry.submitted_at)
    if handle is not None:
        return _submitted(ledger, entry, handle, reconciled=True), handle
    # fal never took it: that attempt cost nothing
    return ledger.put(entry, attempts=max(0, entry.attempts - 1)), None


def _submit(job: Job, rt: Runtime, ledger: Ledger, entry: LedgerEntry) -> LedgerEntry:
    """Ledger ``submitting`` first, then one POST; ``submitted`` when fal answers with a
    request. A lost answer leaves the entry ``submitting`` (no handle) for settling."""
    if rt.fal.stop.is_set():  # cancelled while waiting for a slot: submit nothing
        raise Stopped("run cancelled before submit")
    body = request_body(job)
    entry = ledger.put(
        entry,
        status=LedgerStatus.SUBMITTING,
        endpoint=job.endpoint,
        body_digest=body_digest(body),
        submitted_at=time.time(),
        attempts=entry.attempts + 1,
        handle=None,
        request_id=None,
    )
    try:
        handle = rt.fal.submit(job.endpoint, body)
    except AmbiguousSubmit as exc:
        return ledger.put(entry, ambiguous=str(exc))
    return _submitted(ledger, entry, handle, submits=entry.submits + 1)


def _submitted(ledger: Ledger, entry: LedgerEntry, handle: Handle, **extra: Any) -> LedgerEntry:
    """Record that fal holds this job's request: from here on it is resumed, never resubmitted."""
    return ledger.put(
        entry, status=LedgerStatus.SUBMITTED, request_id=handle.request_id, handle=handle, **extra
    )


def _await_result(
    job: Job, rt: Runtime, ledger: Ledger, entry: LedgerEntry, handle: Handle, check_now: bool
) -> LedgerEntry:
    """Wait until fal ends the request, then fetch its result into the ledger (``completed``).
    Stopped while waiting: the request is cancelled at fal and ``cancelled`` recorded."""
    poll = rt.poll
    try:
        done = rt.fal.wait(
            handle, poll.first, poll.factor, poll.max, poll.webhook_fallback, check_now
        )
        result = rt.fal.result(handle, generation_failed=bool(done.error))
    except Stopped:
        try:
            rt.fal.cancel(handle)
        finally:
            ledger.put(entry, status=LedgerStatus.CANCELLED, cancelled_at=time.time())
        raise
    return ledger.put(
        entry,
        status=LedgerStatus.COMPLETED,
        result=result,
        completed_at=time.time(),
        inference_seconds=done.metrics.get("inference_time"),
    )


def _archive(job: Job, rt: Runtime, ledger: Ledger, entry: LedgerEntry) -> None:
    """Video first, checksum verified, thumbnail and strip, then the sidecar last."""
    video = entry.result["video"]
    store = rt.store
    video_key = job_file(job.job_key, VIDEO)
    with tempfile.TemporaryDirectory(prefix="wansweep-") as tmp:
        local = Path(tmp) / VIDEO
        size, sha = entry.video_size, entry.video_sha256
        # Killed between upload and sidecar: the stored copy is fetched once and checked here,
        # and fal is not asked again when it is whole.
        if not (
            sha and store.size(video_key) == size and store.fetch_matches(video_key, local, sha)
        ):
            size, sha = rt.fal.download(video["url"], local, video.get("file_size"))
            entry = ledger.put(entry, video_size=size, video_sha256=sha)
            store.put_file(video_key, local, "video/mp4")
            if store.sha256(video_key) != sha:
                raise FalError(
                    f"archive check failed for {job.job_key}: stored checksum differs",
                    FailureKind.TRANSIENT,
                )
        probe = media.probe(local)
        first, middle, last = media.frames_at(local, (0.0, 0.5, 1.0))
        store.put_bytes(
            job_file(job.job_key, "thumb.jpg"), media.thumbnail_jpeg(first), "image/jpeg"
        )
        store.put_bytes(
            job_file(job.job_key, "strip.jpg"),
            media.strip_jpeg([first, middle, last]),
            "image/jpeg",
        )
        fidelity = _first_frame_similarity(job, first)
    archived_at = time.time()
    meta = sidecar(job, entry, size, sha, probe, fidelity, archived_at)
    if os.environ.get("WANSWEEP_FAULT_EXIT_BEFORE_SIDECAR"):  # fault injection for tests
        os._exit(137)
    store.put_json(job_file(job.job_key, "meta.json"), meta)
    ledger.put(entry, status=LedgerStatus.ARCHIVED, archived_at=archived_at)


def _first_frame_similarity(job: Job, first: Any) -> float | None:
    """How much the video's first frame looks like the input image (None if unreadable)."""
    import io

    from PIL import Image

    try:
        return media.similarity(Image.open(io.BytesIO(load_media(job.image_uri))), first)
    except Exception:
        return None


def sidecar(
    job: Job,
    entry: LedgerEntry,
    size: int,
    sha: str,
    probe: media.Probe,
    fidelity: float | None,
    archived_at: float,
) -> dict[str, Any]:
    """The metadata sidecar of an archived job (no secrets, no inline data)."""
    result = entry.result
    submitted, completed, inference = (
        entry.submitted_at,
        entry.completed_at,
        entry.inference_seconds,
    )
    return {
        "job_key": job.job_key,
        "arm": job.arm,
        "endpoint": job.endpoint,
        "row": {"index": job.row_index, "id": job.row_id, **job.extra},
        "input": {
            **job.request_fields(),
            "image": {"uri": public_uri(job.image_uri), "sha256": job.image_sha256},
            **(
                {"audio": {"uri": public_uri(job.audio_uri), "sha256": job.audio_sha256}}
                if job.audio_uri
                else {}
            ),
        },
        "request_id": entry.request_id,
        "seed_requested": job.seed,
        "seed": result.get("seed"),
        "actual_prompt": result.get("actual_prompt"),
        "fal_video": {k: v for k, v in result["video"].items() if k != "url"},
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
