"""The sweep flow: manifest x spec -> validated plan -> only what is missing -> archive -> report.

Read top to bottom: plan everything first (nothing is paid for while any row is bad),
skip what the archive holds with one listing, check the budget, fan out one task per
remaining job on a bounded thread pool, then report from the archive.
"""

from __future__ import annotations

import sys
import time
import uuid
from typing import Any

from prefect import flow, get_run_logger
from prefect.futures import as_completed
from prefect.task_runners import ThreadPoolTaskRunner

from tasks.generate import generate
from tasks.report import build_report
from tasks.runtime import RunSettings, close_runtime, stop_event
from wansweep.archive import archived_keys
from wansweep.manifest import plan
from wansweep.report import save_plan
from wansweep.store import open_store
from wansweep.sweep import load_spec

DEFAULT_STORE = "./archive"


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


class PlanInvalid(ValueError):
    pass


class OverBudget(ValueError):
    pass


@flow(name="wansweep-sweep", log_prints=True)
def sweep(
    spec: str,
    manifest: str | None = None,
    store: str | None = None,
    concurrency: int | None = None,
    budget_usd: float | None = None,
    skip_invalid: bool = False,
    report_dir: str | None = None,
    resubmit_expired: bool = False,
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
    """
    log = get_run_logger()
    cfg = load_spec(
        spec, manifest=manifest, store=store, concurrency=concurrency, budget_usd=budget_usd
    )
    if not cfg.manifest:
        raise PlanInvalid("no manifest: give one in the spec or with --manifest")
    store_uri = cfg.store or DEFAULT_STORE

    the_plan = plan(cfg, cfg.manifest, skip_invalid=skip_invalid)
    for w in the_plan.warnings[:20]:
        log.warning("warning: %s", w)
    if the_plan.errors and not skip_invalid:
        shown = "\n".join(f"  {p}" for p in the_plan.errors[:50])
        more = len(the_plan.errors) - 50
        raise PlanInvalid(
            f"{len(the_plan.errors)} problem(s) in {cfg.manifest}; nothing was submitted:\n{shown}"
            + (f"\n  ... and {more} more (wansweep plan lists them all)" if more > 0 else "")
        )

    archive = open_store(store_uri)
    save_plan(archive, cfg.name, the_plan.jobs, the_plan.skipped)
    done = archived_keys(archive)
    todo = [j for j in the_plan.jobs if j.job_key not in done]
    todo_usd = round(sum(j.estimated_usd for j in todo), 6)
    log.info(
        "%d jobs planned, %d already archived, %d to run (estimated $%.2f)",
        len(the_plan.jobs),
        len(the_plan.jobs) - len(todo),
        len(todo),
        todo_usd,
    )
    if cfg.budget_usd is not None and todo_usd > cfg.budget_usd + 1e-9:
        raise OverBudget(
            f"the {len(todo)} jobs to run are estimated at ${todo_usd:.2f}, over the "
            f"budget of ${cfg.budget_usd:.2f}; nothing was submitted"
        )

    settings = RunSettings(
        run_id=uuid.uuid4().hex,
        store=archive.uri,
        budget_usd=cfg.budget_usd,
        poll=cfg.poll,
        max_attempts=cfg.max_attempts,
        endpoint_concurrency=cfg.endpoint_concurrency,
        connections=min(256, 2 * cfg.concurrency + 8),
    )
    counts: dict[str, int] = {}
    try:
        with ThreadPoolTaskRunner(max_workers=cfg.concurrency) as runner:
            futures = [runner.submit(generate, {"job": job, "settings": settings}) for job in todo]
            try:
                with Progress(len(todo), log, cfg.name) as progress:
                    for future in as_completed(futures):
                        result = future.result(raise_on_failure=False)
                        status = result["status"] if isinstance(result, dict) else "crashed"
                        counts[status] = counts.get(status, 0) + 1
                        if status in ("failed", "expired", "crashed"):
                            log.warning(
                                "job failed: %s",
                                result if isinstance(result, dict) else repr(result),
                            )
                        progress.advance(counts)
            except BaseException:
                # Ctrl-C, flow-run cancellation or a crash: before the pool shuts down, every
                # waiting job cancels its fal request and records that in the ledger.
                stop_event(settings.run_id).set()
                raise
    finally:
        close_runtime(settings.run_id)

    files = build_report(archive.uri, cfg.name, report_dir)
    failed = sum(counts.get(k, 0) for k in ("failed", "expired", "crashed"))
    return {
        "sweep": cfg.name,
        "store": archive.uri,
        "planned": len(the_plan.jobs),
        "already_archived": len(the_plan.jobs) - len(todo),
        "ran": len(todo),
        "outcomes": counts,
        "failed": failed,
        "skipped_rows": len({p.row for p in the_plan.skipped}),
        "report": files,
        "videos": archive.url("jobs/"),
        "index": archive.url(f"sweeps/{cfg.name}/index.parquet"),
    }
