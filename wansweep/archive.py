"""Archive layout, request ledger and budget.

Layout under the store root (readable with plain ``aws s3 ls``)::

    jobs/<job_key>/video.mp4     the video, byte for byte as fal made it
    jobs/<job_key>/thumb.jpg     its first frame
    jobs/<job_key>/meta.json     the sidecar, written last: its presence means the video is whole
    ledger/<job_key>.json        request ledger: written before and after every submit
    sweeps/<name>/...            each sweep's plan, report and index

Jobs live by key, not by sweep, so two sweeps that share a job pay for it once.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from wansweep.store import Store

SIDECAR, VIDEO, THUMB = "meta.json", "video.mp4", "thumb.jpg"


def job_prefix(job_key: str) -> str:
    return f"jobs/{job_key}"


def job_file(job_key: str, name: str) -> str:
    return f"jobs/{job_key}/{name}"


def ledger_key(job_key: str) -> str:
    return f"ledger/{job_key}.json"


def sweep_prefix(name: str) -> str:
    return f"sweeps/{name}"


def archived_keys(store: Store) -> set[str]:
    """Job keys whose sidecar exists: one listing of the store, not one call per job."""
    keys = set()
    for key in store.list("jobs/"):
        parts = key.split("/")
        if len(parts) == 3 and parts[2] == SIDECAR:
            keys.add(parts[1])
    return keys


class Ledger:
    """One small JSON object per job, so concurrent writers never contend (S3 has no append)."""

    def __init__(self, store: Store):
        self.store = store

    def get(self, job_key: str) -> dict[str, Any] | None:
        return self.store.get_json(ledger_key(job_key))

    def put(self, job_key: str, entry: dict[str, Any], **changes: Any) -> dict[str, Any]:
        entry = {**entry, **changes, "job_key": job_key, "updated_at": time.time()}
        history = entry.setdefault("history", [])
        if "status" in changes:
            history.append([changes["status"], entry["updated_at"]])
        self.store.put_json(ledger_key(job_key), entry)
        return entry

    def all(self) -> dict[str, dict[str, Any]]:
        out = {}
        for key in self.store.list("ledger/"):
            if key.endswith(".json"):
                entry = self.store.get_json(key)
                if entry:
                    out[entry["job_key"]] = entry
        return out


class BudgetExceeded(RuntimeError):
    pass


class Budget:
    """Spend committed by submits in this process; a submit that would pass the budget is refused."""

    def __init__(self, limit_usd: float | None, committed_usd: float = 0.0):
        self.limit = limit_usd
        self.committed = committed_usd
        self._lock = threading.Lock()

    def reserve(self, usd: float, what: str) -> None:
        with self._lock:
            if self.limit is not None and self.committed + usd > self.limit + 1e-9:
                raise BudgetExceeded(
                    f"{what}: submitting would commit ${self.committed + usd:.2f}, past the budget "
                    f"of ${self.limit:.2f}; raise budget_usd to go on"
                )
            self.committed = round(self.committed + usd, 6)

    def release(self, usd: float) -> None:
        with self._lock:
            self.committed = round(max(0.0, self.committed - usd), 6)
