"""When the whole run cannot work, it stops at the first sign, says why and what to fix in one
line, exits 3, and leaves every job for the next run: a key fal refuses (before the first
submit, or at it), no route to fal's queue or to fal at all, an archive that refuses writes.
Fixed, the same command archives everything, each job paid once."""

from __future__ import annotations

import pytest

from tests.helpers import (
    accepted_per_job,
    free_port,
    kill_everything,
    ledger_statuses,
    run_log,
    start_run,
    write_case,
)
from wansweep.localfal.runner import start_local_fal


def ended(proc, code: int = 3) -> str:
    assert proc.wait(180) == code, run_log(proc)[-3000:]  # a bound on a hang, not a measure
    kill_everything(proc)
    log = run_log(proc)
    assert "Traceback" not in log, log[-3000:]
    return log


def case(tmp_path, **spec):
    return write_case(tmp_path, rows=1, seeds=[1, 2], **spec)  # 2 endpoints x 2 x 2 = 8 jobs


def test_a_key_fal_refuses_stops_the_run_before_any_submit(tmp_path):
    with start_local_fal(key="the-right:key", workdir=tmp_path / "fal") as fal:
        spec = case(tmp_path)
        wrong = start_run(spec, tmp_path, **{**fal.env, "FAL_KEY": "a-wrong:key"})
        log = ended(wrong)
        assert "fal refused the key" in log and "check FAL_KEY" in log
        stats = fal.stats()
        assert stats["submits_accepted"] == stats["submits_rejected"] == 0
        assert not (tmp_path / "archive" / "ledger").exists()  # no job touched
        right = start_run(spec, tmp_path, **fal.env)
        ended(right, 0)
        assert set(accepted_per_job(fal, spec).values()) == {1}


def test_a_key_refused_at_submit_stops_the_run_at_one_submit_per_endpoint(fal, tmp_path):
    fal.configure(media="tiny", faults="submit_401=1.0")  # the pricing API still answers
    spec = case(tmp_path, concurrency=8)
    log = ended(start_run(spec, tmp_path))
    assert "stopped submitting" in log and "401" in log
    assert 1 <= fal.stats()["submits_rejected"] <= 2  # one per endpoint at most
    statuses = ledger_statuses(tmp_path / "archive")
    assert set(statuses) <= {"retrying"}  # not failed: nothing was spent, no attempt used
    fal.configure(faults="")
    ended(start_run(spec, tmp_path), 0)  # no flag needed: the jobs were left to run
    assert set(accepted_per_job(fal, spec).values()) == {1}


@pytest.mark.parametrize("unreachable", ["queue host", "every host"])
def test_no_route_to_fal_stops_the_run_before_any_submit(fal, tmp_path, unreachable):
    closed = f"127.0.0.1:{free_port()}"  # nothing listens there
    env = {"FAL_QUEUE_RUN_HOST": closed}
    if unreachable == "every host":  # a name that resolves nowhere (DNS fails)
        env = {
            "FAL_RUN_HOST": "fal.invalid",
            "FAL_QUEUE_RUN_HOST": "queue.fal.invalid",
            "WANSWEEP_FAL_API_URL": "https://api.fal.invalid/v1",
        }
    spec = case(tmp_path)
    log = ended(start_run(spec, tmp_path, **env))
    assert "cannot reach fal" in log and "FAL_QUEUE_RUN_HOST" in log
    assert fal.stats()["submits_accepted"] == 0


def test_an_archive_that_refuses_writes_stops_the_run_before_it_is_read(fal, tmp_path, s3_server):
    spec = case(tmp_path, store="s3://no-such-bucket/sweeps")
    log = ended(start_run(spec, tmp_path))
    assert "refused a test write" in log and "bucket" in log
    assert fal.stats()["submits_accepted"] == 0


def test_plan_check_runs_the_same_checks_without_submitting(fal, tmp_path):
    import subprocess
    import sys

    spec = case(tmp_path)
    plan = [sys.executable, "-m", "wansweep.cli", "plan", str(spec), "--check"]
    good = subprocess.run(plan, capture_output=True, text=True, timeout=180, cwd=tmp_path)
    assert good.returncode == 0 and "fal answers this key" in good.stdout, good.stdout
    bad = subprocess.run(
        plan,
        capture_output=True,
        text=True,
        timeout=180,
        cwd=tmp_path,
        env={**__import__("os").environ, "FAL_QUEUE_RUN_HOST": f"127.0.0.1:{free_port()}"},
    )
    assert bad.returncode == 3 and "cannot reach fal" in bad.stdout + bad.stderr
    assert fal.stats()["submits_accepted"] == 0


# The archive fills up mid-run: a real full file system (a tmpfs in a mount namespace of its own,
# a filler leaving too little room for a video). Then the archive is moved to a roomier disk
# (copied out of the namespace, whose mount goes with it) and the same command is run on it.
FULL_DISK = r"""
set -e
mount -t tmpfs -o size=8m tmpfs "$ARCHIVE"
"$PY" -c 'import os, sys; s = os.statvfs(sys.argv[1]); open(sys.argv[1] + "/filler", "wb").write(bytes(s.f_bavail * s.f_frsize - 96 * 1024))' "$ARCHIVE"
set +e
"$PY" -m wansweep.cli run "$SPEC" > "$LOGS/full.log" 2>&1
echo $? > "$LOGS/full.rc"
rm "$ARCHIVE/filler"
cp -a "$ARCHIVE/." "$LOGS/moved"
"""


def test_an_archive_that_fills_up_stops_submitting_and_the_rerun_pays_each_job_once(fal, tmp_path):
    import os
    import subprocess
    import sys

    spec = write_case(tmp_path, rows=2, concurrency=2)  # 16 jobs, 2 at a time
    (tmp_path / "archive").mkdir()
    env = {
        **os.environ,
        "PREFECT_SERVER_ALLOW_EPHEMERAL_MODE": "true",
        "ARCHIVE": str(tmp_path / "archive"),
        "PY": sys.executable,
        "SPEC": str(spec),
        "LOGS": str(tmp_path),
    }
    # -r: no privilege needed; -m: the mount is this test's alone and goes with it
    done = subprocess.run(["unshare", "-rm", "sh", "-c", FULL_DISK], env=env, cwd=tmp_path)
    assert done.returncode == 0
    full = (tmp_path / "full.log").read_text()
    assert (tmp_path / "full.rc").read_text().strip() == "3", full[-3000:]
    assert "Traceback" not in full, full[-3000:]
    assert f"stopped submitting: the archive {tmp_path / 'archive'} is full" in full
    assert "unarchived: fix the archive, then run the same command again" in full
    first = sum(accepted_per_job(fal, spec).values())
    assert 1 <= first <= 2  # the jobs in flight when it filled up; none sent after
    ended(start_run(spec, tmp_path, "--store", str(tmp_path / "moved"), "--concurrency", "8"), 0)
    assert set(accepted_per_job(fal, spec).values()) == {1}  # the first ones fetched, not paid
