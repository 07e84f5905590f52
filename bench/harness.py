"""The benchmark harness: recording figures, making cases, running the CLI, a Prefect server."""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parents[1]

RESULTS: list[dict] = []


def record(
    name: str,
    value: float,
    unit: str,
    target: str = "",
    baseline: float | None = None,
    note: str = "",
) -> None:
    row = {
        "benchmark": name,
        "value": round(value, 3),
        "unit": unit,
        "target": target,
        "note": note,
    }
    if baseline:
        row["baseline"] = round(baseline, 3)
        row["ratio"] = round(value / baseline, 3)
    RESULTS.append(row)
    extra = f"  baseline {baseline:.3f}  ratio {value / baseline:.3f}" if baseline else ""
    print(f"{name:<44} {value:>10.3f} {unit:<8}{extra}  {target}  {note}".rstrip(), flush=True)


def make_case(
    folder: Path,
    rows: int,
    images: int = 5,
    seeds: int = 1,
    poll: dict | None = None,
    concurrency: int = 100,
    name: str = "bench",
) -> Path:
    from wansweep.localfal.samples import make_image

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(images):
        (folder / f"i{i}.png").write_bytes(make_image(640, 360, seed=i * 9))
    with (folder / "manifest.csv").open("w") as f:
        f.write("id,image,prompt\n")
        for r in range(rows):
            f.write(f"r{r},i{r % images}.png,benchmark prompt {r}\n")
    import yaml

    spec = {
        "name": name,
        "manifest": "manifest.csv",
        "store": str(folder / "archive"),
        "endpoints": ["flash"],
        "grid": {"resolution": ["720p"]},
        "seeds": list(range(seeds)),
        "defaults": {"duration": 5, "enable_prompt_expansion": False},
        "concurrency": concurrency,
        "endpoint_concurrency": concurrency,
        "poll": poll or {"first": 2.0, "factor": 1.5, "max": 15.0},
    }
    (folder / "spec.yaml").write_text(yaml.safe_dump(spec))
    return folder / "spec.yaml"


# `wansweep` under a wrapper that says at exit the peak RSS of its own process: the figure the
# memory targets are about (the run's ephemeral Prefect server is a process of its own)
_MEASURED = """\
import atexit, resource, runpy, sys
def peak():
    print(f"bench-peak-rss-kb {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}", file=sys.stderr)
atexit.register(peak)
runpy.run_module("wansweep.cli", run_name="__main__", alter_sys=True)
"""


class Ran(NamedTuple):
    """A finished `wansweep` command: wall seconds, peak RSS (MB) of the wansweep process
    itself, and its output."""

    wall: float
    rss: int
    output: str


def run_cli(spec: Path, env: dict[str, str]) -> Ran:
    """`wansweep run` as a user runs it. An empty PREFECT_API_URL in ``env`` runs it on
    ephemeral Prefect."""
    return run_wansweep(["run", str(spec)], env, cwd=spec.parent)


def run_wansweep(args: list[str], env: dict[str, str], cwd: Path) -> Ran:
    """The `wansweep` command with ``args``, measured; raises with the output's end when it
    fails."""
    t = time.perf_counter()
    # Prefect's default level, as a user sees the run (the run's summary lines are INFO logs),
    # whatever the caller's environment says (the test suite runs at WARNING)
    env = {**os.environ, "PREFECT_LOGGING_LEVEL": "INFO", "COLUMNS": "200", **env}
    if not env.get("PREFECT_API_URL"):
        env.pop("PREFECT_API_URL", None)
    proc = subprocess.run(
        [sys.executable, "-c", _MEASURED, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        raise RuntimeError(
            f"wansweep {args[0]} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
    output = proc.stdout + proc.stderr
    found = re.search(r"bench-peak-rss-kb (\d+)", output)
    if not found:
        raise RuntimeError(f"wansweep {args[0]} said no peak RSS:\n{output[-3000:]}")
    return Ran(wall, int(found.group(1)) // 1024, output)


async def bare_loop(jobs: list[dict], concurrency: int, poll: dict, out: Path) -> None:
    """What a user could write in 40 lines: fal-client submit / poll / result / download."""
    import fal_client
    import httpx

    client = fal_client.AsyncClient()
    sem = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(timeout=60) as http:

        async def one(i: int, body: dict) -> None:
            async with sem:
                handle = await client.submit("wan/v2.6/image-to-video/flash", arguments=body)
                delay = poll["first"]
                while True:
                    await asyncio.sleep(delay)
                    if isinstance(await handle.status(), fal_client.Completed):
                        break
                    delay = min(poll["max"], delay * poll["factor"])
                result = await client.result("wan/v2.6/image-to-video/flash", handle.request_id)
                async with http.stream("GET", result["video"]["url"]) as r:
                    with (out / f"{i}.mp4").open("wb") as f:
                        async for chunk in r.aiter_bytes():
                            f.write(chunk)

        await asyncio.gather(*(one(i, b) for i, b in enumerate(jobs)))


def populate_archive(spec: Path) -> list:
    """Archive every planned job whole, as a finished sweep leaves it (no fal involved): a
    video (placeholder bytes of the size its sidecar records), then the sidecar."""
    from wansweep.plan.planner import plan
    from wansweep.plan.spec import load_spec
    from wansweep.store import open_store
    from wansweep.store.layout import SIDECAR, VIDEO, job_file

    sweep_spec = load_spec(spec)
    jobs = plan(sweep_spec, sweep_spec.manifest).jobs
    store = open_store(sweep_spec.store)
    video = bytes(1000)
    for i, j in enumerate(jobs):
        store.put_bytes(job_file(j.job_key, VIDEO), video, "video/mp4")
        store.put_json(
            job_file(j.job_key, SIDECAR),
            {
                "job_key": j.job_key,
                "arm": j.arm,
                "seed": j.seed,
                "request_id": f"r{i}",
                "video": {
                    "duration": 5.0,
                    "width": 128,
                    "height": 72,
                    "fps": 4.0,
                    "frames": 20,
                    "size": len(video),
                    "sha256": hashlib.sha256(video).hexdigest(),
                    "codec": "h264",
                    "has_audio": False,
                },
                "timings": {
                    "queue_seconds": 1.0 + i % 7,
                    "inference_seconds": 3.0 + i % 5,
                    "wall_seconds": 4.0 + i % 11,
                },
                "first_frame_similarity": 0.99,
            },
        )
    return jobs


@contextmanager
def prefect_server(home: Path) -> Iterator[str]:
    """A standing Prefect server (SQLite), as deployments use, with the recorder settings
    that keep up with thousands of task runs (shared/reference/prefect-notes.md): this
    process's ``PREFECT_API_URL`` while it runs; stopped however the bench ends (one left
    behind by a failed bench kept eating a core of the next test run)."""
    from wansweep.localfal.samples import free_port

    port = free_port()
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_BATCH_SIZE": "500",
        "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_READ_BATCH_SIZE": "100",
    }
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "prefect",
            "server",
            "start",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    import httpx

    url = f"http://127.0.0.1:{port}/api"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("prefect server did not start")
            time.sleep(0.5)
        os.environ["PREFECT_API_URL"] = url
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(30)
