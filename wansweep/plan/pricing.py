"""Prices as data (configs/pricing.yaml, USD per second of video), estimates, and the budget.

The budget is decided here and nowhere else: :func:`check_budget` before a run starts (used by
``wansweep plan`` and the sweep flow alike), :class:`Budget` for every submit during a run.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from wansweep.errors import BudgetExceeded, OverBudget

DEFAULT_PATH = Path(__file__).resolve().parents[2] / "configs" / "pricing.yaml"


@dataclass(frozen=True)
class PriceTable:
    prices: dict[str, dict[str, Any]]
    path: str

    @classmethod
    def load(cls, path: str | Path | None = None) -> PriceTable:
        path = Path(path or os.environ.get("WANSWEEP_PRICING") or DEFAULT_PATH)
        try:
            data = yaml.safe_load(path.read_text())
        except FileNotFoundError:
            raise FileNotFoundError(
                f"price table {path} not found; set WANSWEEP_PRICING to a pricing.yaml"
            ) from None
        return cls(prices=data["prices"], path=str(path))

    def unit_price(self, endpoint: str, resolution: str) -> float:
        try:
            return float(self.prices[endpoint][resolution])
        except KeyError:
            raise KeyError(
                f"{self.path} has no price for {endpoint} at {resolution}; add it before running"
            ) from None

    def estimate(self, endpoint: str, resolution: str, duration: str | int) -> float:
        """Estimated USD for one job (billed per second of output video)."""
        return round(self.unit_price(endpoint, resolution) * int(duration), 6)


def check_budget(jobs: int, todo_usd: float, limit_usd: float | None) -> None:
    """Before any submit: the jobs left to run must fit the budget (:class:`OverBudget`)."""
    if limit_usd is not None and todo_usd > limit_usd + 1e-9:
        raise OverBudget(
            f"the {jobs} jobs to run are estimated at ${todo_usd:.2f}, over the "
            f"budget of ${limit_usd:.2f}; nothing was submitted"
        )


class Budget:
    """Spend committed by submits in this process; a submit that would pass it is refused."""

    def __init__(self, limit_usd: float | None, committed_usd: float = 0.0):
        self.limit = limit_usd
        self.committed = committed_usd
        self._lock = threading.Lock()

    def reserve(self, usd: float, what: str) -> None:
        """Commit ``usd`` before a submit, or raise :class:`BudgetExceeded` (nothing changes)."""
        with self._lock:
            if self.limit is not None and self.committed + usd > self.limit + 1e-9:
                raise BudgetExceeded(
                    f"{what}: submitting would commit ${self.committed + usd:.2f}, past the budget "
                    f"of ${self.limit:.2f}; raise budget_usd to go on"
                )
            self.committed = round(self.committed + usd, 6)

    def release(self, usd: float) -> None:
        """Give a reservation back: fal surely did not bill it."""
        with self._lock:
            self.committed = round(max(0.0, self.committed - usd), 6)
