from __future__ import annotations

import threading

import pytest

from wansweep.errors import BudgetExceeded
from wansweep.plan import schema
from wansweep.plan.pricing import Budget, PriceTable


def test_budget_refuses_the_submit_that_would_pass_it():
    budget = Budget(1.0)
    budget.reserve(0.75, "a")
    with pytest.raises(BudgetExceeded, match=r"past the budget of \$1.00"):
        budget.reserve(0.375, "b")
    budget.release(0.75)  # a failed (unbilled) generation gives its reservation back
    budget.reserve(0.375, "b")
    assert budget.committed == pytest.approx(0.375)


def test_budget_holds_under_concurrent_reservations():
    budget = Budget(10.0)
    granted = []

    def worker():
        for _ in range(100):
            try:
                budget.reserve(0.25, "x")
                granted.append(1)
            except BudgetExceeded:
                pass

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(granted) == 40 and budget.committed == pytest.approx(10.0)


def test_price_table_from_config():
    table = PriceTable.load()
    assert table.estimate(schema.ENDPOINTS[1], "720p", "5") == pytest.approx(0.25)
    assert table.estimate(schema.ENDPOINTS[0], "1080p", 10) == pytest.approx(1.5)
    with pytest.raises(KeyError, match="no price"):
        table.unit_price(schema.ENDPOINTS[0], "4k")
