"""The money rules against the local server as fal documents it (pessimistic): lost answers
with a lagging, payload-less listing; two runs at once; a skewed clock; repeated Ctrl-C; a
SIGKILL while holding leases; and billed spend against fal's usage API."""

from __future__ import annotations

import os
import signal
from collections import Counter
from pathlib import Path

import httpx
import pandas as pd
import pytest

from tests.helpers import (
    accepted_per_job,
    kill_everything,
    ledger_statuses,
    run_sweep,
    start_run,
    wait_for,
    write_case,
)
from wansweep.plan.spec import load_spec
from wansweep.run.ledger import Ledger
from wansweep.store import open_store
from wansweep.store.layout import archived_keys


def listed(fal) -> int:
    """Requests the server's listing shows now (both endpoints, all pages)."""
    n = 0
    for endpoint in ("wan/v2.6/image-to-video", "wan/v2.6/image-to-video/flash"):
        cursor = None
        while True:
            params = {"endpoint_id": endpoint, "limit": 100, "start": "1970-01-01T00:00:00Z"}
            if cursor:
                params["cursor"] = cursor
            page = httpx.get(
                f"{fal.url}/v1/models/requests/by-endpoint",
                params=params,
                headers={"Authorization": f"Key {fal.env['FAL_KEY']}"},
            ).json()
            n += len(page["items"])
            cursor = page["next_cursor"]
            if not page["has_more"]:
                break
    return n


def test_lost_answers_and_a_lagging_listing_never_pay_twice(fal, prefect_harness, tmp_path):
    fal.configure(
        media="tiny",
        fault_seed=5,
        faults="drop_after_accept=0.2,submit_5xx_after_accept=0.05,listing_lag=4",
    )
    listed_before = listed(fal)
    spec = write_case(
        tmp_path,
        rows=10,
        seeds={"range": [0, 5]},  # 10 x 4 arms x 5 seeds = 200 jobs
        reconcile={"grace": 1, "settle_after": 600, "start_timeout": 60},
    )
    first = run_sweep(str(spec))
    assert first["outcomes"].get("ambiguous", 0) >= 10  # the listing lags: cannot settle yet
    assert set(first["outcomes"]) <= {"archived", "ambiguous"}
    accepted = accepted_per_job(fal, spec)
    assert len(accepted) == 200 and set(accepted.values()) == {1}, Counter(accepted.values())
    report = pd.read_csv(first["report"]["jobs_csv"])
    ambiguous = report[report["status"] == "ambiguous"]
    assert len(ambiguous) == first["outcomes"]["ambiguous"]
    assert set(ambiguous["billing"]) == {"unknown"}  # counted in the upper bound only
    assert report["upper_usd"].sum() == pytest.approx(report["estimated_usd"].sum())

    total = fal.stats()["submits_accepted"]
    wait_for(lambda: listed(fal) - listed_before >= total, timeout=120, what="the listing")
    second = run_sweep(str(spec))  # settles every ambiguous job through fal's records
    assert second["outcomes"] == {"resumed": first["outcomes"]["ambiguous"]}  # no new submit
    assert set(accepted_per_job(fal, spec).values()) == {1}
    ledger = Ledger(open_store(load_spec(spec).store)).all()
    assert sum(e.reconciled for e in ledger.values()) >= first["outcomes"]["ambiguous"]


def test_the_reconcile_command_settles_lost_answers_through_fals_records(
    fal, prefect_harness, tmp_path
):
    """Every submit's answer is lost and fal's listing lags: the run leaves the jobs
    ambiguous. `wansweep reconcile` then finds each in fal's records, pays nothing, and the
    next run archives them without a submit."""
    import subprocess
    import sys

    fal.configure(media="tiny", faults="drop_after_accept=1.0,listing_lag=3")
    listed_before = listed(fal)
    spec = write_case(
        tmp_path,
        rows=1,
        endpoints=["flash"],
        grid={"resolution": ["720p"]},
        reconcile={"grace": 1, "settle_after": 600, "start_timeout": 60},
    )
    first = run_sweep(str(spec))
    assert first["outcomes"] == {"ambiguous": 2}
    wait_for(lambda: listed(fal) - listed_before >= 2, timeout=120, what="the listing")
    done = subprocess.run(
        [sys.executable, "-m", "wansweep.cli", "reconcile", str(tmp_path / "archive")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert (
        "found at fal (a run archives them without paying): 2; never accepted (a run submits "
        "them again): 0; still ambiguous: 0" in " ".join(done.stdout.split())
    )
    statuses = {e.status for e in Ledger(open_store(str(tmp_path / "archive"))).all().values()}
    assert statuses == {"submitted"}  # settled: each names its request at fal
    fal.configure(faults="")
    second = run_sweep(str(spec))
    assert second["outcomes"] == {"resumed": 2}
    assert set(accepted_per_job(fal, spec).values()) == {1}


def test_without_stored_payloads_webhooks_name_the_lost_requests(
    fal, prefect_harness, tmp_path, webhook_env
):
    fal.configure(
        media="tiny",
        fault_seed=9,
        faults="drop_after_accept=0.3,listing_lag=3600,listing_payloads=1.0",
    )
    spec = write_case(tmp_path, rows=5, seeds=[1, 2], reconcile={"grace": 30})  # 40 jobs
    result = run_sweep(str(spec))
    assert result["outcomes"] == {"archived": 40}
    assert fal.stats()["faults"]["drop_after_accept"] >= 5
    assert set(accepted_per_job(fal, spec).values()) == {1}


def test_a_fast_client_clock_with_every_answer_lost_settles_by_fals_time(
    fal, prefect_harness, tmp_path
):
    fal.configure(media="tiny", clock_offset=-300, faults="drop_after_accept=1.0")
    spec = write_case(tmp_path, rows=2, endpoints=["flash"], seeds=[1], budget_usd=1.25)
    result = run_sweep(str(spec))
    assert result["outcomes"] == {"archived": 4}
    assert set(accepted_per_job(fal, spec).values()) == {1}


@pytest.mark.parametrize("where", ["local", "s3"])
def test_two_runs_at_once_pay_each_job_once(fal, tmp_path, where, request):
    fal.configure(latency="fixed=1", media="tiny", concurrency=10)
    store = str(tmp_path / "archive")
    if where == "s3":
        bucket = request.getfixturevalue("bucket")
        store = f"s3://{bucket}/archive"
    a = write_case(tmp_path, rows=4, tag="both", budget_usd=15.0, store=store, concurrency=4)
    other = tmp_path / "other"
    other.mkdir()
    b = write_case(  # another sweep of the same 32 jobs
        other, rows=4, tag="both", name="t-other", budget_usd=15.0, store=store, concurrency=4
    )
    runs = [start_run(a, tmp_path), start_run(a, tmp_path), start_run(b, other)]
    try:
        codes = [p.wait(600) for p in runs]
    finally:
        for p in runs:
            kill_everything(p)
    logs = [Path(p.args_log).read_text() for p in runs]
    assert codes == [0, 0, 0], logs
    accepted = accepted_per_job(fal, a)
    assert len(accepted) == 32 and set(accepted.values()) == {1}, Counter(accepted.values())
    assert fal.stats()["submits_accepted"] == 32  # the second sweep's jobs are the same jobs
    assert len(archived_keys(open_store(store))) == 32
    for spec in (a, b):
        cfg = load_spec(spec)
        report = pd.read_csv(_report_csv(open_store(store), cfg.name))
        assert len(report) == 32 and set(report["status"]) == {"succeeded"}


def _report_csv(store, name: str):
    import io

    return io.BytesIO(store.get_bytes(f"sweeps/{name}/report/jobs.csv"))


def test_two_ctrl_c_then_a_rerun_archive_every_job(fal, prefect_harness, tmp_path):
    fal.configure(latency="fixed=8", media="tiny", concurrency=2)  # cancelled runners finish
    spec = write_case(tmp_path, rows=2, endpoints=["flash"], seeds=[1, 2], max_attempts=1)
    store_dir = tmp_path / "archive"
    for _ in range(2):
        proc = start_run(spec, tmp_path)
        wait_for(lambda: ledger_statuses(store_dir)["submitted"] >= 2, what="jobs in flight")
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(120) == 130
        kill_everything(proc)
    assert ledger_statuses(store_dir)["cancelled"] >= 2
    fal.configure(latency="zero")
    result = run_sweep(str(spec))  # max_attempts=1: a cancel must not have used it up
    assert result["failed"] == 0 and len(archived_keys(open_store(str(store_dir)))) == 8


def test_sigkill_while_holding_leases_then_rerun_takes_them_over(fal, prefect_harness, tmp_path):
    fal.configure(latency="fixed=3", media="tiny", concurrency=4)
    spec = write_case(tmp_path, rows=2, seeds=[1])  # 8 jobs; leases expire after 5 s
    store_dir = tmp_path / "archive"
    proc = start_run(spec, tmp_path)
    try:
        wait_for(lambda: ledger_statuses(store_dir)["submitted"] >= 2, what="jobs in flight")
    finally:
        kill_everything(proc)
    assert list((store_dir / "leases").glob("*.json"))  # left behind by the dead run
    fal.configure(latency="zero")
    result = run_sweep(str(spec))
    assert result["failed"] == 0 and len(archived_keys(open_store(str(store_dir)))) == 8
    assert set(accepted_per_job(fal, spec).values()) == {1}
    assert not list((store_dir / "leases").glob("*.json"))


def test_report_and_fals_usage_agree_on_what_was_billed(fal, prefect_harness, tmp_path):
    from wansweep.fal import FalConfig, FalQueue
    from wansweep.results.spend import compare_spend

    wait_for(lambda: fal.stats()["in_progress"] + fal.stats()["queued"] == 0, what="idle")
    fal.configure(latency="fixed=6", media="tiny", concurrency=2)  # 2 run, 6 queue
    spec = write_case(tmp_path, rows=2, endpoints=["flash"], seeds=[1, 2], max_attempts=1)
    store_dir = tmp_path / "archive"
    proc = start_run(spec, tmp_path)
    wait_for(lambda: fal.stats()["in_progress"] == 2, what="two requests running")
    os.killpg(proc.pid, signal.SIGINT)  # cancelled: 2 running (fal finishes them), 6 queued
    assert proc.wait(120) == 130
    kill_everything(proc)
    wait_for(lambda: fal.stats()["in_progress"] == 0, what="the cancelled runners to finish")
    store = open_store(str(store_dir))
    queue = FalQueue(FalConfig.from_env())
    from wansweep.results.report import write_report

    write_report(store, "t")
    check = compare_spend(store, "t", queue).table.iloc[0]
    assert check["cost_usd"] == 0 and check["likely_usd"] > 0  # nothing archived yet
    assert check["fal_usd"] == pytest.approx(check["likely_usd"])  # 2 cancelled-running

    fal.configure(latency="zero", faults="failed=0.3,flagged=0.3", fault_seed=4)
    result = run_sweep(str(spec))  # resumes 2, submits 6 again: some fail (5xx), some 422
    report = pd.read_csv(result["report"]["jobs_csv"])
    assert {"succeeded", "failed"} <= set(report["status"])
    assert (report["error_kind"] == "invalid").any() and (report["error_kind"] == "failed").any()
    check = compare_spend(store, "t", queue).table.iloc[0]
    assert check["fal_usd"] == pytest.approx(check["likely_usd"])
    assert check["cost_usd"] <= check["likely_usd"] <= check["upper_usd"]
    queue.close()
