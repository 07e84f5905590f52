"""Killed processes, Ctrl-C, refused inputs and polling manners, against the local fal server."""

from __future__ import annotations

import math
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

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
from wansweep.run.ledger import Ledger
from wansweep.store import open_store
from wansweep.store.layout import archived_keys


def assert_archive_whole(store_dir: Path) -> None:
    """`wansweep verify` reads every video back against its sidecar and the ledger."""
    out = subprocess.run(
        [sys.executable, "-m", "wansweep.cli", "verify", str(store_dir)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert " 0 problem(s)" in out.stdout


def test_sigkill_mid_run_then_rerun_pays_once_and_loses_nothing(fal, prefect_harness, tmp_path):
    fal.configure(latency="fixed=4", media="tiny", concurrency=4)
    # killed between a job's ledger write and its POST, a job cannot know whether it was sent:
    # a short start deadline lets the rerun prove it was not (absent) within its grace
    reconcile = {"grace": 45, "start_timeout": 30, "settle_after": 35}
    spec = write_case(tmp_path, rows=3, seeds=[1, 2], reconcile=reconcile)  # 24 jobs
    store_dir = tmp_path / "archive"
    proc = start_run(spec, tmp_path)
    try:
        wait_for(lambda: ledger_statuses(store_dir)["submitted"] >= 4, what="jobs in flight")
    finally:
        kill_everything(proc)
    in_flight = ledger_statuses(store_dir)
    assert in_flight["submitted"] >= 4 and len(archived_keys(open_store(str(store_dir)))) < 24

    fal.configure(latency="zero")
    result = run_sweep(str(spec))
    entries = Ledger(open_store(str(store_dir))).all()
    assert result["failed"] == 0, (result["outcomes"], [e for e in entries.values() if e.error])
    assert result["outcomes"].get("resumed", 0) >= 4  # picked up at fal, not paid again
    accepted = accepted_per_job(fal, spec)
    assert set(accepted.values()) == {1}, accepted
    store = open_store(str(store_dir))
    keys = archived_keys(store)
    assert len(keys) == 24
    assert_archive_whole(store_dir)


def test_killed_between_upload_and_sidecar_resumes_without_fal(fal, prefect_harness, tmp_path):
    spec = write_case(
        tmp_path, rows=1, endpoints=["flash"], grid={"resolution": ["720p"]}, seeds=[5]
    )
    store_dir = tmp_path / "archive"
    proc = start_run(spec, tmp_path, WANSWEEP_FAULT_EXIT_BEFORE_SIDECAR="1")
    assert proc.wait(300) != 0
    kill_everything(proc)  # its ephemeral Prefect server outlives a run that died this way
    store = open_store(str(store_dir))
    (key,) = [k.split("/")[1] for k in store.list("jobs/") if k.endswith("video.mp4")]
    assert not store.exists(f"jobs/{key}/meta.json")  # no sidecar for a video it did not finish
    before = fal.stats()
    assert before["submits_accepted"] == 1 and before["downloads"] == 1

    result = run_sweep(str(spec))
    after = fal.stats()
    assert result["outcomes"] == {"resumed": 1}
    assert after["submits_accepted"] == 1 and after["downloads"] == 1  # nothing asked of fal again
    assert_archive_whole(store_dir)


@pytest.mark.parametrize("waiting", ["streams", "webhooks"])
def test_ctrl_c_cancels_in_flight_requests_and_records_them(
    fal, prefect_harness, tmp_path, waiting
):
    # stop: cancelled running requests end at once (fal may also let them finish: see
    # test_spend_safety.py for that)
    fal.configure(latency="fixed=60", media="tiny", concurrency=2, cancel_running="stop")
    spec = write_case(tmp_path, rows=1, endpoints=["flash"], seeds=[1, 2])  # 4 jobs
    store_dir = tmp_path / "archive"
    env = {"WANSWEEP_WEBHOOK_URL": "http://127.0.0.1:0/hook"} if waiting == "webhooks" else {}
    proc = start_run(spec, tmp_path, **env)
    wait_for(lambda: ledger_statuses(store_dir)["submitted"] == 4, what="4 jobs in flight")
    if waiting == "streams":
        wait_for(lambda: fal.stats()["streams_open"] == 4, what="every job on its stream")
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole group
    assert proc.wait(120) == 130
    assert "in-flight fal requests were cancelled" in Path(proc.args_log).read_text()
    assert ledger_statuses(store_dir)["cancelled"] == 4
    stats = fal.stats()
    assert stats["cancels"] == 4
    if waiting == "streams":  # every job was watching its stream, and every stream is closed
        wait_for(lambda: fal.stats()["streams_open"] == 0, what="the server to see them closed")

    fal.configure(latency="zero")
    result = run_sweep(str(spec))  # the cancelled jobs are submitted again, once each
    assert result["failed"] == 0 and len(archived_keys(open_store(str(store_dir)))) == 4
    assert set(accepted_per_job(fal, spec).values()) == {2}


def test_refused_input_fails_only_its_job_and_is_not_retried(fal, prefect_harness, tmp_path):
    fal.configure(faults="flagged=0.3", fault_seed=3)
    spec = write_case(
        tmp_path,
        rows=4,
        endpoints=["flash"],
        grid={"resolution": ["720p"]},
        seeds=[1, 2],
        max_attempts=3,
    )
    result = run_sweep(str(spec))
    flagged = fal.stats()["faults"]["flagged"]
    assert 0 < flagged < 8 and result["failed"] == flagged
    report = pd.read_csv(result["report"]["jobs_csv"])
    failed = report[report["status"] == "failed"]
    assert len(failed) == flagged and (report["status"] == "succeeded").sum() == 8 - flagged
    assert failed["error"].str.contains("flagged by the safety checker").all()
    assert set(accepted_per_job(fal, spec).values()) == {1}  # a 422 is never submitted again


def test_status_polls_stay_under_one_per_two_seconds_of_latency(fal, prefect_harness, tmp_path):
    latency = 6.0
    fal.configure(latency=f"fixed={latency}", media="tiny", concurrency=10)
    spec = write_case(
        tmp_path,
        rows=2,
        endpoints=["flash"],
        grid={"resolution": ["720p"]},
        seeds=[1, 2, 3],
        poll={"stream": False, "first": 2.0, "factor": 1.5, "max": 15.0},
    )
    result = run_sweep(str(spec))
    assert result["outcomes"] == {"archived": 6}
    polls = fal.stats()["status_polls_by_request"]
    assert len(polls) == 6
    store = open_store(str(tmp_path / "archive"))
    for key in archived_keys(store):
        meta = store.get_json(f"jobs/{key}/meta.json")
        # at most one poll per 2 s of the job's latency (>= the server's, longer on a busy machine)
        seconds = max(latency, meta["timings"]["wall_seconds"])
        assert polls[meta["request_id"]] <= math.ceil(seconds / 2), (meta["timings"], polls)
        assert Ledger(store).get(key).status == "archived"


def test_a_video_gone_from_fal_is_generated_again_only_when_allowed(fal, prefect_harness, tmp_path):
    spec = write_case(tmp_path, rows=2, endpoints=["flash"], grid={"resolution": ["720p"]})
    assert run_sweep(str(spec))["outcomes"] == {"archived": 4}
    store_dir = tmp_path / "archive"
    shutil.rmtree(store_dir / "jobs")  # our copies lost (the ledger still holds fal's results)
    assert fal.expire_media() >= 4  # and fal's CDN copies expired
    fal.reset()

    result = run_sweep(str(spec))
    assert result["outcomes"] == {"expired": 4} and result["failed"] == 4
    assert fal.stats()["submits_accepted"] == 0  # not allowed: nothing paid
    assert ledger_statuses(store_dir) == {"expired": 4}

    result = run_sweep(str(spec), resubmit_expired=True)
    assert result["outcomes"] == {"archived": 4} and result["failed"] == 0
    assert set(accepted_per_job(fal, spec).values()) == {1}  # once each, as allowed
    assert len(archived_keys(open_store(str(store_dir)))) == 4
