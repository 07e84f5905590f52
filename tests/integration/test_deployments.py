"""prefect.yaml on a real Prefect server with two process workers: a sharded sweep, one fleet limit.

Follows the README's deployment section step by step, as a new user would.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import boto3
import httpx
import pandas as pd

from tests.helpers import accepted_per_job, free_port, ledger_statuses, wait_for, write_case

ROOT = Path(__file__).resolve().parents[2]
PREFECT = [sys.executable, "-m", "prefect"]
WANSWEEP = [sys.executable, "-m", "wansweep.cli"]


CREDENTIALS = ("FAL_KEY", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
SAVE_SECRETS = """
import os
from prefect.blocks.system import Secret
for var in ("FAL_KEY", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
    Secret(value=os.environ[var]).save(var.lower().replace("_", "-"), overwrite=True)
"""


def test_sharded_sweep_on_two_workers_within_one_fleet_limit(fal, tmp_path, bucket):
    port = free_port()
    env = {
        **os.environ,
        "PREFECT_HOME": str(tmp_path / "prefect"),
        "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
        "WANSWEEP_HOME": str(ROOT),
        "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_BATCH_SIZE": "500",
        "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_READ_BATCH_SIZE": "100",
        "PREFECT_WORKER_QUERY_SECONDS": "1",
        "PREFECT_LOGGING_LEVEL": "WARNING",
    }
    logs = tmp_path / "logs"
    logs.mkdir()
    procs: list[subprocess.Popen] = []

    def background(name: str, args: list[str], drop: tuple[str, ...] = (), **extra: str) -> None:
        procs.append(
            subprocess.Popen(
                args,
                env={**{k: v for k, v in env.items() if k not in drop}, **extra},
                cwd=ROOT,
                start_new_session=True,
                stdout=(logs / f"{name}.log").open("wb"),
                stderr=subprocess.STDOUT,
            )
        )

    def run(*args: str, cwd: Path = ROOT) -> str:
        proc = subprocess.run(
            list(args), env=env, cwd=cwd, capture_output=True, text=True, timeout=900
        )
        assert proc.returncode == 0, f"{args}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        return proc.stdout

    try:
        # README: start a server, create the pool and the fleet limit, deploy, start workers.
        background(
            "server", [*PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)]
        )

        def healthy() -> bool:
            try:
                return (
                    httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=2).status_code == 200
                )
            except httpx.HTTPError:
                return False

        wait_for(healthy, timeout=120, what="the Prefect server")
        run(*PREFECT, "work-pool", "create", "wansweep", "--type", "process")
        run(*PREFECT, "gcl", "create", "wansweep-flash", "--limit", "2")
        run(sys.executable, "-c", SAVE_SECRETS)  # README: keys as Secret blocks, not on workers
        out = run(*PREFECT, "--no-prompt", "deploy", "--all")
        assert "wansweep-shard/shard" in out and "wansweep-sweep/ab-sweep" in out
        for n in (1, 2):
            background(
                f"worker{n}",
                [
                    *PREFECT,
                    "worker",
                    "start",
                    "--pool",
                    "wansweep",
                    "--name",
                    f"w{n}",
                    "--limit",
                    "1",
                ],
                drop=CREDENTIALS,  # the workers' flow runs read them from the Secret blocks
                WANSWEEP_WORKER_ID=f"w{n}",
            )

        def online() -> set[str]:
            url = f"http://127.0.0.1:{port}/api/work_pools/wansweep/workers/filter"
            workers = httpx.post(url, json={}, timeout=10).json()
            return {w["name"] for w in workers if w.get("status") == "ONLINE"}

        # both polling before the sweep starts, or the first one up may take both shards
        wait_for(lambda: online() == {"w1", "w2"}, timeout=120, what="both workers online")

        # A sweep of 8 jobs on S3, as 2 shards; the fal account allows 2 requests in progress.
        fal.configure(latency="fixed=2", media="tiny", concurrency=10)
        spec = write_case(
            tmp_path,
            rows=4,
            endpoints=["flash"],
            grid={"resolution": ["720p"]},
            seeds=[1, 2],
            store=f"s3://{bucket}/fleet",
            concurrency=8,
            endpoint_concurrency=8,
        )
        run(*WANSWEEP, "run", str(spec), "--shards", "2", "--global-limits", cwd=tmp_path)

        s3 = boto3.client("s3")
        markers = [
            json.loads(
                s3.get_object(Bucket=bucket, Key=f"fleet/sweeps/t/shards/{n}.json")["Body"].read()
            )
            for n in (0, 1)
        ]
        assert {m["worker"] for m in markers} == {"w1", "w2"}  # both workers ran a shard
        assert sum(m["jobs"] for m in markers) == 8
        assert set(accepted_per_job(fal, spec).values()) == {1}  # every job paid once
        keys = [
            o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="fleet/jobs/")["Contents"]
        ]
        assert sum(k.endswith("meta.json") for k in keys) == 8
        report = pd.read_csv(
            __import__("io").BytesIO(
                s3.get_object(Bucket=bucket, Key="fleet/sweeps/t/report/jobs.csv")["Body"].read()
            )
        )
        assert len(report) == 8 and set(report["status"]) == {"succeeded"}
        assert fal.stats()["peak_in_progress"] <= 2  # the fleet stayed within the account's limit

        # Cancelling a flow run in Prefect (UI or `prefect flow-run cancel`) cancels its
        # in-flight fal requests and records them in the ledger.
        fal.reset()
        fal.configure(latency="fixed=600", media="tiny", concurrency=10)
        (tmp_path / "cancel").mkdir()
        spec = write_case(
            tmp_path / "cancel", rows=1, endpoints=["flash"], grid={"resolution": ["720p"]}
        )  # 2 jobs
        out = run(
            *PREFECT,
            "deployment",
            "run",
            "wansweep-sweep/ab-sweep",
            "--param",
            f"spec={spec}",
        )
        flow_run_id = re.search(r"UUID: ([0-9a-f-]{36})", out).group(1)
        store_dir = tmp_path / "cancel" / "archive"
        wait_for(lambda: ledger_statuses(store_dir)["submitted"] == 2, what="2 jobs in flight")
        run(*PREFECT, "flow-run", "cancel", flow_run_id)

        def state() -> str:
            return httpx.get(f"http://127.0.0.1:{port}/api/flow_runs/{flow_run_id}").json()[
                "state_type"
            ]

        wait_for(lambda: state() == "CANCELLED", timeout=120, what="the flow run cancelled")
        assert ledger_statuses(store_dir) == {"cancelled": 2}
        assert fal.stats()["cancels"] == 2
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
