"""The sweep flow: manifest x spec -> validated plan -> only what is missing -> archive -> report.

Read top to bottom: plan everything first (nothing is paid for while any row is bad),
skip what the archive holds with one listing, check the budget, fan out one task per
remaining job on a bounded thread pool, then report from the archive.
"""

from __future__ import annotations

import logging
import queue
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.task_runners import ThreadPoolTaskRunner
from prefect.utilities.annotations import quote

from tasks.generate import generate, limit_name
from tasks.report import build_report
from tasks.secrets import load_secrets
from wansweep.errors import LedgerDamaged, PlanInvalid
from wansweep.fal.webhooks import receiver_from_env
from wansweep.plan.preflight import preflight
from wansweep.plan.spec import DEFAULT_STORE, Job, SweepSpec, load_spec
from wansweep.results.notify import notify
from wansweep.results.report import reuse_report, save_plan
from wansweep.run.ledger import Ledger
from wansweep.run.lifecycle import FAILURES, SUCCEEDED, JobResult, Outcome
from wansweep.run.runtime import RunSettings, close_runtime, stop_event
from wansweep.store import open_store
from wansweep.store.layout import JOBS, SWEEP_INDEX, archived_keys, report_file, sweep_file


class Progress:
    """A live bar on a terminal; otherwise a log line every 5% (and at the end)."""

    def __init__(self, total: int, log: Any, sweep: str = ""):
        self.total, self.log, self.done = total, log, 0
        self.artifact = None
        if total:
            from prefect.artifacts import create_progress_artifact

            try:
                self.artifact = create_progress_artifact(
                    progress=0.0, key=f"{sweep}-progress", description=f"Sweep {sweep}: jobs done"
                )
            except Exception:  # a view only; never stop a sweep for it
                self.artifact = None
        self.started = time.monotonic()
        self.bar = None
        if total and sys.stderr.isatty():
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
            from rich.progress import Progress as Bar

            self.bar = Bar(
                TextColumn("jobs"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                TextColumn("{task.description}"),
            )

    def __enter__(self) -> Progress:
        if self.bar is not None:
            self.bar.start()
            self.task = self.bar.add_task("", total=self.total)
        return self

    def advance(self, counts: dict[str, int]) -> None:
        self.done += 1
        text = ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
        step = max(1, min(100, self.total // 20))
        if self.artifact is not None and (self.done % step == 0 or self.done == self.total):
            from prefect.artifacts import update_progress_artifact

            update_progress_artifact(self.artifact, progress=100.0 * self.done / self.total)
        if self.bar is not None:
            self.bar.update(self.task, advance=1, description=text)
        elif self.done % max(1, self.total // 20) == 0 or self.done == self.total:
            self.log.info(
                "progress %d/%d (%.0f%%) %s, %.0f s",
                self.done,
                self.total,
                100 * self.done / self.total,
                text,
                time.monotonic() - self.started,
            )

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()


def run_jobs(
    jobs: list[Job],
    cfg: SweepSpec,
    store_uri: str,
    *,
    resubmit_expired: bool = False,
    resubmit_ambiguous: bool = False,
    global_limits: bool = False,
    budget_usd: float | None = None,
) -> dict[str, int]:
    """Fan the jobs out, one task each, on a bounded thread pool; returns outcome counts."""
    log = get_run_logger()
    settings = RunSettings(
        run_id=uuid.uuid4().hex,
        store=store_uri,
        budget_usd=budget_usd if budget_usd is not None else cfg.budget_usd,
        poll=cfg.poll,
        reconcile=cfg.reconcile,
        leases=cfg.leases,
        max_attempts=cfg.max_attempts,
        endpoint_concurrency=cfg.endpoint_concurrency,
        connections=min(256, 2 * cfg.concurrency + 8),
        resubmit_expired=resubmit_expired,
        resubmit_ambiguous=resubmit_ambiguous,
        global_limits=global_limits,
    )
    if global_limits:
        check_global_limits({j.endpoint for j in jobs})
    if (webhooks := receiver_from_env()) is not None:  # a bad address fails here, not per job
        log.info("waiting on fal webhooks (listening on %s)", webhooks.address)
    counts: dict[str, int] = {}

    def count(result: Any) -> None:
        outcome = result.outcome if isinstance(result, JobResult) else Outcome.CRASHED
        counts[outcome] = counts.get(outcome, 0) + 1
        if outcome in FAILURES:
            log.warning("job failed: %r", result)
        progress.advance(counts)

    try:
        with Progress(len(jobs), log, cfg.name) as progress, quiet_task_successes():
            fan_out(
                generate,
                # quoted: Prefect would walk every field of both twice a task run, looking for
                # futures and states that cannot be there (~1 ms of CPU a job, measured)
                ({"job": quote(job), "settings": quote(settings)} for job in jobs),
                workers=cfg.concurrency,
                on_result=count,
                # every waiting job cancels its fal request and records that in the ledger
                on_stop=stop_event(settings.run_id).set,
            )
    finally:
        close_runtime(settings.run_id)
    return counts


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
    parameters: Iterator[dict[str, Any]],
    *,
    workers: int,
    on_result: Callable[[Any], None],
    on_stop: Callable[[], None] = lambda: None,
) -> None:
    """Run ``task`` once per parameter set on a thread pool of ``workers``, calling
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
                params = next(parameters, None)
                if params is None:
                    return
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


def dispatch_shards(
    cfg: SweepSpec,
    spec: str,
    store_uri: str,
    todo: list[Job],
    shards: int,
    deployment: str,
    resubmit_expired: bool,
    resubmit_ambiguous: bool,
    global_limits: bool,
) -> dict[str, int]:
    """Run the jobs as ``shards`` child flow runs on the deployment's work pool; wait for all."""
    import contextvars
    from concurrent.futures import ThreadPoolExecutor

    from prefect.deployments import run_deployment

    log = get_run_logger()
    chunks = [c for c in (todo[i::shards] for i in range(shards)) if c]
    log.info("dispatching %d jobs as %d shards of %s", len(todo), len(chunks), deployment)
    with ThreadPoolExecutor(len(chunks)) as pool:
        runs = [
            pool.submit(
                contextvars.copy_context().run,
                run_deployment,
                name=deployment,
                timeout=None,
                parameters={
                    "spec": spec,
                    "manifest": cfg.manifest,
                    "store": store_uri,
                    "job_keys": [j.job_key for j in chunk],
                    "shard": n,
                    "budget_usd": round(sum(j.estimated_usd for j in chunk), 6),
                    "resubmit_expired": resubmit_expired,
                    "resubmit_ambiguous": resubmit_ambiguous,
                    "global_limits": global_limits,
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
    done = archived_keys(open_store(store_uri))
    ledger = Ledger(open_store(store_uri))
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


def notify_failure(flow, flow_run, state) -> None:
    """on_failure / on_crashed hook: tell the team's channel (if WANSWEEP_NOTIFY_URL is set)."""
    notify(
        f"wansweep: {flow.name} run {flow_run.name} ended {state.name}: {state.message or ''}"[
            :3000
        ]
    )


@flow(
    name="wansweep-sweep", log_prints=True, on_failure=[notify_failure], on_crashed=[notify_failure]
)
def sweep(
    spec: str,
    manifest: str | None = None,
    store: str | None = None,
    concurrency: int | None = None,
    budget_usd: float | None = None,
    skip_invalid: bool = False,
    report_dir: str | None = None,
    resubmit_expired: bool = False,
    resubmit_ambiguous: bool = False,
    shards: int = 0,
    shard_deployment: str = "wansweep-shard/shard",
    global_limits: bool = False,
) -> dict[str, Any]:
    """Run a sweep spec (configs/*.yaml) over a manifest and archive every video.

    Args:
        spec: path of the sweep spec (YAML).
        manifest: manifest URI (CSV/Parquet/JSONL, local or s3://); overrides the spec's.
        store: archive URI (s3://bucket/prefix or a folder); overrides the spec's.
        concurrency: jobs in flight at once; overrides the spec's.
        budget_usd: the most this run may commit; overrides the spec's.
        skip_invalid: leave invalid rows out (reported as skipped) instead of refusing to start.
        report_dir: also write the report files to this local folder.
        resubmit_expired: submit again (and pay again) a job whose fal request was lost or
            whose result expired before it was archived; off by default: such jobs are reported.
        resubmit_ambiguous: submit again (and maybe pay twice) a job whose submit answer was
            lost and that fal's records cannot settle yet; off by default: such jobs are
            reported ``ambiguous`` and settled by a later run or ``wansweep reconcile``.
        shards: split the jobs into this many child flow runs of ``shard_deployment``, run by
            the workers of its work pool; this run waits for them and writes one report.
        shard_deployment: the deployment that runs one shard (see prefect.yaml).
        global_limits: hold a slot of the Prefect global concurrency limit
            ``wansweep-<standard|flash>`` for each in-flight fal request (create them with
            ``prefect gcl create``), so every worker of the fleet stays within the fal account's limit.
    """
    log = get_run_logger()
    load_secrets()
    cfg = load_spec(
        spec, manifest=manifest, store=store, concurrency=concurrency, budget_usd=budget_usd
    )
    store_uri = cfg.store or DEFAULT_STORE
    archive = open_store(store_uri)
    checked = preflight(cfg, archive, skip_invalid=skip_invalid)
    the_plan, todo = checked.plan, checked.todo
    for w in the_plan.warnings[:20]:
        log.warning("warning: %s", w)
    log.info(
        "%d jobs planned, %d already archived, %d to run (estimated $%.2f); inputs: "
        "%d downloaded and checked, %d unchanged since checked (media index)",
        len(the_plan.jobs),
        len(the_plan.jobs) - len(todo),
        len(todo),
        checked.todo_usd,
        the_plan.media_fetched,
        the_plan.media_reused,
    )
    checked.raise_if_blocked()
    save_plan(archive, cfg.name, the_plan.jobs, the_plan.skipped)

    if shards > 1 and len(todo) > 1:
        counts = dispatch_shards(
            cfg,
            spec,
            store_uri,
            todo,
            shards,
            shard_deployment,
            resubmit_expired,
            resubmit_ambiguous,
            global_limits,
        )
    else:
        counts = run_jobs(
            todo,
            cfg,
            archive.uri,
            resubmit_expired=resubmit_expired,
            resubmit_ambiguous=resubmit_ambiguous,
            global_limits=global_limits,
        )

    planned, ran = len(the_plan.jobs), len(todo)
    skipped_rows = len({p.row for p in the_plan.skipped})
    # the report reads the plan back from the archive: the jobs in memory (~1.3 KB each) go
    # before it is built, so a 100,000-job run does not hold both
    del checked, the_plan, todo
    reused = (
        None if ran else reuse_report(archive, cfg.name, Path(report_dir) if report_dir else None)
    )
    if reused is not None:
        log.info("report unchanged: every job was archived before this run")
        files = reused.__dict__
    else:
        files = build_report(archive.uri, cfg.name, report_dir)
    notify((archive.get_bytes(report_file(cfg.name, "summary.md")) or b"").decode())
    failed = sum(v for k, v in counts.items() if k not in SUCCEEDED)
    return {
        "sweep": cfg.name,
        "store": archive.uri,
        "planned": planned,
        "already_archived": planned - ran,
        "ran": ran,
        "outcomes": counts,
        "failed": failed,
        "skipped_rows": skipped_rows,
        "report": files,
        "report_rebuilt": reused is None,
        "videos": archive.url(JOBS),
        "index": archive.url(sweep_file(cfg.name, SWEEP_INDEX)),
    }
