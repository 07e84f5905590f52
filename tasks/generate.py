"""The generation task: one per job, a thin adapter over :func:`wansweep.execute.run_job`.

Caching: the archive is the cache. ``run_job`` returns at once when the job's sidecar
exists, and the flow filters archived jobs out before fan-out (a Prefect cache hit costs
as much as a run). A Prefect cache record could outlive the video it describes; the
archive cannot.
"""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.runtime import RunSettings, runtime_for
from wansweep.execute import run_job
from wansweep.sweep import Job

TRANSIENT = (
    "ConnectionError",
    "TimeoutError",
    "EndpointConnectionError",
    "ReadTimeoutError",
    "ConnectTimeoutError",
    "TransportError",
    "ReadError",
    "OSError",
)


def retry_transient(task, task_run, state) -> bool:
    """Retry infrastructure hiccups (store, network) only; job-level failures are outcomes."""
    try:
        state.result()
    except Exception as exc:
        return any(cls.__name__ in TRANSIENT for cls in type(exc).__mro__)
    return False


@task(
    name="generate",
    task_run_name="{job.arm}/{job.row_id}",
    cache_policy=NO_CACHE,
    retries=3,
    retry_delay_seconds=[2, 10, 30],
    retry_condition_fn=retry_transient,
    persist_result=False,
    log_prints=False,
)
def generate(job: Job, settings: RunSettings) -> dict[str, Any]:
    return run_job(job, runtime_for(settings))
