"""Every error wansweep raises on purpose, in one tree.

::

    WansweepError                 base of all of them; str() is a message a user can act on
    ├── InputError                the user's input cannot be used; nothing was submitted (exit 2)
    │   ├── SpecError             a sweep spec: the message names the key
    │   ├── ManifestError         a manifest as a whole (missing, unreadable, no such column)
    │   ├── PlanInvalid           rows with problems; the message lists row, field, rule, value
    │   └── OverBudget            the jobs to run are estimated above the budget
    ├── CannotRun                 the run cannot work at all (fal refuses the key, no route to fal,
    │                             the store refuses writes); nothing more is submitted (exit 3)
    ├── BudgetExceeded            during a run: this submit would pass the budget (job skipped)
    ├── Stopped                   the run was cancelled (Ctrl-C, flow-run cancel) while a job waited
    ├── StoreError                the object store refused or lost something
    │   ├── StoreUnavailable      ... and trying again may help (connection, throttling)
    │   │   └── StoreMismatch     the store holds other bytes than were sent (removed again)
    │   └── StoreRefused          ... for every job alike (full, over quota, read-only, no
    │                             permission): also a CannotRun, the run stops submitting
    ├── LedgerDamaged             a ledger entry cannot be read: settled through fal, never trusted
    ├── IllegalMove               a ledger status change the state table forbids (a bug; nothing
    │                             is written)
    ├── LeaseHeld                 another process works this job now (its lease is live)
    └── FalError                  one job's request at fal ended badly; ``kind`` says how
        ├── FalUnavailable        fal could not be reached or kept answering 429/5xx (transient)
        ├── AmbiguousSubmit       a submit went out but its answer was lost: fal may hold the job
        └── NotSent               a submit provably never reached fal's queue (no connection,
                                  or refused before queueing): no attempt was used

Whether a step may be run again is decided in :mod:`wansweep.fal.policy`, not here. The CLI maps
the tree to exit codes in one place (:data:`EXIT_CODES`).
"""

from __future__ import annotations

from enum import StrEnum


class WansweepError(Exception):
    """Base class: anything wansweep raises deliberately. Its message is scrubbed of secrets
    (presigned URLs, keys, tokens) when it is made, since text from outside flows into it."""

    def __init__(self, *args: object):
        from wansweep.scrub import scrub

        super().__init__(*(scrub(a) if isinstance(a, str) else a for a in args))


class InputError(WansweepError, ValueError):
    """The user's input cannot be used as it is; nothing was submitted or paid for."""


class SpecError(InputError):
    """A sweep spec that cannot be used; the message names the key."""


class ManifestError(InputError):
    """The manifest as a whole cannot be read (missing file, wrong format, no columns)."""


class PlanInvalid(InputError):
    """Rows with problems (each named by row, field, rule and value)."""


class OverBudget(InputError):
    """The jobs left to run are estimated above the budget: the sweep does not start."""


class CannotRun(WansweepError):
    """Every job would meet this (a key fal refuses, no route to fal, a store that refuses
    writes): the run stops at the first, submits nothing more, and says what to fix. Jobs it
    did not send are left for the next run, without a flag; nothing sent is cancelled."""


class BudgetExceeded(WansweepError):
    """A submit that would pass the budget was refused (the job ends ``skipped``)."""


class Stopped(WansweepError):
    """The run was cancelled while this job waited."""


class StoreError(WansweepError):
    """The object store refused an operation or holds something unusable."""


class StoreUnavailable(StoreError):
    """The store could not be reached (or throttled us): the same step may be run again."""


class StoreMismatch(StoreUnavailable):
    """What the store received differs from what was sent (its checksum says so). The object
    was removed, so nothing points at it; the upload may simply be tried again."""


class StoreRefused(StoreError, CannotRun):
    """The store refuses writes for a reason every job meets (a full disk, a quota, a
    read-only mount, no permission): the run stops submitting, since each new job would be
    paid for and then not archived. What fal already made stays recorded in the ledger and
    is fetched, not paid again, by the next run once the store is fixed."""


class LedgerDamaged(WansweepError):
    """A ledger entry exists but cannot be read. It is never trusted nor silently replaced:
    the job is settled through fal's own records (``wansweep reconcile``)."""


class IllegalMove(WansweepError):
    """A ledger status change the state table (:mod:`wansweep.run.transitions`) forbids. A bug
    or a hand-edited ledger: nothing is written, and the job is left as it was."""


class LeaseHeld(WansweepError):
    """Another process holds this job's lease and renews it: it is not ours to run now."""


class FailureKind(StrEnum):
    """How a fal request ended badly; decides what may happen next (see lifecycle)."""

    INVALID = "invalid"  # 422: the input was refused (may be billed when GPU time was spent)
    FAILED = "failed"  # the generation failed (5xx result): not billed, may be tried again
    EXPIRED = "expired"  # fal no longer holds the request, its result or its video
    CANCELLED = "cancelled"  # cancelled (by us, earlier) before fal finished it
    REJECTED = "rejected"  # another 4xx: not accepted, not billed
    TRANSIENT = "transient"  # fal could not be reached / kept answering 429 or 5xx
    AMBIGUOUS = "ambiguous"  # the submit may or may not have been accepted


class FalError(WansweepError):
    """A job-level failure at fal. ``kind``: a :class:`FailureKind`."""

    def __init__(self, message: str, kind: FailureKind | str, status_code: int | None = None):
        super().__init__(message)
        self.kind = FailureKind(kind)
        self.status_code = status_code


class FalUnavailable(FalError):
    """fal could not be reached, or kept answering 429/5xx after every retry."""

    def __init__(self, message: str, status_code: int | None = None):
        super().__init__(message, FailureKind.TRANSIENT, status_code)


class AmbiguousSubmit(FalError):
    """The submit went out but its answer was lost: fal may or may not hold the job."""

    def __init__(self, message: str, status_code: int | None = None):
        super().__init__(message, FailureKind.AMBIGUOUS, status_code)


class NotSent(FalError):
    """A submit that provably never reached fal's queue: no connection was made (DNS, refused,
    TLS), or fal refused it before queueing (401, 403, 404, 422 at submit; 429 or an ingress
    502/503 on every try). Nothing was paid and no attempt is used. ``run_wide``: the cause is
    not this job's (a key fal refuses, no route to fal), so every other submit would meet it."""

    def __init__(
        self,
        message: str,
        kind: FailureKind | str = FailureKind.TRANSIENT,
        status_code: int | None = None,
        run_wide: bool = False,
    ):
        super().__init__(message, kind, status_code)
        self.run_wide = run_wide


EXIT_CODES: dict[type[BaseException], int] = {
    InputError: 2,  # bad spec, manifest, rows or budget: fix the input; nothing was paid
    CannotRun: 3,  # the key, the route to fal or the store: fix it; nothing more was paid
    WansweepError: 1,  # anything else we raised on purpose
}


def exit_code(exc: BaseException) -> int:
    """The CLI's exit code for an error (the most specific class listed wins)."""
    for cls in type(exc).__mro__:
        if cls in EXIT_CODES:
            return EXIT_CODES[cls]
    return 1
