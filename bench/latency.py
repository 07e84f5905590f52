"""Issue 16: how soon a completion is seen, at what request cost, side by side in one run.

Three ways of waiting on the same fixed-latency sweep against the local server, each judged
by the server's own records (``/_local/requests``: when each request ended):
- wansweep with fal's status stream (the default),
- wansweep polling on today's schedule (2 s, x1.5, up to 15 s),
- fal-client's ``subscribe`` default (a status poll every 0.1 s), bounded to the same
  concurrency.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from harness import make_case, record, run_cli

POLLING = {"stream": False, "first": 2.0, "factor": 1.5, "max": 15.0}
FLASH = "wan/v2.6/image-to-video/flash"


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]


def requests_per_job(stats: dict, n: int) -> float:
    """fal requests per job, submit excluded: status polls, stream connects, result fetches."""
    return (stats["status_polls"] + stats["stream_connects"] + stats["result_fetches"]) / n


def wansweep_lags(folder: Path, ended: dict[str, float]) -> tuple[list[float], float]:
    """(detection lag of each archived job, span from first submit to last detection)."""
    from wansweep.store import open_store
    from wansweep.store.layout import archived_keys

    store = open_store(str(folder / "archive"))
    metas = [store.get_json(f"jobs/{k}/meta.json") for k in archived_keys(store)]
    lags = [m["timings"]["detected_at"] - ended[m["request_id"]] for m in metas]
    span = max(m["timings"]["detected_at"] for m in metas) - min(
        m["timings"]["submitted_at"] for m in metas
    )
    return lags, span


def subscribe_lags(fal, n: int, concurrency: int) -> list[float]:
    """fal-client's default wait (status every 0.1 s), detection time per request."""
    import fal_client

    from wansweep.localfal.samples import data_uri, make_image

    body = {"prompt": "latency baseline", "image_url": data_uri(make_image()), "duration": "5"}
    seen: dict[str, float] = {}

    async def go():
        client = fal_client.AsyncClient()
        sem = asyncio.Semaphore(concurrency)

        async def one(i: int) -> None:
            async with sem:
                handle = await client.submit(FLASH, arguments={**body, "seed": i})
                async for status in handle.iter_events():
                    if isinstance(status, fal_client.Completed):
                        seen[handle.request_id] = time.time()
                await handle.get()

        await asyncio.gather(*(one(i) for i in range(n)))

    asyncio.run(go())
    ended = {rid: r["ended_at"] for rid, r in fal.requests().items()}
    return [at - ended[rid] for rid, at in seen.items()]


def bench_latency(work: Path, fal, n: int, seconds: float, concurrency: int, big: int) -> None:
    # all of the latency is inference (queue=0), so every second of it holds an account slot
    latency = f"queue=0,flash={seconds / 5}"
    ideal = n * seconds / concurrency
    rows = {}
    for label, poll in (("stream", None), ("polling", POLLING)):
        fal.configure(latency=latency, media="tiny", concurrency=concurrency, faults="")
        spec = make_case(
            work / f"latency-{label}", rows=n, poll=poll or {}, concurrency=concurrency
        )
        fal.reset()
        run_cli(spec, fal.env)
        ended = {rid: r["ended_at"] for rid, r in fal.requests().items()}
        lags, span = wansweep_lags(spec.parent, ended)
        rows[label] = (p95(lags), requests_per_job(fal.stats(), n), span)
    fal.configure(latency=latency, media="tiny", concurrency=concurrency, faults="")
    fal.reset()
    sub = subscribe_lags(fal, n, concurrency)
    sub_requests = requests_per_job(fal.stats(), n)

    lag, requests, span = rows["stream"]
    record(
        f"6. detection lag p95, {n} jobs @ {seconds:g}s, c={concurrency} (streams)",
        lag,
        "s",
        "<= 1 s",
        note=f"polling: {rows['polling'][0]:.2f} s; fal-client subscribe: {p95(sub):.2f} s",
    )
    record(
        "6. fal requests per job, submit excluded (streams)",
        requests,
        "requests",
        "<= 3",
        note=f"polling: {rows['polling'][1]:.2f}; fal-client subscribe: {sub_requests:.1f}",
    )
    record(
        f"6. sweep span, first submit to last completion seen, c = server's {concurrency}",
        span,
        "s",
        "ratio <= 1.1",
        baseline=ideal,
        note=f"baseline: ideal jobs x latency / concurrency; polling: {rows['polling'][2]:.1f} s",
    )

    # Many waiting jobs: open streams stay bounded by the run's concurrency.
    fal.configure(latency="queue=0,flash=0.4", media="tiny", concurrency=1000, faults="")
    spec = make_case(work / "latency-many", rows=big, poll={}, concurrency=min(100, big))
    fal.reset()
    wall, rss, _ = run_cli(spec, fal.env)
    stats = fal.stats()
    record(
        f"6. peak open streams, {big} jobs at c={min(100, big)}",
        stats["peak_streams_open"],
        "streams",
        f"<= {min(100, big)} (the concurrency)",
        note=f"{wall:.0f} s wall, peak RSS {rss} MB, streams open at the end: {stats['streams_open']}",
    )
