"""The cold run: n jobs at zero latency and tiny media, wansweep against the bare fal-client
loop that also downloads each video (``python bench/run.py --only cold-run``)."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path

from harness import bare_loop, make_case, record, run_cli


def bench_cold(work: Path, fal, n: int) -> None:
    """A cold run of n jobs at zero latency and tiny media, side by side with the bare
    fal-client loop that also downloads each video: what wansweep costs per job when fal
    costs nothing, and the memory of a big sweep in one process."""
    from wansweep.plan.planner import plan
    from wansweep.plan.spec import load_spec
    from wansweep.run.steps import request_body

    fal.configure(latency="zero", media="tiny", concurrency=1000, faults="")
    spec = make_case(work / "cold", rows=n, concurrency=100, name="cold")
    sweep_spec = load_spec(spec)
    bodies = [request_body(j) for j in plan(sweep_spec, sweep_spec.manifest).jobs]
    # the ratio is taken at 10,000 jobs; above that the line is about memory, and the bare
    # loop would add 40 minutes at 100,000
    bare = None
    if n <= 10_000:
        out = work / "cold-bare"
        out.mkdir(exist_ok=True)
        fal.reset()
        t = time.perf_counter()
        asyncio.run(bare_loop(bodies, 100, {"first": 0.05, "factor": 1.5, "max": 1.0}, out))
        bare = time.perf_counter() - t
    del bodies
    fal.reset()
    wall, rss, output = run_cli(spec, fal.env)
    record(
        f"4. cold wansweep run, {n} jobs at zero latency",
        wall,
        "s",
        "ratio <= 2" if bare else "",
        baseline=bare,
        note="baseline: bare fal-client loop downloading each video, c=100" if bare else "",
    )
    record(
        f"4. peak RSS, cold wansweep run of {n} jobs",
        rss,
        "MB",
        "<= 1024",
        note=f"{fal.stats()['submits_accepted']} submits",
    )
    # seconds per job over the last fifth of the jobs against the fifth after the first 5%
    # (that one holds planning and Prefect's start), from the run's 5% progress lines: a cost
    # that grows with the run shows here, whatever the machine's speed that day (the lines
    # say whole seconds: read from 10,000 jobs up, where a fifth takes minutes)
    done = {
        int(m[1]): float(m[2])
        for m in re.finditer(r"progress (\d+)/\d+ \(\d+%\).*?, (\d+) s", output)
    }
    marks = sorted(done)
    if n >= 10_000 and len(marks) >= 20:
        early, late = marks[0], marks[4]
        last, end = marks[-5], marks[-1]
        record(
            f"4. cold run of {n}: time per job, last fifth",
            (done[end] - done[last]) / (end - last) * 1000,
            "ms",
            "~ flat",
            baseline=(done[late] - done[early]) / (late - early) * 1000,
            note="baseline: the same from 5% to 25% of the jobs",
        )
