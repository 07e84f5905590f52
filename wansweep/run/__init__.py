"""Running: one job from submit to archive, paid for once, across processes and restarts.

- :mod:`.lifecycle`  ledger statuses, run outcomes, billing: the state table
- :mod:`.transitions` every status change, by name: the only writer of a status
- :mod:`.ledger`     the request ledger, one object per job
- :mod:`.execute`    one job, start to archive: its lease, its ledger, its steps in a loop
- :mod:`.steps`      the steps that spend money (submit, settle, wait), none twice
- :mod:`.checks`     what must work before a run's first submit (store, fal's key, prices)
- :mod:`.leases`     one worker per job across processes
- :mod:`.reconcile`  settling lost submits through fal's records
- :mod:`.finish`     the archive step: video, frames, metrics, sidecar last
- :mod:`.runtime`    the services one process's jobs share (store, fal, budget, leases)

May import :mod:`wansweep.plan`, :mod:`wansweep.media`, :mod:`wansweep.fal`,
:mod:`wansweep.store`, :mod:`wansweep.errors` and :mod:`wansweep.scrub`; never ``results`` or
Prefect (tests/unit/test_house.py).
"""

from wansweep._face import lazy

_EXPORTS = {
    "run_job": "execute",
    "next_step": "steps",
    "Move": "transitions",
    "Services": "runtime",
    "Run": "runtime",
    "Ledger": "ledger",
    "LedgerEntry": "lifecycle",
    "LedgerStatus": "lifecycle",
    "Outcome": "lifecycle",
    "JobResult": "lifecycle",
    "Leases": "leases",
    "services_for": "runtime",
    "reconcile_store": "reconcile",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy(__name__, _EXPORTS)
