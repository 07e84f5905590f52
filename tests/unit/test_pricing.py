from __future__ import annotations

import threading

import pytest

from tests.helpers import FLASH, STANDARD
from wansweep.errors import BudgetExceeded, OverBudget
from wansweep.plan.endpoints import profile
from wansweep.plan.pricing import Budget, FalPrices, check_budget, load_prices


def test_budget_refuses_the_submit_that_would_pass_it():
    budget = Budget(1.0)
    budget.reserve("a", 1, 0.75, "a")
    with pytest.raises(BudgetExceeded, match=r"past the budget of \$1.00"):
        budget.reserve("b", 1, 0.375, "b")
    assert not budget.holds("b", 1)  # a refused reservation holds nothing
    budget.release("a", 1)  # a failed (unbilled) generation gives its reservation back
    budget.release("a", 1)  # given back twice: nothing more
    budget.reserve("b", 1, 0.375, "b")
    assert budget.committed == pytest.approx(0.375)


def test_each_attempt_holds_its_own_price_and_takeovers_count_whatever_the_budget():
    budget = Budget(1.0)
    budget.reserve("a", 1, 0.5, "a")
    budget.reserve("a", 1, 0.5, "a")  # the same attempt again: held once
    budget.reserve("a", 2, 0.5, "a")  # a second paid attempt of the same job: held again
    with pytest.raises(BudgetExceeded):
        budget.reserve("a", 3, 0.01, "a")
    budget.take_over("b", 1, 0.25)  # sent by an earlier run: may be billed, so it counts
    assert budget.committed == pytest.approx(1.25)
    budget.release("a", 1)
    with pytest.raises(BudgetExceeded):  # 0.75 held: 0.5 more passes 1.0
        budget.reserve("c", 1, 0.5, "c")
    budget.reserve("c", 1, 0.25, "c")  # exactly the budget
    assert budget.committed == pytest.approx(1.0)


def test_budget_holds_under_concurrent_reservations():
    budget = Budget(10.0)
    granted = []

    def worker(n: int):
        for i in range(100):
            try:
                budget.reserve(f"job-{n}-{i}", 1, 0.25, "x")
                granted.append(1)
            except BudgetExceeded:
                pass

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(granted) == 40 and budget.committed == pytest.approx(10.0)


def test_prices_come_from_each_endpoints_profile():
    """Checked by hand against the sources the profiles quote."""
    flash, standard = profile(FLASH), profile(STANDARD)
    assert flash.estimate(flash.complete({"resolution": "720p"})) == pytest.approx(0.25)
    silent = flash.complete({"resolution": "1080p", "generate_audio": False, "duration": "10"})
    assert flash.estimate(silent) == pytest.approx(0.375)  # half of 0.075/s, 10 s
    assert standard.estimate(standard.complete({"duration": "10"})) == pytest.approx(1.5)
    kling = profile("kling-2.5-turbo-pro")  # $0.35 for 5 s, $0.07 each second past it
    assert kling.estimate(kling.complete({})) == pytest.approx(0.35)
    assert kling.estimate(kling.complete({"duration": "10"})) == pytest.approx(0.70)


def test_a_plan_exactly_at_its_budget_runs_and_one_cent_over_does_not():
    check_budget(4, 10.0, 10.0)
    check_budget(4, 99.0, None)  # no budget: nothing to pass
    with pytest.raises(OverBudget) as err:
        check_budget(4, 10.01, 10.0)
    assert str(err.value) == (
        "the 4 jobs to run are estimated at $10.01, over the budget of $10.00; "
        "nothing was submitted"
    )


def test_fals_prices_as_a_run_left_them_and_what_is_not_a_price(tmp_path):
    from wansweep.store import LocalStore
    from wansweep.store.layout import FAL_PRICES_KEY

    store = LocalStore(tmp_path)
    assert load_prices(store) is None  # never read
    store.put_json(
        FAL_PRICES_KEY,
        {
            "fetched_at": 1700000000,
            "source": "https://api.fal.ai/v1/models/pricing",
            "prices": {
                FLASH: {"unit_price": 0.05},
                STANDARD: {"unit_price": "0.1"},  # as a copy of fal's answers spells it
                "a": {"unit_price": "about ten cents"},
                "b": {"unit_price": -1},
                "c": {"unit_price": True},
            },
        },
    )
    prices = load_prices(store)
    assert isinstance(prices, FalPrices) and prices.fetched_at == 1700000000.0
    assert prices.source == "https://api.fal.ai/v1/models/pricing"
    assert prices.unit_price(FLASH) == 0.05
    assert prices.unit_price(STANDARD) == 0.1
    assert [prices.unit_price(e) for e in ("a", "b", "c", "fal-ai/other")] == [None] * 4
    for broken in ([], {"fetched_at": "x", "source": "s", "prices": {}}, {"source": "s"}):
        store.put_json(FAL_PRICES_KEY, broken)
        assert load_prices(store) is None


def test_a_refused_submit_says_what_it_would_have_committed():
    budget = Budget(1.0)
    budget.reserve("a", 1, 0.75, "a")
    with pytest.raises(BudgetExceeded) as err:
        budget.reserve("b", 1, 0.5, "job b")
    assert str(err.value).startswith("job b: submitting would commit $1.25, past the budget")


def test_a_free_endpoints_price_is_zero_not_unknown():
    # billed as 0 dollars, not left blank in the report
    prices = FalPrices(0.0, "s", {"free": {"unit_price": 0}, "also": {"unit_price": "0.0"}})
    assert prices.unit_price("free") == 0.0 and prices.unit_price("also") == 0.0
