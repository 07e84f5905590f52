"""Settling submits whose answer was lost, through fal's own records: in a run (see
:mod:`wansweep.run.execute`) and outside one (``wansweep reconcile``). Nothing here submits."""

from __future__ import annotations

import time
from collections import Counter

from wansweep.errors import LedgerDamaged
from wansweep.fal import FalQueue
from wansweep.fal.platform import Lookup
from wansweep.fal.types import Handle
from wansweep.run.ledger import Ledger
from wansweep.run.lifecycle import LedgerEntry, LedgerStatus
from wansweep.store import Store
from wansweep.store.layout import marked_requests

UNSETTLED = (LedgerStatus.SUBMITTING, LedgerStatus.AMBIGUOUS)


def look_up(
    fal: FalQueue, store: Store, job_key: str, entry: LedgerEntry, fields: dict, settle_after: float
) -> Lookup:
    """What fal's records say of this entry's last submit: a request its webhook named (and
    fal confirms), else the request listing."""
    named = [
        handle
        for request_id in marked_requests(store, job_key, entry.attempts)
        if (handle := fal.confirm(entry.endpoint, request_id, fields)) is not None
    ]
    if len(named) == 1:  # its webhook came: no need for the (lagging) listing
        return Lookup(named[0], False, "named by its webhook")
    return fal.find_submitted(
        entry.endpoint,
        fields,
        entry.submitted_at or time.time(),
        settle_after,
        entry.search_window,
        entry.earlier_requests,
    )


def record(ledger: Ledger, entry: LedgerEntry, found: Lookup) -> tuple[LedgerEntry, Handle | None]:
    """Write down what fal's records settled: the request found (``submitted``, never paid
    again) or proven never accepted (``retrying``: the next submit is an attempt of its own).
    Unsettled: the entry unchanged."""
    if found.handle is not None:
        entry = ledger.put(
            entry,
            status=LedgerStatus.SUBMITTED,
            request_id=found.handle.request_id,
            handle=found.handle,
            reconciled=True,
        )
        return entry, found.handle
    if found.absent:
        return ledger.put(entry, "absent", status=LedgerStatus.RETRYING, error=found.why), None
    return entry, None


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
        found = look_up(fal, store, job_key, entry, entry.fields, settle_after)
        entry, handle = record(ledger, entry, found)
        if handle is not None:
            counts["found"] += 1
        elif found.absent:
            counts["absent"] += 1
        else:
            ledger.put(entry, status=LedgerStatus.AMBIGUOUS, error=found.why)
            counts["ambiguous"] += 1
    return counts
