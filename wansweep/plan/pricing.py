"""The budget, and fal's own unit prices as a run last read them (:class:`FalPrices`). A job's
estimate is its endpoint profile's price (:meth:`wansweep.plan.endpoints.Profile.estimate`).

The budget is decided here and nowhere else: :func:`check_budget` before a run starts (used by
``wansweep plan`` and the sweep flow alike), :class:`Budget` for every submit during a run.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Any

from wansweep.errors import BudgetExceeded, OverBudget
from wansweep.store import Store
from wansweep.store.layout import FAL_PRICES_KEY


@dataclass(frozen=True)
class FalPrices:
    """fal's pricing API as last read: per endpoint ``{unit_price, unit, currency}``."""

    fetched_at: float
    source: str
    prices: dict[str, dict[str, Any]]

    def unit_price(self, endpoint: str) -> float | None:
        """The endpoint's price per billing unit: a number, or a numeric string (fal's schema
        says a number; a copy of its answers shows "0.1"); None for anything else."""
        price = self.prices.get(endpoint, {}).get("unit_price")
        if isinstance(price, bool) or not isinstance(price, (int, float, str)):
            return None
        try:
            value = float(price)
        except ValueError:
            return None
        return value if math.isfinite(value) and value >= 0 else None


def load_prices(store: Store) -> FalPrices | None:
    """The prices the last run read, or None (never read, or unreadable)."""
    try:
        data = store.get_json(FAL_PRICES_KEY)
        return FalPrices(float(data["fetched_at"]), str(data["source"]), dict(data["prices"]))
    except (TypeError, KeyError, ValueError):
        return None


def check_budget(jobs: int, todo_usd: float, budget_usd: float | None) -> None:
    """Before any submit: the jobs left to run must fit the budget (:class:`OverBudget`)."""
    if budget_usd is not None and todo_usd > budget_usd + 1e-9:
        raise OverBudget(
            f"the {jobs} jobs to run are estimated at ${todo_usd:.2f}, over the "
            f"budget of ${budget_usd:.2f}; nothing was submitted"
        )


class Budget:
    """What this process's run may be billed for, request by request, against ``budget_usd``.

    Each submit holds its job's price before it is sent (:meth:`reserve`, refused with
    :class:`BudgetExceeded` when the holds would pass the budget); a request an earlier run sent
    and this one takes over, which fal may still bill, is held without question
    (:meth:`take_over`). A hold is given back only when fal surely did not bill that request
    (:meth:`release`): it never reached fal, fal's records prove it never took it, or its
    generation failed unbilled. Holds are keyed by (job key, attempt), so giving one back twice
    gives nothing more."""

    def __init__(self, budget_usd: float | None):
        self.budget_usd = budget_usd
        self._held: dict[tuple[str, int], float] = {}
        self._lock = threading.Lock()

    @property
    def committed(self) -> float:
        with self._lock:
            return round(sum(self._held.values()), 6)

    def reserve(self, job_key: str, attempt: int, usd: float, what: str) -> None:
        """Hold ``usd`` for attempt ``attempt`` of a job before it is sent, or raise
        :class:`BudgetExceeded` (nothing held). An attempt already held stays as it is."""
        with self._lock:
            if (job_key, attempt) in self._held:
                return
            committed = sum(self._held.values())
            if self.budget_usd is not None and committed + usd > self.budget_usd + 1e-9:
                raise BudgetExceeded(
                    f"{what}: submitting would commit ${committed + usd:.2f}, past the budget "
                    f"of ${self.budget_usd:.2f}; raise budget_usd to go on"
                )
            self._held[(job_key, attempt)] = usd

    def take_over(self, job_key: str, attempt: int, usd: float) -> None:
        """Hold a request sent before this run (it may still be billed), whatever the budget."""
        with self._lock:
            self._held.setdefault((job_key, attempt), usd)

    def holds(self, job_key: str, attempt: int) -> bool:
        with self._lock:
            return (job_key, attempt) in self._held

    def release(self, job_key: str, attempt: int) -> None:
        """Give a hold back: fal surely did not bill that request."""
        with self._lock:
            self._held.pop((job_key, attempt), None)
