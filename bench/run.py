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
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

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
from scale import bench_plan_scale  # noqa: E402

from wansweep.localfal.runner import start_local_fal  # noqa: E402


def bench_overhead(work: Path, fal, n: int, latency: float, concurrency: int) -> None:
    from wansweep.execute import request_body
    from wansweep.manifest import plan
    from wansweep.sweep import load_spec

    # polled on the bare loop's own schedule: this line measures our overhead, not how we wait
    poll = {"stream": False, "first": 2.0, "factor": 1.5, "max": 15.0}
    fal.configure(
        latency=f"fixed={latency}", media="tiny", concurrency=max(concurrency, 10), faults=""
    )
    spec = make_case(work / "overhead", rows=n, poll=poll, concurrency=concurrency)
    cfg = load_spec(spec)
    bodies = [request_body(j) for j in plan(cfg, cfg.manifest).jobs]
    out = work / "bare"
    out.mkdir(exist_ok=True)
    fal.reset()
    t = time.perf_counter()
    asyncio.run(bare_loop(bodies, concurrency, poll, out))
    bare = time.perf_counter() - t
    bare_polls = fal.stats()["status_polls"] / n

    fal.reset()
    wall, rss = run_cli(spec, fal.env)
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
    hooked_wall, _ = run_cli(hooked, {**fal.env, "WANSWEEP_WEBHOOK_URL": "http://127.0.0.1:0/fal"})
    record(
        "3b. status polls per job, fal webhooks on",
        fal.stats()["status_polls"] / n,
        "polls",
        "1 (the check after the webhook)",
        note=f"wall {hooked_wall:.1f} s, {hooked_wall / bare:.3f} x the bare loop",
    )

    fal.reset()
    warm, _ = run_cli(spec, fal.env)
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


def bench_warm_10k(work: Path, fal, n: int) -> None:
    spec = make_case(work / "warm", rows=n, concurrency=100, name="warm")
    populate_archive(spec)
    fal.reset()
    wall, rss = run_cli(spec, fal.env)
    s = fal.stats()
    requests = (
        s["submits_accepted"] + s["submits_rejected"] + s["status_polls"] + s["result_fetches"]
    )
    naive = naive_cached_flow(n)
    record(
        f"2. warm rerun, {n} jobs all archived",
        wall,
        "s",
        "<= 10 s, 0 requests",
        baseline=naive,
        note=f"requests to fal: {requests}; baseline: naive flow on Prefect task cache",
    )

    from wansweep.report import write_report
    from wansweep.store import open_store

    t = time.perf_counter()
    write_report(open_store(str(work / "warm" / "archive")), "warm")
    record(f"5. report from {n} sidecars", time.perf_counter() - t, "s", "<= 10 s")


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
    from wansweep.manifest import plan
    from wansweep.sweep import load_spec

    spec = make_case(work / "plan", rows=rows)
    t = time.perf_counter()
    cfg = load_spec(spec)
    p = plan(cfg, cfg.manifest)
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


def bench_cold(work: Path, fal, n: int) -> None:
    """A cold run of n jobs at zero latency: the memory of a big sweep (opt-in: --cold N)."""
    fal.configure(latency="zero", media="tiny", concurrency=1000, faults="")
    spec = make_case(work / "cold", rows=n, concurrency=100, name="cold")
    fal.reset()
    wall, rss = run_cli(spec, fal.env)
    record(
        f"4. peak RSS, cold wansweep run of {n} jobs",
        rss,
        "MB",
        "<= 1024",
        note=f"{wall:.0f} s wall at zero latency; {fal.stats()['submits_accepted']} submits",
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
        help="only measure a cold run of N jobs (memory at scale; slow)",
    )
    parser.add_argument(
        "--only",
        choices=["latency", "plan-scale", "overhead", "export", "quality"],
        help="only this section (its full sizes unless --smoke)",
    )
    args = parser.parse_args()
    sizes = dict(n=1000, latency=5.0, concurrency=100, warm=10_000, plan=100_000, mb=200, econ=20)
    waits = dict(n=200, seconds=6.0, concurrency=20, big=1000)  # 6 s: off the poll schedule
    images = 10_000  # distinct images planned from S3 and from HTTP
    exports = dict(n=300, mb=2.0)
    if args.smoke:
        sizes = dict(n=6, latency=1.0, concurrency=3, warm=50, plan=500, mb=8, econ=2)
        waits = dict(n=4, seconds=1.0, concurrency=2, big=6)
        images = 30
        exports = dict(n=6, mb=0.2)
    print(
        f"wansweep benchmarks ({'smoke' if args.smoke else 'full'}); local fal server in tiny-media mode"
    )
    with tempfile.TemporaryDirectory(prefix="wansweep-bench-") as tmp:
        work = Path(tmp)
        server = prefect_server(work / "prefect")
        if args.cold:
            with start_local_fal(
                latency="zero", media="tiny", concurrency=1000, workdir=work / "fal"
            ) as fal:
                os.environ.update(fal.env)
                bench_cold(work, fal, args.cold)
            server.terminate()
            return
        run = {args.only} if args.only else {"plan-scale", "latency", "overhead", "all"}
        if "plan-scale" in run:
            bench_plan_scale(work, images)
        if run & {"export", "all"}:
            bench_export(work, **exports)
        if run & {"quality", "all"}:
            bench_quality(work, 1 if args.smoke else 5)
        if "all" in run:
            bench_ephemeral_startup()
        if run & {"latency", "overhead", "all"}:
            with start_local_fal(
                latency="zero", media="tiny", concurrency=1000, workdir=work / "fal"
            ) as fal:
                os.environ.update(fal.env)
                if "latency" in run:
                    bench_latency(work, fal, **waits)
                if "all" in run:
                    bench_plan(work, sizes["plan"])
                if "overhead" in run:
                    bench_overhead(work, fal, sizes["n"], sizes["latency"], sizes["concurrency"])
                if "all" in run:
                    bench_default_subscribe(fal, sizes["latency"], sizes["econ"])
                    bench_warm_10k(work, fal, sizes["warm"])
                    bench_archive_memory(work, fal, sizes["mb"])
        server.terminate()
        server.wait(30)
    if args.json:
        args.json.write_text(json.dumps(RESULTS, indent=1))


if __name__ == "__main__":
    main()
