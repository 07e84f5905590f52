"""The steps of a job that spend money or settle what was spent, one function each, written so
that none happens twice: :func:`next_step` (a pure function of the ledger entry and the run's
settings) names the one an entry calls for, and :mod:`.execute` runs them in a loop. Each writes
the ledger (through the named moves of :mod:`.transitions`) before and after it acts.

Money, by construction:

- :func:`submit` is the only code that sends a job to fal. Just before the POST it checks that
  the run goes on, that the job has an attempt left (``max_attempts``, plus one for each
  pay-again option the user gave and the job used, each at most once and recorded in its
  ledger: :func:`wansweep.fal.policy.attempts_allowed`), that the job's lease is still this
  process's (renewed on the store itself, not read from a flag), and that the budget holds the
  job's price; then it writes ``submitting`` with the attempt counted. A submit that provably
  never reached fal gives both back.
- A hold on the budget is given back only when fal surely did not bill that request: it never
  reached fal, fal's records prove it never took it, or its generation failed unbilled. A
  request an earlier run sent, which fal may still bill, is held as soon as a run takes the
  job over (:mod:`.execute`).
- No step can loop without using an attempt: settling a lost answer (:func:`settle`) adopts the
  request, proves it absent (the next submit is an attempt), pays again (once a job, within the
  budget), or ends the job.
"""

from __future__ import annotations

import base64
import mimetypes
import time
from enum import StrEnum
from typing import Any

from wansweep.errors import (
    AmbiguousSubmit,
    FailureKind,
    FalError,
    NotSent,
    Stopped,
)
from wansweep.fal import policy
from wansweep.media.fetch import read_local
from wansweep.plan import endpoints
from wansweep.plan.spec import Job, RunSettings
from wansweep.run.ledger import Ledger
from wansweep.run.lifecycle import Cause, LedgerEntry, LedgerStatus
from wansweep.run.reconcile import look_up, record
from wansweep.run.runtime import Services
from wansweep.run.transitions import Move
from wansweep.store import presign

S = LedgerStatus


class Step(StrEnum):
    DONE = "done"  # the result is in the ledger: archive it
    SUBMIT = "submit"
    SETTLE = "settle"  # a submit whose answer was lost: ask fal's records
    WAIT = "wait"  # fal holds the request
    REOPEN = "reopen"  # a failed or expired job this run may try again
    GIVE_UP = "give_up"


def next_step(entry: LedgerEntry, settings: RunSettings) -> Step:
    """The one step a ledger entry calls for (pure; tests/unit/test_transitions.py)."""
    allowed = policy.attempts_allowed(settings.max_attempts, entry.repaid)
    status = entry.status
    if status is S.EXPIRED:  # fal said it holds the result or video no more
        if policy.may_pay_again("expired", settings.resubmit_expired, entry.repaid):
            return Step.REOPEN
        # a result in the ledger: its video is fetched once more (a CDN may answer again)
        return Step.DONE if entry.result is not None else Step.GIVE_UP
    if entry.result is not None:
        return Step.DONE
    if status in (S.SUBMITTING, S.AMBIGUOUS) and entry.handle is None:
        return Step.SETTLE
    if status in (S.SUBMITTED, S.CANCELLED) and entry.handle is not None:
        return Step.WAIT
    if status is S.FAILED:
        tried_again = entry.error_kind is FailureKind.FAILED and entry.attempts < allowed
        return Step.REOPEN if tried_again else Step.GIVE_UP
    if status in (None, S.RETRYING):
        return Step.SUBMIT if entry.attempts < allowed else Step.GIVE_UP
    return Step.GIVE_UP


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
    """The body fal is sent for a job: its fields plus the media as fal can fetch them, under
    the endpoint's own field names (planning refused audio for an endpoint without one)."""
    prof = endpoints.profile(job.endpoint)
    body = {**job.request_fields(), prof.field_of("image"): media_url(job.image_uri)}
    if job.audio_uri:
        body[prof.field_of("audio")] = media_url(job.audio_uri)
    return body


def reopen(ledger: Ledger, entry: LedgerEntry) -> LedgerEntry:
    """A failed job with attempts left (the user raised ``max_attempts``), or an expired one
    the user allowed to pay again for (once): tried again from a new submit."""
    if entry.status is S.EXPIRED:
        repaid = (*entry.repaid, "expired")
        return ledger.move(
            entry, Move.REOPEN, Cause.EXPIRED, handle=None, result=None, repaid=repaid
        )
    return ledger.move(entry, Move.REOPEN, Cause.FAILED, handle=None)


def submit(job: Job, services: Services, ledger: Ledger, entry: LedgerEntry) -> LedgerEntry:
    """Send the job to fal: the only code that does (see the module docstring for what it
    checks first). Returns the entry ``submitted`` with fal's request, or ``submitting``
    without one when the answer was lost (settled next through fal's records)."""
    settings = services.settings
    if services.fal.stop.is_set():  # cancelled while waiting for a slot: submit nothing
        raise Stopped("run cancelled before submit")
    if services.halted:
        raise NotSent(f"not sent: the run stopped submitting ({services.halted})", run_wide=True)
    allowed = policy.attempts_allowed(settings.max_attempts, entry.repaid)
    if entry.attempts >= allowed:  # next_step says so too: this is the guard at the door
        raise FalError(f"no attempts left ({entry.attempts} of {allowed} used)", FailureKind.FAILED)
    body = request_body(job)
    if services.leases is not None:  # a stalled process may have lost it: renewed on the store
        services.leases.prove(job.job_key)
    attempt = entry.attempts + 1
    services.budget.reserve(job.job_key, attempt, job.estimated_usd, _what(job))
    try:
        entry = ledger.move(
            entry,
            Move.SUBMIT,
            endpoint=job.endpoint,
            fields=job.request_fields(),
            submitted_at=time.time(),
            deadline_s=settings.reconcile.start_timeout,
            attempts=attempt,
            handle=None,
            request_id=None,
            earlier_requests=(*entry.earlier_requests, entry.request_id)
            if entry.request_id
            else entry.earlier_requests,
            search_window=None,
            ambiguous=None,
        )
    except BaseException:
        services.budget.release(job.job_key, attempt)  # nothing was sent
        raise
    try:
        with services.first_submit(job.endpoint):
            handle = services.fal.submit(
                job.endpoint,
                body,
                deadline_s=settings.reconcile.start_timeout,
                marker=(job.job_key, attempt),
                allow_fallbacks=settings.allow_fallbacks,
            )
    except (NotSent, Stopped) as exc:  # a stop comes only between tries fal did not take
        services.budget.release(job.job_key, attempt)
        kind = exc.kind if isinstance(exc, NotSent) else None
        ledger.move(
            entry,
            Move.NOT_SENT,
            Cause.NOT_SENT,
            attempts=attempt - 1,
            error=str(exc),
            error_kind=kind,
        )
        raise
    except AmbiguousSubmit as exc:
        return ledger.put(entry, ambiguous=str(exc))
    return ledger.move(
        entry,
        Move.ACCEPT,
        request_id=handle.request_id,
        handle=handle,
        submits=entry.submits + 1,
    )


def _what(job: Job) -> str:
    return f"job {job.job_key} (row {job.row_index}, {job.arm})"


def settle(job: Job, services: Services, ledger: Ledger, entry: LedgerEntry) -> LedgerEntry:
    """A submit whose answer was lost (or whose entry was damaged): did fal take it?

    Found in fal's records: adopted, never paid again. Proven absent: ``retrying``, its hold
    given back, and the next submit is an attempt of its own. Neither: paid again if the user
    allowed it (once a job, and within the budget), else ``ambiguous`` until a later run or
    ``wansweep reconcile`` settles it."""
    reconcile = services.settings.reconcile
    fields = entry.fields or job.request_fields()

    def lookup():
        settle_after = reconcile.settle_after
        return look_up(services.fal, services.store, job.job_key, entry, fields, settle_after)

    found = lookup()
    pause, grace_ends = (
        policy.RETRIES.listing_backoff_s,
        (entry.submitted_at or 0.0) + reconcile.grace,
    )
    while found.handle is None and not found.absent and time.time() < grace_ends:
        # a fresh loss: fal lists a request once it has finished, so look again a few times
        services.fal.sleep(min(pause, max(0.0, grace_ends - time.time())))
        pause = min(pause * 2, policy.RETRIES.max_listing_backoff_s)
        found = lookup()
    if found.absent:
        services.budget.release(job.job_key, entry.attempts)
    entry = record(ledger, entry, found)
    if entry.status is not S.AMBIGUOUS:
        return entry
    if policy.may_pay_again("ambiguous", services.settings.resubmit_ambiguous, entry.repaid):
        # held before the ledger says so: a budget with no room leaves the job ambiguous
        services.budget.reserve(job.job_key, entry.attempts + 1, job.estimated_usd, _what(job))
        return ledger.move(
            entry,
            Move.PAY_AGAIN,
            Cause.AMBIGUOUS,
            error=f"paid again while ambiguous ({found.why})",
            repaid=(*entry.repaid, "ambiguous"),
        )
    raise FalError(
        f"the submit's answer was lost and fal's records do not settle it yet ({found.why}); "
        "a later run or `wansweep reconcile` settles it without paying again",
        FailureKind.AMBIGUOUS,
    )


def await_result(
    job: Job, services: Services, ledger: Ledger, entry: LedgerEntry, check_now: bool
) -> LedgerEntry:
    """Wait until fal ends the request, then fetch its result into the ledger (``completed``).
    Stopped while waiting: the request is cancelled at fal and ``cancelled`` recorded. Ended
    badly: tried again while the policy allows (``retrying``), else the error goes on."""
    fal, handle = services.fal, entry.handle
    try:
        done = fal.wait(handle, services.settings.poll, check_now)
        out = fal.result(handle, generation_failed=bool(done.status.error), endpoint=job.endpoint)
    except Stopped:
        running = None
        try:
            running = fal.is_running(handle)  # a queued request is dropped unbilled
            fal.cancel(handle)
        finally:
            ledger.move(entry, Move.CANCEL, cancelled_at=time.time(), cancelled_running=running)
        raise
    except FalError as exc:
        if exc.kind is FailureKind.TRANSIENT:
            raise
        if exc.kind is FailureKind.EXPIRED and policy.may_pay_again(
            "expired", services.settings.resubmit_expired, entry.repaid
        ):  # billed, but gone before we fetched it: the user allowed paying again, once
            repaid = (*entry.repaid, "expired")
            return ledger.move(
                entry, Move.RETRY, Cause.EXPIRED, error=str(exc), handle=None, repaid=repaid
            )
        user_cancel = exc.kind is FailureKind.CANCELLED and entry.status is S.CANCELLED
        if exc.kind is FailureKind.FAILED or (user_cancel and entry.cancelled_running is False):
            services.budget.release(job.job_key, entry.attempts)  # fal did not bill it
        attempts = entry.attempts - 1 if user_cancel else entry.attempts
        allowed = policy.attempts_allowed(services.settings.max_attempts, entry.repaid)
        if not policy.may_try_again(exc.kind, attempts, allowed):
            raise
        return ledger.move(
            entry, Move.RETRY, Cause(exc.kind), error=str(exc), handle=None, attempts=attempts
        )
    return ledger.move(
        entry,
        Move.COMPLETE,
        result=out.output,
        billable_units=out.billable_units,
        served_by=out.served_by,
        completed_at=done.completed_at,
        detected_at=done.detected_at,
        completion_uncertainty=done.uncertainty,
        detected_via=done.via,
        inference_seconds=done.status.metrics.get("inference_time"),
    )
