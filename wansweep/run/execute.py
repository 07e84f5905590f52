"""One job, start to archive: its lease taken, its ledger read, then one step at a time (as
:func:`wansweep.run.steps.next_step` says) until the video is archived or the job can go no
further this run; what happened is the job's :class:`~wansweep.run.lifecycle.JobResult`.

A run that dies anywhere is resumed from the ledger by the next one. The steps that spend money,
and why none can happen twice, are in :mod:`.steps`; the statuses and their moves in
:mod:`.lifecycle` and :mod:`.transitions`.
"""

from __future__ import annotations

import time
from typing import Any

from wansweep.errors import (
    BudgetExceeded,
    FailureKind,
    FalError,
    LeaseHeld,
    LedgerDamaged,
    NotSent,
    Stopped,
    StoreRefused,
)
from wansweep.fal import policy
from wansweep.plan.spec import Job
from wansweep.run import steps
from wansweep.run.finish import archive_result
from wansweep.run.ledger import Ledger
from wansweep.run.lifecycle import Cause, JobResult, LedgerEntry, LedgerStatus, Outcome
from wansweep.run.runtime import Services
from wansweep.run.transitions import TABLE, Move
from wansweep.store.layout import is_archived

S = LedgerStatus
IN_FLIGHT = frozenset({S.SUBMITTING, S.AMBIGUOUS, S.SUBMITTED, S.CANCELLED, S.COMPLETED})
DAMAGED_WINDOW = 86400.0  # a damaged entry's submit is looked for in the day before its last write


def run_job(job: Job, services: Services) -> JobResult:
    """Run one job to its archive. Never raises for a job-level failure (it is the outcome);
    raises only what the caller may retry as a whole (store or network trouble), leaving the
    ledger where the next try resumes it. An archive that refuses writes (full, read-only)
    halts the run's submits: each new job would be paid for and not archived."""
    with services._lock:
        services.active += 1
    try:
        return _run_job(job, services)
    except StoreRefused as exc:
        services.halt(str(exc))
        return _result(job, Outcome.UNARCHIVED, error=str(exc))
    finally:
        with services._lock:
            services.active -= 1


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
        seed=job.seed,
        **extra,
    )


def _archived(job: Job, services: Services) -> bool:
    return is_archived(services.store, job.job_key)


def _run_job(job: Job, services: Services) -> JobResult:
    if _archived(job, services):
        return _result(job, Outcome.CACHED)
    leases = services.leases
    if leases is not None and not leases.acquire(job.job_key):
        if (outcome := _wait_for_holder(job, services)) is not None:
            return _result(job, outcome)
    try:
        return _run_leased(job, services)
    finally:
        if leases is not None:
            leases.release(job.job_key)


def _wait_for_holder(job: Job, services: Services) -> Outcome | None:
    """Another process holds this job's lease and runs it: wait until it is archived
    (``cached``), or the lease is ours (None: released by a holder that gave up, or expired
    because the holder died). Cancelled while waiting: ``busy``."""
    while not services.fal.stop.wait(services.settings.leases.poll):
        if _archived(job, services):
            return Outcome.CACHED
        if services.leases.acquire(job.job_key):
            return None
    return Outcome.BUSY


def _run_leased(job: Job, services: Services) -> JobResult:
    """The job, with its lease held: the ledger is read only now, so no other process
    changed it between our read and our writes."""
    if _archived(job, services):  # archived while we waited
        return _result(job, Outcome.CACHED)
    ledger = services.ledger
    try:
        entry = ledger.get(job.job_key) or LedgerEntry(job.job_key)
    except LedgerDamaged as exc:
        entry = _from_damaged(job, ledger, exc)
    if entry.status in IN_FLIGHT:  # an earlier run's request, which fal may still bill
        services.budget.take_over(job.job_key, entry.attempts, job.estimated_usd)
    started, lost = len(entry.history), entry.status is S.ARCHIVED
    try:
        entry = _drive(job, services, ledger, entry)
    except Stopped:
        return _result(job, Outcome.CANCELLED, ledger.get(job.job_key))
    except LeaseHeld as exc:
        return _result(job, Outcome.BUSY, entry, error=str(exc))
    except BudgetExceeded as exc:
        return _result(job, Outcome.SKIPPED, entry, error=str(exc))
    except NotSent as exc:
        return _not_sent(job, services, ledger, exc)
    except FalError as exc:
        if exc.kind is FailureKind.TRANSIENT:
            raise  # fal unreachable: the ledger resumes the job when it is run again
        return _failed(job, ledger, exc)
    sent = any(step[0] == S.SUBMITTING for step in entry.history[started:])
    if sent:
        return _result(job, Outcome.ARCHIVED, entry)
    # archived once and lost by the archive: fetched from fal again, not paid again
    return _result(job, Outcome.REPAIRED if lost else Outcome.RESUMED, entry)


def _not_sent(job: Job, services: Services, ledger: Ledger, exc: NotSent) -> JobResult:
    """Nothing reached fal and no attempt was used. A refusal of this job's own input ends
    it; anything else (fal unreachable, a key fal refuses, the run halted) leaves it for the
    next run, and a cause that is every job's halts this run's submits."""
    entry = ledger.get(job.job_key) or LedgerEntry(job.job_key)
    if exc.run_wide:
        services.halt(str(exc))
    if exc.kind in (FailureKind.INVALID, FailureKind.REJECTED) and not exc.run_wide:
        entry = ledger.move(entry, Move.FAIL, Cause(exc.kind), error=str(exc), error_kind=exc.kind)
        return _result(job, Outcome.FAILED, entry, error=str(exc), error_kind=exc.kind)
    return _result(job, Outcome.UNSENT, entry, error=str(exc), error_kind=exc.kind)


def _failed(job: Job, ledger: Ledger, exc: FalError) -> JobResult:
    entry = ledger.get(job.job_key) or LedgerEntry(job.job_key)
    if exc.kind is FailureKind.AMBIGUOUS:  # the ledger already says ambiguous
        return _result(job, Outcome.AMBIGUOUS, entry, error=str(exc), error_kind=exc.kind)
    expired = exc.kind is FailureKind.EXPIRED
    move = Move.EXPIRE if expired and entry.status in TABLE[Move.EXPIRE][0] else Move.FAIL
    if entry.status is not TABLE[move][1] or entry.error != str(exc):  # not written twice
        entry = ledger.move(entry, move, Cause(exc.kind), error=str(exc), error_kind=exc.kind)
    outcome = Outcome.EXPIRED if move is Move.EXPIRE else Outcome.FAILED
    return _result(job, outcome, entry, error=str(exc), error_kind=exc.kind)


def _from_damaged(job: Job, ledger: Ledger, exc: LedgerDamaged) -> LedgerEntry:
    """A damaged entry is neither trusted nor silently replaced: it is kept aside as
    ``<key>.json.damaged`` and the job is treated as a submit whose answer was lost at the
    time of the entry's last write, to be settled through fal's records. Whether that submit
    carried fal's start deadline is unknown, so its absence can never be proven: it is found,
    or the user pays again."""
    age = ledger.set_aside(job.job_key)
    return ledger.move(
        LedgerEntry(job.job_key),
        Move.DAMAGED,
        Cause.DAMAGED,
        endpoint=job.endpoint,
        fields=job.request_fields(),
        submitted_at=time.time() - (age or 0.0),
        attempts=1,  # it may have been paid for
        error=str(exc),
        ambiguous=f"{exc}; the damaged entry is kept beside it (.damaged)",
        search_window=DAMAGED_WINDOW,
    )


def _drive(job: Job, services: Services, ledger: Ledger, entry: LedgerEntry) -> LedgerEntry:
    """Until the job's video is archived. An expired video (fal's CDN dropped it before it
    was archived) is generated again only when the user allowed paying again, once."""
    while True:
        with services.slot(job.endpoint):
            entry = _generate(job, services, ledger, entry)
        try:
            archive_result(job, services.store, services.fal, ledger, entry)
            return ledger.get(job.job_key) or entry
        except FalError as exc:
            entry = ledger.get(job.job_key) or entry
            allowed = services.settings.resubmit_expired
            if exc.kind is not FailureKind.EXPIRED or not policy.may_pay_again(
                "expired", allowed, entry.repaid
            ):
                raise
            entry = ledger.move(
                entry,
                Move.RETRY,
                Cause.EXPIRED,
                error=str(exc),
                result=None,
                handle=None,
                repaid=(*entry.repaid, "expired"),
            )


def _generate(job: Job, services: Services, ledger: Ledger, entry: LedgerEntry) -> LedgerEntry:
    """Until fal has produced the job's result and it is in the ledger."""
    fresh = False  # the request was submitted just now: no need to look at it at once
    while (step := steps.next_step(entry, services.settings)) is not steps.Step.DONE:
        if step is steps.Step.GIVE_UP:
            ended = entry.status in (S.FAILED, S.EXPIRED) and entry.error_kind
            raise FalError(entry.error or "no attempts left", ended or FailureKind.FAILED)
        if step is steps.Step.REOPEN:
            entry = steps.reopen(ledger, entry)
        elif step is steps.Step.SETTLE:
            entry = steps.settle(job, services, ledger, entry)
        elif step is steps.Step.SUBMIT:
            entry = steps.submit(job, services, ledger, entry)
            fresh = True
            continue
        elif step is steps.Step.WAIT:
            entry = steps.await_result(job, services, ledger, entry, check_now=not fresh)
        fresh = False
    return entry
