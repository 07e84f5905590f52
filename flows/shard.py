"""Sharding: a sweep's jobs as child flow runs on a work pool, and one shard's own run.

The parent sweep (flows/sweep.py, ``shards=N``) plans and validates once, then dispatches
shards with ``run_deployment`` (:func:`dispatch_shards`); each shard (:func:`shard`) plans again
(deterministically: same keys) and runs only its own jobs. Results land in the shared archive,
where the parent reads them back.
"""

from __future__ import annotations

import contextvars
import os
import socket
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from prefect import flow, get_run_logger

from flows.fanout import run_jobs
from tasks.secrets import load_secrets
from wansweep.errors import LedgerDamaged
from wansweep.plan.planner import plan
from wansweep.plan.spec import Job, load_spec
from wansweep.run.ledger import Ledger
from wansweep.run.lifecycle import Outcome
from wansweep.run.runtime import Run
from wansweep.store import open_store
from wansweep.store.layout import archived_keys, sweep_file


@flow(name="wansweep-shard", log_prints=True)
def shard(
    spec: str,
    job_keys: list[str],
    store: str,
    run: dict[str, Any],
    manifest: str | None = None,
    shard: int = 0,
) -> dict[str, Any]:
    """Run the jobs of ``spec`` whose keys are in ``job_keys``; archive to ``store``. ``run``
    is the parent's :class:`Run` (its settings as the parent read them, its budget this
    shard's share)."""
    load_secrets()
    sweep_spec = load_spec(spec, manifest=manifest, store=store)
    wanted = set(job_keys)
    archive = open_store(store)  # its media index spares the shard the sweep's downloads
    planned = plan(sweep_spec, sweep_spec.manifest, skip_invalid=True, index_store=archive)
    jobs = [j for j in planned.jobs if j.job_key in wanted]
    if len(jobs) != len(wanted):
        raise RuntimeError(
            f"shard {shard}: {len(wanted) - len(jobs)} job keys are not in the plan; "
            "did the manifest or spec change since the sweep was planned?"
        )
    archive.put_json(
        sweep_file(sweep_spec.name, "shards", f"{shard}.json"),
        {
            "shard": shard,
            "jobs": len(jobs),
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "worker": os.environ.get("WANSWEEP_WORKER_ID"),
            "started_at": time.time(),
        },
    )
    counts, halted = run_jobs(jobs, Run.model_validate(run), sweep_spec.name)
    return {"shard": shard, "outcomes": counts, "halted": halted}


def dispatch_shards(
    spec: str, manifest: str | None, todo: list[Job], run: Run, shards: int, deployment: str
) -> dict[str, int]:
    """Run the jobs as ``shards`` child flow runs on the deployment's work pool; wait for all.
    Each shard's budget is its jobs' estimate, so the shards together stay within the run's."""
    from prefect.deployments import run_deployment

    log = get_run_logger()
    chunks = [c for c in (todo[i::shards] for i in range(shards)) if c]
    log.info("dispatching %d jobs as %d shards of %s", len(todo), len(chunks), deployment)

    def shard_run(chunk: list[Job]) -> dict[str, Any]:
        budget = round(sum(j.estimated_usd for j in chunk), 6)
        settings = run.settings.model_copy(update={"budget_usd": budget})
        return run.model_copy(update={"settings": settings}).model_dump(mode="json")

    with ThreadPoolExecutor(len(chunks)) as pool:
        runs = [
            pool.submit(
                contextvars.copy_context().run,
                run_deployment,
                name=deployment,
                timeout=None,
                parameters={
                    "spec": spec,
                    "manifest": manifest,
                    "store": run.store,
                    "job_keys": [j.job_key for j in chunk],
                    "shard": n,
                    "run": shard_run(chunk),
                },
            )
            for n, chunk in enumerate(chunks)
        ]
        for r in runs:
            flow_run = r.result()
            log.info(
                "shard %s ended %s",
                flow_run.name,
                flow_run.state.type.value if flow_run.state else "?",
            )
    # What happened is read back from the archive and the ledger, not from the shards' results.
    store = open_store(run.store)
    done, ledger = archived_keys(store), Ledger(store)
    return dict(Counter(_shard_status(job.job_key, done, ledger) for job in todo))


def _shard_status(job_key: str, done: set[str], ledger: Ledger) -> str:
    """A dispatched job's status, read back from the archive and its ledger entry."""
    if job_key in done:
        return str(Outcome.ARCHIVED)
    try:
        entry = ledger.get(job_key)
    except LedgerDamaged:
        return "damaged"
    return str(entry.status) if entry and entry.status else "lost"
