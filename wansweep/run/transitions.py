"""Every change of a job's ledger status, by name: the only code that sets a status.

Each :class:`Move` may leave only the statuses :data:`TABLE` lists for it and reaches exactly
one; :func:`apply` refuses any other (:class:`~wansweep.errors.IllegalMove`, nothing written),
appends the change and its :class:`~wansweep.run.lifecycle.Cause` to the entry's history, and
returns the next version. :meth:`LedgerEntry.with_changes` refuses to set a status, and
tests/unit/test_transitions.py walks the whole table and finds no other writer in the source.

``SUBMIT`` (none, retrying -> submitting): about to POST; the attempt is counted first.
``ACCEPT`` (submitting -> submitted): fal answered with a request.
``NOT_SENT`` (submitting -> retrying): the submit provably never reached fal's queue; its
attempt is given back.
``FOUND`` / ``ABSENT`` / ``UNSETTLED`` (submitting, ambiguous -> submitted / retrying /
ambiguous): what fal's records say of a submit whose answer was lost.
``PAY_AGAIN`` (submitting, ambiguous -> retrying): the user chose to pay again (once a job).
``DAMAGED`` (none -> ambiguous): a fresh entry for one that cannot be read.
``CANCEL`` (submitted, cancelled -> cancelled): the user stopped the run while the job waited.
``COMPLETE`` (submitted, cancelled -> completed): the result is in the ledger.
``RETRY`` (submitted, cancelled, completed, archived -> retrying): the generation failed
unbilled, a cancelled request was dropped, or its video expired before it was archived (or
the archive lost its copy: ``archived`` outranks nothing, the sidecar does).
``ARCHIVE`` (completed, expired, archived -> archived): the sidecar is written (an expired
job's video fetched after all, or a repair).
``FAIL`` / ``EXPIRE``: nothing more to try; fal holds nothing more (``archived`` included: a
job whose archived copy was lost is repaired from fal, or ends so).
``REOPEN`` (failed, expired -> retrying): a later run may try again (attempts left, or the
user allowed paying again for an expired job).
"""

from __future__ import annotations

import time
from dataclasses import replace
from enum import StrEnum
from typing import Any

from wansweep.errors import IllegalMove
from wansweep.run.lifecycle import Cause, LedgerEntry, LedgerStatus

S = LedgerStatus


class Move(StrEnum):
    SUBMIT = "submit"
    ACCEPT = "accept"
    NOT_SENT = "not_sent"
    FOUND = "found"
    ABSENT = "absent"
    UNSETTLED = "unsettled"
    PAY_AGAIN = "pay_again"
    DAMAGED = "damaged"
    CANCEL = "cancel"
    COMPLETE = "complete"
    RETRY = "retry"
    ARCHIVE = "archive"
    FAIL = "fail"
    EXPIRE = "expire"
    REOPEN = "reopen"


UNSETTLED_SUBMIT = frozenset({S.SUBMITTING, S.AMBIGUOUS})

TABLE: dict[Move, tuple[frozenset[LedgerStatus | None], LedgerStatus]] = {
    Move.SUBMIT: (frozenset({None, S.RETRYING}), S.SUBMITTING),
    Move.ACCEPT: (frozenset({S.SUBMITTING}), S.SUBMITTED),
    Move.NOT_SENT: (frozenset({S.SUBMITTING}), S.RETRYING),
    Move.FOUND: (UNSETTLED_SUBMIT, S.SUBMITTED),
    Move.ABSENT: (UNSETTLED_SUBMIT, S.RETRYING),
    Move.UNSETTLED: (UNSETTLED_SUBMIT, S.AMBIGUOUS),
    Move.PAY_AGAIN: (UNSETTLED_SUBMIT, S.RETRYING),
    Move.DAMAGED: (frozenset({None}), S.AMBIGUOUS),
    Move.CANCEL: (frozenset({S.SUBMITTED, S.CANCELLED}), S.CANCELLED),
    Move.COMPLETE: (frozenset({S.SUBMITTED, S.CANCELLED}), S.COMPLETED),
    Move.RETRY: (frozenset({S.SUBMITTED, S.CANCELLED, S.COMPLETED, S.ARCHIVED}), S.RETRYING),
    Move.ARCHIVE: (frozenset({S.COMPLETED, S.ARCHIVED, S.EXPIRED}), S.ARCHIVED),
    Move.FAIL: (
        frozenset({None, S.RETRYING, S.SUBMITTED, S.CANCELLED, S.COMPLETED, S.ARCHIVED, S.FAILED}),
        S.FAILED,
    ),
    Move.EXPIRE: (
        frozenset({S.SUBMITTED, S.CANCELLED, S.COMPLETED, S.ARCHIVED, S.EXPIRED}),
        S.EXPIRED,
    ),
    Move.REOPEN: (frozenset({S.FAILED, S.EXPIRED}), S.RETRYING),
}


def apply(
    entry: LedgerEntry, move: Move, cause: Cause | None = None, **changes: Any
) -> LedgerEntry:
    """The entry after ``move`` (other fields changed as given), its history one step longer;
    :class:`IllegalMove` if the table does not allow the move from the entry's status."""
    sources, target = TABLE[move]
    if entry.status not in sources:
        allowed = ", ".join(sorted(str(s) if s else "(none)" for s in sources))
        raise IllegalMove(
            f"job {entry.job_key}: {move} from {entry.status or '(none)'} is not allowed "
            f"(only from {allowed}); the ledger entry is left as it was"
        )
    step = (str(target), time.time()) + ((str(Cause(cause)),) if cause else ())
    return replace(entry.with_changes(**changes), status=target, history=(*entry.history, step))
