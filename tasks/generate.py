"""The generation task: one per job, a thin adapter over :func:`wansweep.run.execute.run_job`.

Its Prefect state is the job's: a job that failed (or expired, or crashed) is a Failed task
run whose message is one readable line (job, arm, row, seed, why, what to do), a cancelled
one is Cancelled, the rest Completed; the :class:`JobResult` rides along as the state's data.

Caching: the archive is the cache. ``run_job`` returns at once when the job's sidecar
exists, and the flow filters archived jobs out before fan-out (a Prefect cache hit costs
as much as a run). A Prefect cache record could outlive the video it describes; the
archive cannot.
"""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.states import Cancelled, Failed, State

from wansweep.fal.policy import RETRIES, task_may_retry
from wansweep.plan.spec import Job, endpoint_alias
from wansweep.run.execute import run_job
from wansweep.run.lifecycle import FAILURES, JobResult, Outcome
from wansweep.run.runtime import Run, services_for


def limit_name(endpoint: str) -> str:
    """The Prefect global concurrency limit of an endpoint: wansweep-<alias> (wansweep-flash)."""
    return f"wansweep-{endpoint_alias(endpoint)}"


def prefect_slot(endpoint: str):
    """A slot of the endpoint's global concurrency limit, shared by every worker of the fleet."""
    from prefect.concurrency.sync import concurrency

    return concurrency(limit_name(endpoint), occupy=1, strict=True)


def retry_transient(task, task_run, state) -> bool:
    """Retry infrastructure hiccups (store, network) only; job-level failures are outcomes."""
    try:
        state.result()
    except Exception as exc:
        return task_may_retry(exc)
    return False


@task(
    name="generate",
    task_run_name="{job.arm}/{job.row_id}/seed-{job.seed}",
    cache_policy=NO_CACHE,
    retries=len(RETRIES.task_retry_delays_s),
    retry_delay_seconds=list(RETRIES.task_retry_delays_s),
    retry_condition_fn=retry_transient,
    persist_result=False,
    log_prints=False,
)
def generate(job: Job, run: Run) -> JobResult | State:
    guard = prefect_slot if run.settings.global_limits else None
    return as_state(run_job(job, services_for(run, guard)))


def as_state(result: JobResult) -> JobResult | State:
    """The task run's state for a job's outcome (Completed: the result itself)."""
    if result.outcome in FAILURES:
        return Failed(message=result.line(), data=result)
    if result.outcome is Outcome.CANCELLED:
        return Cancelled(message=result.line(), data=result)
    return result
