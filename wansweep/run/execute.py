"""One job, start to archive: the steps that spend money, written so none happens twice.

The state table (which ledger status leads to which step) is in :mod:`wansweep.run.lifecycle`;
every ledger status is set here, each in one place:

- ``submitting``, ``submitted``: :func:`_submit` and :func:`_submitted`
- ``ambiguous``: :func:`_settle_lost_submit` (fal's records neither show nor rule out a submit)
- ``retrying``: :func:`_generate` (after a failure :func:`_may_try_again` allows) and
  :func:`_settle_lost_submit` (fal's records prove a lost submit was never accepted)
- ``cancelled``: :func:`_await_result` (the run was stopped while the job waited)
- ``completed``: :func:`_await_result`
- ``archived``: :func:`wansweep.run.finish.archive_result`
- ``failed``, ``expired``: :func:`_run_job` (a :class:`FalError` nothing could recover)
"""

from __future__ import annotations

import base64
import mimetypes
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any

from wansweep.errors import (
    AmbiguousSubmit,
    BudgetExceeded,
    FailureKind,
    FalError,
    LeaseHeld,
    LedgerDamaged,
    Stopped,
)
from wansweep.fal import FalQueue
from wansweep.fal.platform import Lookup
from wansweep.fal.types import Handle, PollSpec
from wansweep.media.fetch import read_local
from wansweep.plan.pricing import Budget
from wansweep.plan.spec import Job, ReconcileSpec
from wansweep.run.finish import archive_result
from wansweep.run.leases import Leases
from wansweep.run.ledger import Ledger
from wansweep.run.lifecycle import JobResult, LedgerEntry, LedgerStatus, Outcome
from wansweep.run.reconcile import look_up, record
from wansweep.store import Store, presign
from wansweep.store.layout import job_file


@dataclass
class Runtime:
    """What every job of a run shares (one per process)."""

    store: Store
    fal: FalQueue
    budget: Budget
    poll: PollSpec
    max_attempts: int
    endpoint_concurrency: int
    reconcile: ReconcileSpec = field(default_factory=ReconcileSpec)
    leases: Leases | None = None  # one worker per job across processes (None: this one only)
    lease_poll: float = 5.0  # seconds between looks at a job another process holds
    resubmit_expired: bool = False
    resubmit_ambiguous: bool = False
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
    data = read_local(uri.removeprefix("file://"))
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
    if rt.leases is not None and not rt.leases.acquire(job.job_key):
        if (outcome := _wait_for_holder(job, rt)) is not None:
            return _result(job, outcome)
    try:
        return _run_leased(job, rt)
    finally:
        if rt.leases is not None:
            rt.leases.release(job.job_key)


def _wait_for_holder(job: Job, rt: Runtime) -> Outcome | None:
    """Another process holds this job's lease and runs it: wait until it is archived
    (``cached``), or the lease is ours (None: released by a holder that gave up, or expired
    because the holder died). Cancelled while waiting: ``busy``."""
    while not rt.fal.stop.wait(rt.lease_poll):
        if rt.store.exists(job_file(job.job_key, "meta.json")):
            return Outcome.CACHED
        if rt.leases.acquire(job.job_key):
            return None
    return Outcome.BUSY


def _run_leased(job: Job, rt: Runtime) -> JobResult:
    """The job, with its lease held: the ledger is read only now, so no other process
    changed it between our read and our writes."""
    if rt.store.exists(job_file(job.job_key, "meta.json")):  # archived while we waited
        return _result(job, Outcome.CACHED)
    ledger = rt.ledger
    try:
        entry = ledger.get(job.job_key) or LedgerEntry(job.job_key)
    except LedgerDamaged as exc:
        entry = _from_damaged(job, ledger, exc)
    resumed = bool(entry.request_id or entry.result)
    try:
        with rt.slot(job.endpoint):
            entry = _generate(job, rt, ledger, entry)
        try:
            archive_result(job, rt.store, rt.fal, ledger, entry)
        except FalError as exc:
            if exc.kind is not FailureKind.EXPIRED or not rt.resubmit_expired:
                raise
            # fal's copy of the video is gone (CDN expiry) and ours was never made: generate
            # it again, as the user allowed; _generate still holds to max_attempts
            entry = _retrying(ledger, entry, exc, result=None)
            with rt.slot(job.endpoint):
                entry = _generate(job, rt, ledger, entry)
            archive_result(job, rt.store, rt.fal, ledger, entry)
            resumed = False  # generated anew
    except Stopped:
        return _result(job, Outcome.CANCELLED, entry)
    except LeaseHeld as exc:
        return _result(job, Outcome.BUSY, entry, error=str(exc))
    except BudgetExceeded as exc:
        return _result(job, Outcome.SKIPPED, entry, error=str(exc))
    except FalError as exc:
        entry = ledger.get(job.job_key) or entry
        if exc.kind is FailureKind.AMBIGUOUS:  # the ledger already says ambiguous
            return _result(job, Outcome.AMBIGUOUS, entry, error=str(exc), error_kind=exc.kind)
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


def _from_damaged(job: Job, ledger: Ledger, exc: LedgerDamaged) -> LedgerEntry:
    """A damaged entry is neither trusted nor silently replaced: it is kept aside as
    ``<key>.json.damaged`` and the job is treated as a submit whose answer was lost at the
    time of the entry's last write, to be settled through fal's records."""
    age = ledger.set_aside(job.job_key)
    written = time.time() - (age or 0.0)
    return ledger.put(
        LedgerEntry(job.job_key),
        status=LedgerStatus.AMBIGUOUS,
        endpoint=job.endpoint,
        fields=job.request_fields(),
        submitted_at=written,
        attempts=1,  # it may have been paid for
        error=str(exc),
        ambiguous=f"{exc}; the damaged entry is kept beside it (.damaged)",
        search_window=DAMAGED_WINDOW,
    )


DAMAGED_WINDOW = 86400.0  # a damaged entry's submit is looked for in the day before its last write


def _generate(job: Job, rt: Runtime, ledger: Ledger, entry: LedgerEntry) -> LedgerEntry:
    """Make sure fal has produced this job's result. Every submit counts as an attempt, and
    none is given back for a lost answer, so no fault, clock or listing can make a loop; only
    a cancel the user asked for does not use one up."""
    reserved = False  # this process's budget holds this job's estimate
    graced = False  # a lost answer of this run was looked for again after the grace period
    while entry.result is None:
        handle, fresh = entry.handle, False  # fresh: submitted by this call, not taken over
        if handle is None and entry.status in (LedgerStatus.SUBMITTING, LedgerStatus.AMBIGUOUS):
            entry, handle = _settle_lost_submit(job, rt, ledger, entry, wait=not graced)
            graced = True
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
            user_cancel = (
                exc.kind is FailureKind.CANCELLED and entry.status is LedgerStatus.CANCELLED
            )
            attempts = entry.attempts - 1 if user_cancel else entry.attempts
            if not _may_try_again(exc, attempts, rt):
                raise
            entry = _retrying(ledger, entry, exc, attempts=attempts)
    return entry


def _retrying(ledger: Ledger, entry: LedgerEntry, exc: FalError, **changes) -> LedgerEntry:
    """``retrying`` after a failure (its kind is the cause in the history): the next submit is
    a new attempt; the old request is forgotten."""
    return ledger.put(
        entry, exc.kind, status=LedgerStatus.RETRYING, error=str(exc), handle=None, **changes
    )


def _may_try_again(exc: FalError, attempts: int, rt: Runtime) -> bool:
    """After a generation ended badly: may another attempt be submitted?"""
    if attempts >= rt.max_attempts:
        return False
    if exc.kind in (FailureKind.FAILED, FailureKind.CANCELLED):
        return True  # unbilled failure; or cancelled before fal finished it
    return exc.kind is FailureKind.EXPIRED and rt.resubmit_expired


def _settle_lost_submit(
    job: Job, rt: Runtime, ledger: Ledger, entry: LedgerEntry, wait: bool
) -> tuple[LedgerEntry, Handle | None]:
    """A submit whose answer was lost (or whose entry was damaged): did fal take it?

    Found in fal's records: adopted, never paid again. Proven absent (fal's records are
    complete for the time it was sent): ``retrying``, and the next submit is an attempt of
    its own. Neither: ``ambiguous``, and the job waits for a later run or ``wansweep
    reconcile`` (``--resubmit-ambiguous`` pays again instead, once)."""
    cfg = rt.reconcile
    fields = entry.fields or job.request_fields()

    def look() -> Lookup:
        return look_up(rt.fal, rt.store, job.job_key, entry, fields, cfg.settle_after)

    found = look()
    deadline = time.monotonic() + (cfg.grace if wait else 0.0)
    pause = 1.0
    while found.handle is None and not found.absent and time.monotonic() < deadline:
        # a fresh loss: fal lists a request once it has finished, so look again a few times
        rt.fal.sleep(min(pause, max(0.0, deadline - time.monotonic())))
        pause = min(pause * 2, 10.0)
        found = look()
    entry, handle = record(ledger, entry, found)
    if handle is not None or found.absent:
        return entry, handle
    if rt.resubmit_ambiguous:
        entry = ledger.put(
            entry,
            "ambiguous",
            status=LedgerStatus.RETRYING,
            error=f"resubmitted while ambiguous ({found.why})",
            attempts=min(entry.attempts, rt.max_attempts - 1),
        )
        return entry, None
    entry = ledger.put(entry, status=LedgerStatus.AMBIGUOUS, error=found.why)
    raise FalError(
        f"the submit's answer was lost and fal's records do not settle it yet ({found.why}); "
        "a later run or `wansweep reconcile` settles it without paying again",
        FailureKind.AMBIGUOUS,
    )


def _submit(job: Job, rt: Runtime, ledger: Ledger, entry: LedgerEntry) -> LedgerEntry:
    """Ledger ``submitting`` first, then one POST; ``submitted`` when fal answers with a
    request. A lost answer leaves the entry ``submitting`` (no handle) for settling."""
    if rt.fal.stop.is_set():  # cancelled while waiting for a slot: submit nothing
        raise Stopped("run cancelled before submit")
    if rt.leases is not None and not rt.leases.still_ours(job.job_key):
        raise LeaseHeld(  # this process stalled past the lease's ttl: another one runs it now
            f"job {job.job_key}: its lease was taken over; the run holding it runs it"
        )
    body = request_body(job)
    entry = ledger.put(
        entry,
        status=LedgerStatus.SUBMITTING,
        endpoint=job.endpoint,
        fields=job.request_fields(),
        submitted_at=time.time(),
        attempts=entry.attempts + 1,
        handle=None,
        request_id=None,
        earlier_requests=(*entry.earlier_requests, entry.request_id)
        if entry.request_id
        else entry.earlier_requests,
        search_window=None,
    )
    try:
        handle = rt.fal.submit(
            job.endpoint, body, rt.reconcile.start_timeout, (job.job_key, entry.attempts)
        )
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
    try:
        done = rt.fal.wait(handle, rt.poll, check_now)
        result = rt.fal.result(handle, generation_failed=bool(done.status.error))
    except Stopped:
        running = None
        try:
            running = rt.fal.is_running(handle)  # a queued request is dropped unbilled
            rt.fal.cancel(handle)
        finally:
            ledger.put(
                entry,
                status=LedgerStatus.CANCELLED,
                cancelled_at=time.time(),
                cancelled_running=running,
            )
        raise
    return ledger.put(
        entry,
        status=LedgerStatus.COMPLETED,
        result=result,
        completed_at=done.completed_at,
        detected_at=done.detected_at,
        completion_uncertainty=done.uncertainty,
        detected_via=done.via,
        inference_seconds=done.status.metrics.get("inference_time"),
    )
