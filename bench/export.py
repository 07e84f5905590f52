"""Issue 18: export throughput, side by side with a plain tar of the same archive files."""

from __future__ import annotations

import hashlib
import os
import tarfile
import time
from pathlib import Path

from harness import make_case, record


def _archive(work: Path, n: int, mb: float) -> tuple[Path, int]:
    """A finished sweep's archive: plan, and per job a video of ``mb`` MB, thumbnail, sidecar."""
    from wansweep.plan.planner import plan
    from wansweep.plan.spec import load_spec
    from wansweep.results.saved_plan import save_plan
    from wansweep.store import open_store
    from wansweep.store.layout import job_file

    spec = make_case(work / "export", rows=n, name="export")
    sweep_spec = load_spec(spec)
    jobs = plan(sweep_spec, sweep_spec.manifest).jobs
    store = open_store(sweep_spec.store)
    save_plan(store, sweep_spec.name, jobs)
    total = 0
    for j in jobs:
        video = os.urandom(int(mb * 2**20))
        total += len(video)
        store.put_bytes(job_file(j.job_key, "video.mp4"), video)
        store.put_bytes(job_file(j.job_key, "thumb.jpg"), os.urandom(20_000))
        store.put_json(
            job_file(j.job_key, "meta.json"),
            {
                "job_key": j.job_key,
                "arm": j.arm,
                "seed": j.seed,
                "video": {"size": len(video), "sha256": hashlib.sha256(video).hexdigest()},
                "timings": {"wall_seconds": 5.0},
            },
        )
    return Path(sweep_spec.store), total


def bench_export(work: Path, n: int, mb: float) -> None:
    from wansweep.results.export import export
    from wansweep.store import open_store

    root, total = _archive(work, n, mb)
    t = time.perf_counter()
    with tarfile.open(work / "plain.tar", "w") as tar:  # what `tar cf` of the same files does
        for job in sorted((root / "jobs").iterdir()):
            for name in ("video.mp4", "meta.json", "thumb.jpg"):
                tar.add(job / name, arcname=f"{job.name}/{name}")
    plain = time.perf_counter() - t
    result = export(open_store(str(root)), str(work / "exported"), "webdataset", shard_mb=256)
    mb_total = total / 2**20
    record(
        f"8. export {n} videos ({mb_total:.0f} MB) as WebDataset shards",
        mb_total / result.seconds,
        "MB/s",
        "same order as tar",
        baseline=mb_total / plain,
        note=f"baseline: plain tar of the same files; {len(result.new_shards)} shards, "
        "each video checked against its sidecar's SHA-256",
    )
