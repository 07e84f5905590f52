"""wansweep benchmarks, side by side in one run against the local fal-compatible server.

    python bench/run.py            # full sizes (make bench, ~10-15 min on 2 cores)
    python bench/run.py --smoke    # tiny sizes: checks the harness itself (run by make test)

Prints one line per figure and a ratio where there is a baseline. The server runs in its
cheap-media mode (64 px clips) so it is not the bottleneck; the results say so.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cold import bench_cold  # noqa: E402
from export import bench_export  # noqa: E402
from harness import (  # noqa: E402
    RESULTS,
    bare_loop,
    make_case,
    populate_archive,
    prefect_server,
    record,
    run_cli,
)
from latency import bench_latency  # noqa: E402
from quality import bench_quality  # noqa: E402
from scale import bench_plan_memory, bench_plan_scale  # noqa: E402

from wansweep.localfal.runner import start_local_fal  # noqa: E402


def bench_overhead(work: Path, fal, n: int, latency: float, concurrency: int) -> None:
    from wansweep.plan.planner import plan
    from wansweep.plan.spec import load_spec
    from wansweep.run.steps import request_body

    # polled on the bare loop's own schedule: this line measures our overhead, not how we wait
    poll = {"stream": False, "first": 2.0, "factor": 1.5, "max": 15.0}
    fal.configure(
        latency=f"fixed={latency}", media="tiny", concurrency=max(concurrency, 10), faults=""
    )
    spec = make_case(work / "overhead", rows=n, poll=poll, concurrency=concurrency)
    sweep_spec = load_spec(spec)
    bodies = [request_body(j) for j in plan(sweep_spec, sweep_spec.manifest).jobs]
    out = work / "bare"
    out.mkdir(exist_ok=True)
    fal.reset()
    t = time.perf_counter()
    asyncio.run(bare_loop(bodies, concurrency, poll, out))
    bare = time.perf_counter() - t
    bare_polls = fal.stats()["status_polls"] / n

    fal.reset()
    wall, rss, _ = run_cli(spec, fal.env)
    stats = fal.stats()
    record(
        f"1. overhead: wansweep run, {n} jobs @ {latency:g}s, c={concurrency}",
        wall,
        "s",
        "ratio <= 1.2",
        baseline=bare,
        note="baseline: bare asyncio fal-client loop",
    )
    per_job = stats["status_polls"] / n
    record(
        "3. status polls per job (wansweep)",
        per_job,
        "polls",
        f"<= {max(1, math.ceil(latency / 2))} (1 per 2 s)",
        note=f"bare loop, same schedule: {bare_polls:.2f} (fal-client's result() polls once more)",
    )
    record(f"4. peak RSS, wansweep run of {n} jobs", rss, "MB", "<= 1024")

    hooked = make_case(work / "webhooks", rows=n, poll=poll, concurrency=concurrency)
    fal.reset()
    hooked_wall, _, _ = run_cli(
        hooked, {**fal.env, "WANSWEEP_WEBHOOK_URL": "http://127.0.0.1:0/fal"}
    )
    record(
        "3b. status polls per job, fal webhooks on",
        fal.stats()["status_polls"] / n,
        "polls",
        "1 (the check after the webhook)",
        note=f"wall {hooked_wall:.1f} s, {hooked_wall / bare:.3f} x the bare loop",
    )

    fal.reset()
    warm, _, _ = run_cli(spec, fal.env)
    s = fal.stats()
    record(
        f"2. warm rerun, {n} jobs all archived",
        warm,
        "s",
        "0 requests to fal",
        note=f"requests to fal: {s['submits_accepted'] + s['status_polls'] + s['result_fetches']}",
    )


def bench_default_subscribe(fal, latency: float, n: int) -> None:
    """fal-client's default subscribe polls every 0.1 s: the request economy baseline."""
    import fal_client

    from wansweep.localfal.samples import data_uri, make_image

    fal.configure(latency=f"fixed={latency}", media="tiny", concurrency=max(n, 10))
    fal.reset()
    body = {"prompt": "economy", "image_url": data_uri(make_image()), "resolution": "720p"}

    async def go():
        client = fal_client.AsyncClient()
        await asyncio.gather(
            *(
                client.subscribe("wan/v2.6/image-to-video/flash", arguments={**body, "seed": i})
                for i in range(n)
            )
        )

    asyncio.run(go())
    record(
        f"3. status polls per job (fal-client subscribe default), {latency:g}s",
        fal.stats()["status_polls"] / n,
        "polls",
        note="fal-client polls every 0.1 s",
    )


def bench_warm(work: Path, fal, n: int, full: bool = True) -> None:
    """A rerun of n archived jobs, as a user runs it (ephemeral Prefect, started in the run):
    once when the report must be built from every sidecar, then as every rerun after it.
    Not ``full`` (the smoke): on the standing server, without the task-cache baseline."""
    spec = make_case(work / "warm", rows=n, concurrency=100, name="warm")
    # a dataset's images are not seconds old: a local file written within 2 s of its check is
    # checked again next time (the media index's racy-file rule), which is not this line's case
    for image in spec.parent.glob("i*.png"):
        os.utime(image, (time.time() - 60, time.time() - 60))
    populate_archive(spec)
    # ephemeral, as `wansweep run` on a laptop
    env = {**fal.env, "PREFECT_API_URL": ""} if full else fal.env
    fal.reset()
    first, first_rss, _ = run_cli(spec, env)
    warm, rss, out = run_cli(spec, env)
    s = fal.stats()
    requests = (
        s["submits_accepted"] + s["submits_rejected"] + s["status_polls"] + s["result_fetches"]
    )
    downloads = re.search(r"inputs: (\d+) downloaded", out)
    record(
        f"2. warm rerun, {n} jobs all archived",
        warm,
        "s",
        "<= 30 s, 0 image reads, 0 requests",
        note=f"{'ephemeral Prefect start included; ' if full else ''}"
        f"requests to fal: {requests}; image reads: "
        f"{downloads.group(1) if downloads else '?'}; the run before it, which built the "
        f"report from {n} sidecars: {first:.1f} s, peak RSS {first_rss} MB",
    )

    from wansweep.results.report import write_report
    from wansweep.store import open_store

    t = time.perf_counter()
    write_report(open_store(str(work / "warm" / "archive")), "warm")
    record(f"5. report from {n} sidecars", time.perf_counter() - t, "s", "<= 10 s per 10,000")
    if not full:
        return
    naive = naive_cached_flow(min(n, 10_000))
    record(
        "2. baseline: a flow on Prefect's task cache, 10,000 cached tasks",
        naive,
        "s",
        note="what relying on Prefect's cache alone costs (not a target)",
    )


def naive_cached_flow(n: int) -> float:
    """A flow relying on Prefect's task cache alone: wall time of a warm (all cached) run,
    timed as a whole process like `wansweep run`."""
    code = """
import sys
from prefect import flow, task
from prefect.task_runners import ThreadPoolTaskRunner

@task(cache_key_fn=lambda ctx, p: "naive-" + str(p["key"]), persist_result=True)
def job(key: int) -> int:
    return key

@flow(task_runner=ThreadPoolTaskRunner(max_workers=16))
def naive(n: int):
    return [f.result() for f in job.map(list(range(n)))]

naive(int(sys.argv[1]))
"""
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "PREFECT_LOCAL_STORAGE_PATH": tmp, "PREFECT_LOGGING_LEVEL": "ERROR"}
        for _ in range(2):  # the first run fills the cache; the second is the warm rerun
            t = time.perf_counter()
            out = subprocess.run(
                [sys.executable, "-c", code, str(n)], env=env, capture_output=True, text=True
            )
            wall = time.perf_counter() - t
            if out.returncode != 0:
                raise RuntimeError(out.stderr[-2000:])
    return wall


def bench_plan(work: Path, rows: int) -> None:
    from wansweep.plan.planner import plan
    from wansweep.plan.spec import load_spec

    spec = make_case(work / "plan", rows=rows)
    t = time.perf_counter()
    sweep_spec = load_spec(spec)
    p = plan(sweep_spec, sweep_spec.manifest)
    record(
        f"5. plan {rows} rows (5 distinct images)",
        time.perf_counter() - t,
        "s",
        "<= 10 s",
        note=f"{len(p.jobs)} jobs",
    )


def bench_archive_memory(work: Path, fal, mb: int) -> None:
    """Stream a large video from the fal server into a store; peak RSS must not grow with it."""
    media = fal.workdir / "media"
    big = media / "big.mp4"
    with big.open("wb") as f:
        block = os.urandom(1 << 20)
        for _ in range(mb):
            f.write(block)
    code = f"""
import resource, sys
from pathlib import Path
sys.path.insert(0, {str(ROOT)!r})
from wansweep.fal import FalConfig, FalQueue
from wansweep.store import open_store
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
q = FalQueue(FalConfig.from_env())
dest = Path({str(work)!r}) / "big-download.mp4"
size, sha = q.download({fal.url!r} + "/_local/media/big.mp4", dest)
open_store({str(work / "bigstore")!r}).put_file("jobs/x/video.mp4", dest)
print(size, (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) // 1024)
"""
    out = subprocess.run(
        [sys.executable, "-c", code], env={**os.environ, **fal.env}, capture_output=True, text=True
    )
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    size, growth = out.stdout.split()
    big.unlink()
    record(
        f"5. archive a {mb} MB video: RSS growth",
        float(growth),
        "MB",
        "flat (<< video size)",
        note=f"{int(size) // 2**20} MB streamed to a file, then into the store",
    )


def bench_ephemeral_startup() -> None:
    code = "import time; t=time.perf_counter()\nfrom prefect import flow\n@flow\ndef f(): pass\nf(); print(time.perf_counter()-t)"
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    record(
        "0. Prefect ephemeral mode: an empty flow",
        float(out.stdout.split()[-1]),
        "s",
        note="paid once per `wansweep run` without PREFECT_API_URL; not in the figures below",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: check the harness only")
    parser.add_argument("--json", type=Path, help="also write the results here as JSON")
    parser.add_argument(
        "--cold",
        type=int,
        default=0,
        metavar="N",
        help="size of the cold-run section (default 10,000; 100,000 for memory at scale)",
    )
    parser.add_argument(
        "--plan-images",
        type=int,
        default=100_000,
        metavar="N",
        help="distinct images of the plan-memory section (opt-in: --only plan-memory)",
    )
    parser.add_argument(
        "--s3",
        choices=["seaweedfs", "moto"],
        default="seaweedfs",
        help="the local S3 server of the plan-scale section (default: SeaweedFS)",
    )
    parser.add_argument(
        "--only",
        choices=[
            "latency",
            "plan-scale",
            "plan-memory",
            "overhead",
            "export",
            "quality",
            "warm",
            "cold-run",
        ],
        help="only this section (its full sizes unless --smoke)",
    )
    args = parser.parse_args()
    sizes = dict(n=1000, latency=5.0, concurrency=100, warm=100_000, plan=100_000, mb=200, econ=20)
    waits = dict(n=200, seconds=6.0, concurrency=20, big=1000)  # 6 s: off the poll schedule
    images = 10_000  # distinct images planned from S3 and from HTTP
    exports = dict(n=300, mb=2.0)
    if args.smoke:
        sizes = dict(n=6, latency=1.0, concurrency=3, warm=30, plan=500, mb=8, econ=2)
        waits = dict(n=4, seconds=1.0, concurrency=2, big=6)
        images = 30
        exports = dict(n=6, mb=0.2)
    print(
        f"wansweep benchmarks ({'smoke' if args.smoke else 'full'}); local fal server in tiny-media mode"
    )
    with tempfile.TemporaryDirectory(prefix="wansweep-bench-") as tmp:
        work = Path(tmp)
        with prefect_server(work / "prefect"):
            run = {args.only} if args.only else {"plan-scale", "latency", "overhead", "warm", "all"}
            if "plan-scale" in run:
                bench_plan_scale(work, images, args.s3)
            if "plan-memory" in run or (args.smoke and "all" in run):
                bench_plan_memory(work, 30 if args.smoke else args.plan_images)
            if run & {"export", "all"}:
                bench_export(work, **exports)
            if run & {"quality", "all"}:
                bench_quality(work, 1 if args.smoke else 5)
            if "all" in run and not args.smoke:
                bench_ephemeral_startup()
            if run & {"latency", "overhead", "warm", "cold-run", "all"}:
                with start_local_fal(
                    latency="zero", media="tiny", concurrency=1000, workdir=work / "fal"
                ) as fal:
                    os.environ.update(fal.env)
                    if "latency" in run:
                        bench_latency(work, fal, **waits)
                    if "all" in run:
                        bench_plan(work, sizes["plan"])
                    if "overhead" in run:
                        bench_overhead(
                            work, fal, sizes["n"], sizes["latency"], sizes["concurrency"]
                        )
                    if "all" in run:
                        bench_default_subscribe(fal, sizes["latency"], sizes["econ"])
                        bench_archive_memory(work, fal, sizes["mb"])
                    if "warm" in run:
                        bench_warm(work, fal, sizes["warm"], full=not args.smoke)
                    if "cold-run" in run or (args.smoke and "all" in run):
                        bench_cold(work, fal, 6 if args.smoke else args.cold or 10_000)
    if args.json:
        args.json.write_text(json.dumps(RESULTS, indent=1))


if __name__ == "__main__":
    main()
