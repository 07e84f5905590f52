"""What a sweep really cost: the report's billed / likely / upper figures per endpoint beside
fal's usage API over the sweep's time window (``wansweep spend``)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pandas as pd

from wansweep.errors import FalError, LedgerDamaged
from wansweep.results.report import jobs_frame
from wansweep.run.ledger import Ledger
from wansweep.store import Store


@dataclass
class SpendCheck:
    table: pd.DataFrame  # per endpoint: cost_usd, likely_usd, upper_usd, fal_usd
    start: float  # the window asked of fal, on fal's clock
    end: float
    note: str


def sweep_window(store: Store, job_keys: list[str]) -> tuple[float, float] | None:
    """First submit and last ledger write of these jobs (this machine's clock)."""
    ledger = Ledger(store)

    def times(key: str) -> tuple[float, float] | None:
        try:
            entry = ledger.get(key)
        except LedgerDamaged:
            return None
        if entry is None or entry.submitted_at is None:
            return None
        return entry.submitted_at, entry.updated_at or entry.submitted_at

    with ThreadPoolExecutor(16) as pool:
        found = [t for t in pool.map(times, job_keys) if t]
    if not found:
        return None
    return min(t[0] for t in found), max(t[1] for t in found)


def compare_spend(store: Store, sweep: str, fal: Any, settle: float = 3600.0) -> SpendCheck:
    """Our figures beside fal's billed usage. fal's usage is account-wide: other work on the
    same endpoints in the window counts there too, so fal's figure can only be higher."""
    frame = jobs_frame(store, sweep)
    frame = frame[frame["endpoint"].notna()]
    # fal bills a rerouted request as the endpoint that served it
    billed_as = frame["served_by"].where(frame["served_by"].notna(), frame["endpoint"])
    ours = (
        frame.assign(endpoint=billed_as)
        .groupby("endpoint")[["cost_usd", "likely_usd", "upper_usd"]]
        .sum()
    )
    window = sweep_window(store, list(frame["job_key"].dropna()))
    if window is None:
        ours["fal_usd"] = 0.0
        return SpendCheck(ours.reset_index(), 0, 0, "nothing of this sweep was submitted")
    fal.prices(list(ours.index))  # also learns fal's clock from its Date header
    start = fal.fal_time(window[0]) - 5  # fal's clock is known to the second
    end = fal.fal_time(window[1]) + settle  # requests may end after our last write
    try:
        usage = fal.usage(list(ours.index), start, end)
    except FalError as exc:
        if exc.status_code in (401, 403):
            raise FalError(
                "fal's usage API refused this key: reading billed usage needs a key allowed to "
                "(fal: an Admin key). Compare the report's figures with fal's usage dashboard.",
                exc.kind,
                exc.status_code,
            ) from None
        raise
    billed: dict[str, float] = {}
    for row in usage:  # rows of one endpoint at several unit prices (discounts) add up
        cost = row.get("cost_total", row.get("cost")) or 0
        billed[row["endpoint_id"]] = billed.get(row["endpoint_id"], 0.0) + float(cost)
    ours["fal_usd"] = [round(billed.get(e, 0.0), 6) for e in ours.index]
    note = (
        "fal's figure covers the whole account over the window: other work on these endpoints "
        "then counts too"
    )
    return SpendCheck(ours.reset_index(), start, end, note)
