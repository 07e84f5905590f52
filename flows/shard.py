"""One shard of a sweep: the given job keys, run by whichever worker of the pool takes it.

The parent sweep (flows/sweep.py, ``shards=N``) plans and validates once, then dispatches
shards with ``run_deployment``; each shard plans again (deterministically: same keys) and runs
only its own jobs. Results land in the shared archive, where the parent reads them back.
"""

from __future__ import annotations

import os
import socket
import time
from typing import Any

from prefect import flow

from flows.sweep import run_jobs
from tasks.secrets import load_secrets
from wansweep.plan.manifest import plan
from wansweep.plan.spec import load_spec
from wansweep.store import open_store
from wansweep.store.layout import sweep_file


@flow(name="wansweep-shard", log_prints=True)
def shard(
    spec: str,
    job_keys: list[str],
    store: str,
    manifest: str | None = None,
    shard: int = 0,
    budget_usd: float | None = None,
    resubmit_expired: bool = False,
    resubmit_ambiguous: bool = False,
    global_limits: bool = False,
) -> dict[str, Any]:
    """Run the jobs of ``spec`` whose keys are in ``job_keys``; archive to ``store``."""
    load_secrets()
    cfg = load_spec(spec, manifest=manifest, store=store)
    wanted = set(job_keys)
    archive = open_store(store)  # its media index spares the shard the sweep's downloads
    planned = plan(cfg, cfg.manifest, skip_invalid=True, index_store=archive)
    jobs = [j for j in planned.jobs if j.job_key in wanted]
    if len(jobs) != len(wanted):
        raise RuntimeError(
            f"shard {shard}: {len(wanted) - len(jobs)} job keys are not in the plan; "
            "did the manifest or spec change since the sweep was planned?"
        )
    archive.put_json(
        sweep_file(cfg.name, "shards", f"{shard}.json"),
        {
            "shard": shard,
            "jobs": len(jobs),
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "worker": os.environ.get("WANSWEEP_WORKER_ID"),
            "started_at": time.time(),
        },
    )
    counts = run_jobs(
        jobs,
        cfg,
        archive.uri,
        resubmit_expired=resubmit_expired,
        resubmit_ambiguous=resubmit_ambiguous,
        global_limits=global_limits,
        budget_usd=budget_usd,
    )
    return {"shard": shard, "outcomes": counts}
