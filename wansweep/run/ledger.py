"""The request ledger: one small JSON object per job (``ledger/<job_key>.json``), written
before and after every step that spends money or could lose a video."""

from __future__ import annotations

import json
from typing import Any

from wansweep.errors import LedgerDamaged
from wansweep.run.lifecycle import Cause, LedgerEntry
from wansweep.run.transitions import Move, apply
from wansweep.store import Store
from wansweep.store.layout import LEDGER, ledger_job_key, ledger_key


class Ledger:
    """One small JSON object per job, so concurrent writers never contend (S3 has no append)."""

    def __init__(self, store: Store):
        self.store = store

    def get(self, job_key: str) -> LedgerEntry | None:
        """The job's entry, None if it has none; :class:`LedgerDamaged` if it is unreadable."""
        data = self.store.get_bytes(ledger_key(job_key))
        if data is None:
            return None
        try:
            parsed = json.loads(data)
        except ValueError:
            raise LedgerDamaged(f"ledger entry of {job_key} is not valid JSON") from None
        return LedgerEntry.from_json(parsed, job_key)

    def put(self, entry: LedgerEntry, **changes: Any) -> LedgerEntry:
        """Write the next version of an entry (fields other than its status changed)."""
        return self._write(entry.with_changes(**changes))

    def move(
        self, entry: LedgerEntry, move: Move, cause: Cause | None = None, **changes: Any
    ) -> LedgerEntry:
        """Write the entry after a named status change (see :mod:`.transitions`)."""
        return self._write(apply(entry, move, cause, **changes))

    def _write(self, entry: LedgerEntry) -> LedgerEntry:
        self.store.put_json(ledger_key(entry.job_key), entry.to_json())
        return entry

    def set_aside(self, job_key: str) -> float | None:
        """Keep an unreadable entry as ``ledger/<key>.json.damaged`` (never deleted, never
        trusted); returns how many seconds ago it was last written (None if it is gone)."""
        current = self.store.read_versioned(ledger_key(job_key))
        if current is None:
            return None
        self.store.put_bytes(ledger_key(job_key) + ".damaged", current[0])
        return current[2] or 0.0

    def all(self) -> dict[str, LedgerEntry]:
        out = {}
        for job_key in self.job_keys():
            entry = self.get(job_key)
            if entry:
                out[job_key] = entry
        return out

    def job_keys(self) -> list[str]:
        """Every job with a ledger entry (one listing)."""
        return [k for key in self.store.list(LEDGER) if (k := ledger_job_key(key))]
