"""What bounds every submit, end to end against the local server: paying again for a lost
answer happens once, within the budget, and the run ends by itself; a stop signal ends a run
in any state; fal's documented headers go on the wire (its start deadline, fallbacks off); an
arm served by another model says so; two runs whose clocks are ten minutes apart, on one
local folder or one S3 bucket, pay for each job once; billed cost comes from fal's units."""

from __future__ import annotations

import json
import os
import signal
import time

import pandas as pd
import pytest

from tests.helpers import (
    FLASH,
    STANDARD,
    accepted_per_job,
    descendants_alive,
    kill_everything,
    ledger_statuses,
    run_log,
    run_sweep,
    skewed_clock,
    start_run,
    wait_for,
    write_case,
)
from wansweep.plan.spec import load_spec
from wansweep.run.ledger import Ledger
from wansweep.store import open_store


@pytest.mark.parametrize("budget, paid", [(1.0, 2), (0.25, 1)])
def test_paying_again_for_lost_answers_happens_once_within_the_budget(fal, tmp_path, budget, paid):
    """Every answer lost, the listing hours behind: with --resubmit-ambiguous a job is paid
    again once (if the budget has room), and the run ends by itself, the job ambiguous."""
    fal.configure(media="tiny", faults="drop_after_accept=1.0,listing_lag=600")
    spec = write_case(
        tmp_path,
        rows=1,
        endpoints=["flash"],
        grid={"resolution": ["720p"]},
        seeds=[1],
        budget_usd=budget,
        max_attempts=2,
        reconcile={"grace": 1, "start_timeout": 600, "settle_after": 900},
    )
    proc = start_run(spec, tmp_path, "--resubmit-ambiguous")
    assert proc.wait(240) == 1, run_log(proc)[-3000:]  # not archived: exit 1
    kill_everything(proc)
    accepted = accepted_per_job(fal, spec)
    assert list(accepted.values()) == [paid]  # <= max_attempts + 1, and within the budget
    entry = next(iter(Ledger(open_store(str(tmp_path / "archive"))).all().values()))
    assert entry.status == "ambiguous" and entry.attempts == paid
    assert entry.repaid == (("ambiguous",) if paid == 2 else ())

    again = start_run(spec, tmp_path, "--resubmit-ambiguous")  # used: nothing more is paid
    assert again.wait(240) == 1
    kill_everything(again)
    assert list(accepted_per_job(fal, spec).values()) == [paid]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
@pytest.mark.parametrize("state", ["waiting on fal", "settling a lost answer"])
def test_a_stop_signal_ends_a_run_in_any_state(fal, tmp_path, sig, state):
    """To the run's process alone (as a supervisor sends it), not its process group."""
    if state == "waiting on fal":  # cancelled requests stop (else they would bill in 10 min)
        fal.configure(media="tiny", latency="fixed=600", cancel_running="stop")
        reconcile = {"grace": 5}
    else:
        fal.configure(media="tiny", faults="drop_after_accept=1.0,listing_lag=600")
        reconcile = {"grace": 600, "start_timeout": 600, "settle_after": 900}
    spec = write_case(tmp_path, rows=1, endpoints=["flash"], seeds=[1], reconcile=reconcile)
    proc = start_run(spec, tmp_path)
    store = tmp_path / "archive"
    wait_for(lambda: fal.stats()["submits_accepted"] >= 2, what="submits")
    wait_for(lambda: ledger_statuses(store)["submitting" if "lost" in state else "submitted"] >= 1)
    os.kill(proc.pid, sig)
    code = proc.wait(90)  # a bound on a hang, not a measurement
    assert code == {signal.SIGTERM: 143, signal.SIGINT: 130}[sig], run_log(proc)[-3000:]
    wait_for(lambda: not descendants_alive(proc), timeout=30, what="its children to stop")
    statuses = ledger_statuses(store)
    if state == "waiting on fal":
        assert statuses["cancelled"] >= 1 and statuses["submitted"] == 0
    assert sum(statuses.values()) == fal.stats()["submits_accepted"]  # each one recorded


def test_fals_documented_headers_go_with_every_submit_and_fallbacks_stay_off(
    fal, prefect_harness, tmp_path
):
    fal.configure(media="tiny", faults="fallback=1.0")  # fal would reroute every request
    spec = write_case(tmp_path, rows=1, seeds=[1], reconcile={"start_timeout": 1800})
    started = time.time()
    result = run_sweep(str(spec))
    assert result["outcomes"] == {"archived": 4}
    mine = [r for r in fal.requests().values() if r["sent_at"] >= started]
    assert len(mine) == 4
    for request in mine:
        sent = request["headers"]
        assert sent["x-fal-request-timeout"] == "1800"
        assert "x-fal-request-start-timeout" not in sent
        assert sent["x-app-fal-disable-fallback"] == sent["x-fal-disable-fallbacks"] == "true"
        assert request["served_by"] is None
    report = pd.read_csv(result["report"]["jobs_csv"])
    assert (report["served_by"] == report["endpoint"]).all()


def test_an_arm_served_by_another_model_says_so(fal, prefect_harness, tmp_path):
    fal.configure(media="tiny", faults="fallback=1.0")
    spec = write_case(tmp_path, rows=1, seeds=[1], allow_fallbacks=True)
    started = time.time()
    result = run_sweep(str(spec))
    report = pd.read_csv(result["report"]["jobs_csv"])
    assert len(report) == 4 and (report["served_by"] != report["endpoint"]).all()
    for _, row in report.iterrows():
        meta = json.loads(
            (tmp_path / "archive" / "jobs" / row["job_key"] / "meta.json").read_text()
        )
        assert meta["served_by"] == row["served_by"] != meta["endpoint"]
    mine = [r for r in fal.requests().values() if r["sent_at"] >= started]
    assert len(mine) == 4 and all("x-app-fal-disable-fallback" not in r["headers"] for r in mine)


@pytest.mark.parametrize("backend", ["local", "s3"])
def test_two_runs_with_clocks_ten_minutes_apart_pay_each_job_once(fal, tmp_path, backend, request):
    """One sweep, two processes at once on one archive (a folder shared between hosts, or a
    bucket), the second's clock 600 s fast: a lease's age is read on the store's clock, and a
    holder renews its lease on the store right before it pays."""
    store = str(tmp_path / "archive")
    if backend == "s3":
        store = f"s3://{request.getfixturevalue('bucket')}/sweeps"
    fal.configure(media="tiny", latency="fixed=6")
    spec = write_case(tmp_path, rows=1, endpoint_concurrency=2, store=store)  # 8 jobs
    honest = start_run(spec, tmp_path)
    fast = start_run(spec, tmp_path, **skewed_clock(600))
    for proc in (honest, fast):
        assert proc.wait(300) == 0, run_log(proc)[-3000:]
        kill_everything(proc)
    accepted = accepted_per_job(fal, spec)
    assert len(accepted) == 8 and set(accepted.values()) == {1}, accepted


def test_billed_cost_comes_from_fals_units_not_the_price_table(fal, prefect_harness, tmp_path):
    """fal's prices moved 20% above the endpoint profiles': the estimate does not see it, the
    report (units x fal's unit price, a 1080p arm's units 1.5x a 720p one's) and `wansweep
    spend` agree with fal's usage API."""
    from wansweep.fal import FalConfig, FalQueue
    from wansweep.results.spend import compare_spend

    # fal's usage is account-wide: nothing else may end while this sweep's window is open
    wait_for(lambda: fal.stats()["in_progress"] + fal.stats()["queued"] == 0, what="idle")
    fal.configure(media="tiny", price_factor=1.2)
    spec = write_case(tmp_path, rows=1, seeds=[1])  # standard and flash, 720p and 1080p
    result = run_sweep(str(spec))
    report = pd.read_csv(result["report"]["jobs_csv"])
    assert set(report["cost_source"]) == {"fal"}
    assert report["cost_usd"].to_numpy() == pytest.approx(1.2 * report["estimated_usd"].to_numpy())
    units = report.set_index("resolution")["billable_units"].astype(float)
    assert set(units["1080p"]) == {7.5} and set(units["720p"]) == {5.0}
    queue = FalQueue(FalConfig.from_env())
    try:
        check = compare_spend(open_store(load_spec(spec).store), "t", queue).table
    finally:
        queue.close()
    for _, row in check.iterrows():
        assert row["fal_usd"] == pytest.approx(row["cost_usd"]), row
    assert set(check["endpoint"]) == {STANDARD, FLASH}
