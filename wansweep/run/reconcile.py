"""Settling submits whose answer was lost, through fal's own records: in a run (see
:mod:`wansweep.run.execute`) and outside one (``wansweep reconcile``). Nothing here submits."""

from __future__ import annotations

import math
import time
from collections import Counter

from wansweep.errors import LedgerDamaged
from wansweep.fal import FalQueue
from wansweep.fal.platform import Lookup
from wansweep.run.ledger import Ledger
from wansweep.run.lifecycle import Cause, LedgerEntry, LedgerStatus
from wansweep.run.transitions import Move
from wansweep.store import Store
from wansweep.store.layout import marked_request

S = LedgerStatus
UNSETTLED = (S.SUBMITTING, S.AMBIGUOUS)


def look_up(
    fal: FalQueue, store: Store, job_key: str, entry: LedgerEntry, fields: dict, settle_after: float
) -> Lookup:
    """What fal's records say of this entry's last submit: a request its webhook named (and
    fal confirms), else the request listing. "Not listed" proves the submit absent only when it
    carried fal's documented start deadline (``entry.deadline_s``) and ``settle_after`` runs
    past it: without a deadline fal may still start the request, however long it waited."""
    named = marked_request(store, job_key, entry.attempts)
    handle = fal.confirm(entry.endpoint, named, fields) if named else None
    if handle is not None:  # its webhook came and fal's records agree: no need for the listing
        return Lookup(handle, False, "named by its webhook, confirmed by fal's records")
    provable = entry.deadline_s is not None and settle_after > entry.deadline_s
    return fal.find_submitted(
        entry.endpoint,
        fields,
        entry.submitted_at or time.time(),
        settle_after if provable else math.inf,
        entry.search_window,
        entry.earlier_requests,
    )


def record(ledger: Ledger, entry: LedgerEntry, found: Lookup) -> LedgerEntry:
    """Write down what fal's records settled: the request found (``submitted``, never paid
    again), proven never accepted (``retrying``: the next submit is an attempt of its own), or
    neither yet (``ambiguous``)."""
    if found.handle is not None:
        return ledger.move(
            entry,
            Move.FOUND,
            request_id=found.handle.request_id,
            handle=found.handle,
            reconciled=True,
        )
    if found.absent:
        return ledger.move(entry, Move.ABSENT, Cause.ABSENT, error=found.why)
    return ledger.move(entry, Move.UNSETTLED, error=found.why)


def reconcile_store(store: Store, fal: FalQueue, settle_after: float) -> Counter:
    """Settle every unsettled entry of an archive; counts found / absent / ambiguous /
    damaged (a damaged entry is settled by the next run, which knows the job's fields)."""
    ledger, counts = Ledger(store), Counter()
    for job_key in ledger.job_keys():
        try:
            entry = ledger.get(job_key)
        except LedgerDamaged:
            counts["damaged"] += 1
            continue
        if entry is None or entry.status not in UNSETTLED or entry.handle or not entry.fields:
            continue
        entry = record(
            ledger, entry, look_up(fal, store, job_key, entry, entry.fields, settle_after)
        )
        counts[{S.SUBMITTED: "found", S.RETRYING: "absent"}.get(entry.status, "ambiguous")] += 1
    return counts
