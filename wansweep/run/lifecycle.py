"""A job's life as typed state: ledger statuses, run outcomes, and what each means for money.

The ledger entry (``ledger/<job_key>.json``) is written before and after every step that
spends or can lose money, so a run that dies is resumed by the next one from it:

==============  ======================================================  ==========================
ledger status   what it means                                           what the next run does
==============  ======================================================  ==========================
(none)          never submitted                                         reserve budget, submit
submitting      written just before the POST: the answer may be lost    look the request up at fal
ambiguous       the POST may have been accepted; fal's records do not   nothing, until settled
                show it (yet)                                           (reconcile / a later run)
submitted       fal holds ``request_id``                                poll that request
retrying        the last generation failed unbilled (or the user        submit again (an attempt)
                allowed a new one)
cancelled       cancelled by the user (Ctrl-C, flow-run cancel)         poll it; if fal dropped it,
                                                                        submit again (no attempt)
completed       the result is in the ledger; video not yet archived     archive from it (no submit)
archived        the sidecar is written: the video is whole              nothing (the archive is
                                                                        the cache)
failed          fal failed it on every attempt, or refused its input    nothing (reported)
expired         fal no longer holds the request, result or video        nothing, unless
                                                                        ``--resubmit-expired``
==============  ======================================================  ==========================

The sidecar (``jobs/<key>/meta.json``), written last, outranks every ledger status. A status
changes only by a named move of :mod:`.transitions`, which refuses any the table there does not
allow; :meth:`LedgerEntry.with_changes` changes every other field.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, fields, replace
from enum import StrEnum
from typing import Any

from wansweep.errors import FailureKind, LedgerDamaged
from wansweep.fal.types import Handle
from wansweep.scrub import scrub


class LedgerStatus(StrEnum):
    SUBMITTING = "submitting"
    AMBIGUOUS = "ambiguous"
    SUBMITTED = "submitted"
    RETRYING = "retrying"
    CANCELLED = "cancelled"
    COMPLETED = "completed"
    ARCHIVED = "archived"
    FAILED = "failed"
    EXPIRED = "expired"


class Cause(StrEnum):
    """Why a status changed, kept in the entry's history beside the change."""

    FAILED = "failed"  # fal failed the generation (5xx, start deadline): not billed
    CANCELLED = "cancelled"  # the user cancelled it and fal dropped it (or it may finish)
    EXPIRED = "expired"  # fal no longer holds the request, result or video
    ABSENT = "absent"  # fal's records prove a lost submit was never accepted
    AMBIGUOUS = "ambiguous"  # the user paid again for a submit fal's records cannot settle
    NOT_SENT = "not_sent"  # the submit provably never reached fal's queue
    DAMAGED = "damaged"  # the entry could not be read: a fresh one replaces it
    INVALID = "invalid"  # fal refused the input
    REJECTED = "rejected"  # fal refused the request for another reason
    TRANSIENT = "transient"  # fal could not be reached


class Outcome(StrEnum):
    """How one job ended in one run."""

    ARCHIVED = "archived"  # generated and archived by this run
    RESUMED = "resumed"  # an earlier run's request, archived by this one (no new submit)
    CACHED = "cached"  # already archived: nothing done
    REPAIRED = "repaired"  # archived once, its video lost by the archive and fetched again
    FAILED = "failed"
    EXPIRED = "expired"
    CANCELLED = "cancelled"  # this run was cancelled while the job waited
    SKIPPED = "skipped"  # refused by the budget before any submit
    AMBIGUOUS = "ambiguous"  # submit may have been accepted; settled by a later run
    BUSY = "busy"  # another process holds the job's lease and is running it
    UNSENT = "unsent"  # the run stopped before this job reached fal (nothing paid, no attempt)
    UNARCHIVED = "unarchived"  # the archive refused writes (full, read-only): left for a rerun
    CRASHED = "crashed"  # the task itself crashed (a bug or the machine): see the log


SUCCEEDED = frozenset({Outcome.ARCHIVED, Outcome.RESUMED, Outcome.REPAIRED, Outcome.CACHED})
"""Outcomes whose video is in the archive."""

UNFINISHED = frozenset(
    {
        Outcome.CANCELLED,
        Outcome.SKIPPED,
        Outcome.AMBIGUOUS,
        Outcome.BUSY,
        Outcome.UNSENT,
        Outcome.UNARCHIVED,
    }
)
"""Outcomes a later run (the same command again) can finish."""

FAILURES = frozenset(set(Outcome) - SUCCEEDED - UNFINISHED)
"""Outcomes that are failures (logged as such). Any outcome outside SUCCEEDED makes a run
exit non-zero: the sweep is not whole."""


class Billing(StrEnum):
    """What fal probably charged for a job, from what it answered (fal's billing FAQ)."""

    BILLED = "billed"  # a video was produced
    MAYBE = "maybe"  # fal says it may charge: a 422 after GPU time, a cancelled running
    # request (it may finish), an expired result (billed when it completed)
    UNKNOWN = "unknown"  # fal may hold a request we do not know the end of: ambiguous,
    # in flight, or a damaged ledger entry
    NOT_BILLED = "not_billed"  # never accepted, failed at fal (5xx), or never submitted


def billing(status: str, error_kind: str | None, ran: bool | None = None) -> Billing:
    """The one rule for "was this job billed?", from its report status, failure kind and, for
    a cancelled job, whether it had started (fal drops a queued request unbilled). The likely
    spend counts BILLED and MAYBE; the upper bound adds UNKNOWN."""
    if status in ("succeeded", "video_lost", LedgerStatus.ARCHIVED, LedgerStatus.COMPLETED):
        return Billing.BILLED
    if status == LedgerStatus.CANCELLED:
        return Billing.NOT_BILLED if ran is False else Billing.MAYBE
    if status == LedgerStatus.EXPIRED:
        return Billing.MAYBE
    if status == LedgerStatus.FAILED and error_kind == FailureKind.INVALID:
        return Billing.MAYBE
    if status in (
        LedgerStatus.AMBIGUOUS,
        LedgerStatus.SUBMITTING,
        LedgerStatus.SUBMITTED,
        "damaged",
    ):
        return Billing.UNKNOWN
    return Billing.NOT_BILLED


@dataclass(frozen=True)
class LedgerEntry:
    """One job's ledger record. Immutable: :meth:`with_changes` returns the next version."""

    job_key: str
    status: LedgerStatus | None = None
    endpoint: str | None = None
    fields: dict[str, Any] | None = None  # the request's fields without media (for settling)
    submitted_at: float | None = None  # just before the POST (our clock)
    attempts: int = 0  # submits fal may have queued (a submit that surely never reached it
    # gives its attempt back)
    submits: int = 0  # submits fal surely accepted
    repaid: tuple[str, ...] = ()  # pay-again options used, each at most once: "ambiguous"
    # (--resubmit-ambiguous), "expired" (--resubmit-expired); each allows one attempt more
    deadline_s: float | None = None  # X-Fal-Request-Timeout sent with the last submit (None:
    # no documented start deadline was sent, so fal's records can never prove it absent)
    request_id: str | None = None
    earlier_requests: tuple[str, ...] = ()  # earlier attempts' requests: never adopted again
    handle: Handle | None = None
    result: dict[str, Any] | None = None
    error: str | None = None
    error_kind: FailureKind | None = None
    reconciled: bool = False  # the request was found through fal's records
    ambiguous: str | None = None  # why the last submit's answer is unknown
    search_window: float | None = None  # seconds before submitted_at to search fal's records
    completed_at: float | None = None  # fal completed it (our best estimate, our clock)
    detected_at: float | None = None  # we saw it completed
    completion_uncertainty: float | None = None  # +- seconds on completed_at (None: unbounded)
    detected_via: str | None = None  # "stream", "webhook" or "poll"
    inference_seconds: float | None = None
    billable_units: str | None = None  # fal's X-Fal-Billable-Units of the result, as sent
    served_by: str | None = None  # the endpoint fal says served it, when fal says so (fallback)
    video_size: int | None = None
    video_sha256: str | None = None
    cancelled_at: float | None = None
    cancelled_running: bool | None = None  # it had started when cancelled (fal may bill it)
    archived_at: float | None = None
    updated_at: float | None = None
    history: tuple[tuple, ...] = ()  # (status, time) or (status, time, cause): every move

    def with_changes(self, **changes: Any) -> LedgerEntry:
        """The next version with fields other than the status changed (a status changes only
        through :func:`wansweep.run.transitions.apply`, which keeps the history)."""
        if "status" in changes or "history" in changes:
            raise TypeError("a status changes only through wansweep.run.transitions.apply")
        for text in ("error", "ambiguous"):  # outside text: never a secret in the ledger
            if isinstance(changes.get(text), str):
                changes[text] = scrub(changes[text])
        if isinstance(changes.get("error_kind"), str):
            changes["error_kind"] = FailureKind(changes["error_kind"])
        return replace(self, **changes, updated_at=time.time())

    def retries(self, cause: str) -> int:
        """How often the job was tried again for this cause."""
        return sum(1 for h in self.history if h[0] == LedgerStatus.RETRYING and h[2:] == (cause,))

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["history"] = [list(h) for h in self.history]
        return data

    @classmethod
    def from_json(cls, data: Any, job_key: str) -> LedgerEntry:
        """Parse a stored entry; anything malformed raises :class:`LedgerDamaged`."""
        if not isinstance(data, dict) or data.get("job_key") != job_key:
            raise LedgerDamaged(f"ledger entry of {job_key} is not an entry of that job")
        known = {f.name for f in fields(cls)}
        try:
            values = {k: v for k, v in data.items() if k in known}
            if values.get("status") is not None:
                values["status"] = LedgerStatus(values["status"])
            if values.get("error_kind") is not None:
                values["error_kind"] = FailureKind(values["error_kind"])
            if values.get("handle") is not None:
                values["handle"] = Handle(**values["handle"])
            values["earlier_requests"] = tuple(str(r) for r in values.get("earlier_requests") or ())
            values["repaid"] = tuple(str(r) for r in values.get("repaid") or ())
            values["history"] = tuple(
                (str(h[0]), float(h[1]), *[str(x) for x in h[2:3]])
                for h in values.get("history") or ()
            )
            return cls(**values)
        except (TypeError, ValueError, IndexError, AttributeError) as exc:
            raise LedgerDamaged(f"ledger entry of {job_key} is damaged: {exc}") from None


@dataclass
class JobResult:
    """What one run did with one job (the generation task's return value)."""

    job_key: str
    arm: str
    row_id: str
    outcome: Outcome
    estimated_usd: float
    request_id: str | None = None
    submits: int = 0
    error: str | None = None
    error_kind: FailureKind | None = None
    seed: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def status(self) -> str:  # the name the run's counters use
        return str(self.outcome)

    def line(self) -> str:
        """One readable line: what happened to which job, why, and what to do about it."""
        seed = f", seed {self.seed}" if self.seed is not None else ""
        why = f": {self.error}" if self.error else ""
        todo = NEXT.get(self.outcome)
        return f"{self.outcome}: job {self.job_key} ({self.arm}, row {self.row_id}{seed}){why}" + (
            f"; {todo}" if todo else ""
        )


NEXT = {  # what a user does about a job that did not end archived
    Outcome.FAILED: "fal refused or failed it on every attempt: see the error",
    Outcome.EXPIRED: "fal holds it no more: --resubmit-expired pays again for it",
    Outcome.CANCELLED: "run the same command again to finish it",
    Outcome.SKIPPED: "the budget had no room: raise budget_usd and run again",
    Outcome.AMBIGUOUS: "a later run or `wansweep reconcile` settles it without paying again",
    Outcome.BUSY: "another run holds it and archives it",
    Outcome.UNSENT: "nothing was sent: fix the cause and run the same command again",
    Outcome.UNARCHIVED: "fix the archive, then run the same command again: what fal made is "
    "fetched, not paid again",
    Outcome.CRASHED: "see the traceback above; run again to resume it",
}
