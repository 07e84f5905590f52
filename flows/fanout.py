"""The fan-out: one Prefect task per job on a bounded thread pool, with flat memory however
many jobs there are. Every use of Prefect's internals lives here (and only here:
tests/integration/test_scale.py checks them against the installed Prefect, and
tests/unit/test_house.py finds no other module touching them).
"""

from __future__ import annotations

import logging
import queue
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from prefect import get_run_logger, tags
from prefect.task_runners import ThreadPoolTaskRunner
from prefect.utilities.annotations import quote

from flows.progress import Progress
from tasks.generate import generate, limit_name
from wansweep.errors import PlanInvalid
from wansweep.fal.webhooks import receiver_from_env
from wansweep.plan.spec import Job
from wansweep.run.lifecycle import JobResult, Outcome
from wansweep.run.runtime import Run, close_services, stop_event


def run_jobs(jobs: list[Job], run: Run, sweep: str) -> tuple[dict[str, int], str | None]:
    """Run every job, one task each, at most ``concurrency`` at once (each task run tagged with
    its arm and endpoint); returns the outcome counts, and why the run stopped submitting if a
    cause every job would meet stopped it. Ctrl-C, a flow-run cancel or a crash stop every
    waiting job, which cancels its fal request and records that in its ledger."""
    log = get_run_logger()
    if run.settings.global_limits:
        check_global_limits({j.endpoint for j in jobs})
    if (webhooks := receiver_from_env()) is not None:  # a bad address fails here, not per job
        log.info("waiting on fal webhooks (listening on %s)", webhooks.address)
    counts: dict[str, int] = {}

    def count(result: Any) -> None:  # a failed job's task run logged its own line
        outcome = result.outcome if isinstance(result, JobResult) else Outcome.CRASHED
        counts[outcome] = counts.get(outcome, 0) + 1
        progress.advance(counts)

    try:
        with Progress(len(jobs), log, sweep) as progress, quiet_task_successes():
            fan_out(
                generate,
                # quoted: Prefect would walk every field of both twice a task run, looking for
                # futures and states that cannot be there (~1 ms of CPU a job, measured)
                (({"job": quote(job), "run": quote(run)}, (job.arm, job.endpoint)) for job in jobs),
                workers=run.settings.concurrency,
                on_result=count,
                on_stop=stop_event(run.run_id).set,
            )
    finally:
        halted = close_services(run.run_id)
    return counts, halted


def _not_a_task_success(record: logging.LogRecord) -> bool:
    return not (
        record.levelno == logging.INFO and str(record.msg).startswith("Finished in state Completed")
    )


@contextmanager
def quiet_task_successes() -> Iterator[None]:
    """While it is held, Prefect's task engine does not log "Finished in state Completed()":
    a line per job, so 10,000 console lines and API log records for a 10,000-job sweep, which
    the progress lines and the task runs' states already say (and ~8% of the wansweep
    process's CPU per job at zero latency; bench/README.md). Failures, crashes and retries
    are logged as before."""
    logger = logging.getLogger("prefect.task_runs")
    logger.addFilter(_not_a_task_success)
    try:
        yield
    finally:
        logger.removeFilter(_not_a_task_success)


def fan_out(
    task: Any,
    parameters: Iterator[tuple[dict[str, Any], tuple[str, ...]]],
    *,
    workers: int,
    on_result: Callable[[Any], None],
    on_stop: Callable[[], None] = lambda: None,
) -> None:
    """Run ``task`` once per (parameters, tags) on a thread pool of ``workers``, calling
    ``on_result`` with each result (an exception object for a crashed run) in the order
    they finish. On Ctrl-C, flow-run cancellation or a crash, ``on_stop`` is called before
    the pool waits for its threads (so they can stop), then the exception goes on.

    Memory stays flat however many runs there are:

    - a window of ``2 x workers + 16`` futures, not one future per run;
    - each counted run is forgotten by Prefect's per-flow bookkeeping, which otherwise keeps
      a state per task result (``FlowRunContext.run_results``, for dependency tracking when
      a result is passed to another task), a cancel event and an asset set per submitted
      task until the flow ends: about 7 KB a run, 700 MB at 100,000. Results here are only counted, never
      passed on. tests/integration/test_scale.py checks this against the installed Prefect.
    """
    from prefect.context import FlowRunContext
    from prefect.utilities.collections import visit_collection

    context = FlowRunContext.get()
    with ThreadPoolTaskRunner(max_workers=workers) as runner:
        finished: queue.Queue = queue.Queue()
        in_flight = 0

        def fill() -> None:
            nonlocal in_flight
            while in_flight < 2 * workers + 16:
                item = next(parameters, None)
                if item is None:
                    return
                params, labels = item
                with tags(*labels):  # the task run's tags: its arm and endpoint, in the UI
                    runner.submit(task, params).add_done_callback(finished.put)
                in_flight += 1

        try:
            fill()
            while in_flight:
                try:
                    future = finished.get(timeout=1.0)  # a timeout keeps Ctrl-C prompt
                except queue.Empty:
                    continue
                in_flight -= 1
                result = future.result(raise_on_failure=False)
                getattr(runner, "_cancel_events", {}).pop(future.task_run_id, None)
                if context is not None:
                    context.task_run_assets.pop(future.task_run_id, None)
                    visit_collection(
                        result, lambda obj: context.run_results.pop(id(obj), None), max_depth=1
                    )
                on_result(result)
                fill()
        except BaseException:
            on_stop()
            raise


def check_global_limits(endpoints: set[str]) -> None:
    """Fail before any submit when a needed global concurrency limit does not exist."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        for endpoint in endpoints:
            name = limit_name(endpoint)
            try:
                client.read_global_concurrency_limit_by_name(name)
            except Exception:
                raise PlanInvalid(
                    f"global concurrency limit {name!r} does not exist: create it with "
                    f"`prefect gcl create {name} --limit N` (N = your fal account's concurrency)"
                ) from None
