"""The sweep flow: manifest x spec -> validated plan -> only what is missing -> archive -> report.

Read top to bottom: plan everything first (nothing is paid for while any row is bad or the
jobs left are estimated above the budget), skip what the archive holds with one listing, run
one task per remaining job (flows/fanout.py), or as shards on a work pool (flows/shard.py),
then report from the archive alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.states import Failed, State

from flows.fanout import run_jobs
from flows.shard import dispatch_shards
from tasks.report import build_report
from tasks.secrets import load_secrets
from wansweep.errors import CannotRun, InputError
from wansweep.plan.preflight import Preflight, preflight
from wansweep.plan.spec import DEFAULT_STORE, load_spec
from wansweep.results.notify import notify
from wansweep.results.report import reuse_report
from wansweep.results.saved_plan import save_plan
from wansweep.run.checks import check_fal, check_store
from wansweep.run.lifecycle import SUCCEEDED
from wansweep.run.runtime import Run
from wansweep.store import open_store
from wansweep.store.layout import JOBS, SWEEP_INDEX, report_file, sweep_file


def notify_failure(flow, flow_run, state) -> None:
    """on_failure / on_crashed hook: tell the team's channel (if WANSWEEP_NOTIFY_URL is set)."""
    notify(
        f"wansweep: {flow.name} run {flow_run.name} ended {state.name}: {state.message or ''}"[
            :3000
        ]
    )


def run_name() -> str:
    """A flow run is named after its sweep (the spec's ``name``) and when it started."""
    import re
    import time

    import yaml
    from prefect.runtime import flow_run

    try:
        name = yaml.safe_load(Path(flow_run.parameters["spec"]).read_text()).get("name")
    except Exception:  # noqa: BLE001 (a name for the UI; the flow reports a bad spec itself)
        name = None
    name = name if isinstance(name, str) and re.fullmatch(r"[a-z0-9-]{1,100}", name) else "sweep"
    return f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"


@flow(
    name="wansweep-sweep",
    flow_run_name=run_name,
    log_prints=True,
    on_failure=[notify_failure],
    on_crashed=[notify_failure],
)
def sweep(
    spec: str,
    manifest: str | None = None,
    store: str | None = None,
    concurrency: int | None = None,
    budget_usd: float | None = None,
    skip_invalid: bool = False,
    report_dir: str | None = None,
    resubmit_expired: bool | None = None,
    resubmit_ambiguous: bool | None = None,
    shards: int = 0,
    shard_deployment: str = "wansweep-shard/shard",
    global_limits: bool | None = None,
) -> dict[str, Any] | State:
    """Run a sweep spec (configs/*.yaml) over a manifest and archive every video. The flow run
    ends Failed when any job is not archived (its result still attached) or the run stopped
    submitting; a bad spec, manifest or budget, or a key fal refuses, ends it before any submit.

    Every option left unset keeps the spec's value (``None``: the spec decides).

    Args:
        spec: path of the sweep spec (YAML).
        manifest: manifest URI (CSV/Parquet/JSONL, local or s3://); overrides the spec's.
        store: archive URI (s3://bucket/prefix or a folder); overrides the spec's.
        concurrency: jobs in flight at once; overrides the spec's.
        budget_usd: the most this run may commit; overrides the spec's.
        skip_invalid: leave invalid rows out (reported as skipped) instead of refusing to start.
        report_dir: also write the report files to this local folder.
        resubmit_expired: pay again, once per job, for a result or video fal no longer holds;
            off by default: such jobs are reported ``expired``.
        resubmit_ambiguous: pay again, once per job, for a submit whose answer was lost and
            that fal's records cannot settle yet (it may then be paid twice); off by default:
            such jobs are reported ``ambiguous`` and settled by a later run or
            ``wansweep reconcile``.
        shards: split the jobs into this many child flow runs of ``shard_deployment``, run by
            the workers of its work pool; this run waits for them and writes one report.
        shard_deployment: the deployment that runs one shard (see prefect.yaml).
        global_limits: hold a slot of the Prefect global concurrency limit
            ``wansweep-<endpoint alias>`` (e.g. wansweep-flash) for each in-flight fal request (create them with
            ``prefect gcl create``), so every worker of the fleet stays within the fal account's limit.
    """
    log = get_run_logger()
    try:  # what the user must fix ends the run as one line (no traceback), nothing submitted
        load_secrets()
        sweep_spec = load_spec(
            spec,
            manifest=manifest,
            store=store,
            concurrency=concurrency,
            budget_usd=budget_usd,
            resubmit_expired=resubmit_expired,
            resubmit_ambiguous=resubmit_ambiguous,
            global_limits=global_limits,
        )
        archive = open_store(sweep_spec.store or DEFAULT_STORE)
        check_store(archive)  # before it is read: a wrong bucket or no permission ends here
        checked = preflight(sweep_spec, archive, skip_invalid=skip_invalid)
        _log_plan(log, checked)
        checked.raise_if_blocked()
        save_plan(
            archive,
            sweep_spec.name,
            checked.plan.jobs,
            checked.plan.skipped,
            sweep_spec.primary_measure,
        )
        run = Run.new(archive.uri, sweep_spec.run_settings())
        todo = checked.todo
        if todo:  # before the first submit, once: every job would meet what fails here
            check_fal(archive, {j.endpoint for j in todo}, warn=log.warning)
    except (InputError, CannotRun) as exc:
        return Failed(message=str(exc), data=exc)

    halted = None
    if shards > 1 and len(todo) > 1:
        counts = dispatch_shards(spec, sweep_spec.manifest, todo, run, shards, shard_deployment)
    else:
        counts, halted = run_jobs(todo, run, sweep_spec.name)

    planned, ran = len(checked.plan.jobs), len(todo)
    skipped_rows = len({p.row for p in checked.plan.skipped})
    # the report reads the plan back from the archive: the jobs in memory (~1.3 KB each) go
    # before it is built, so a 100,000-job run does not hold both
    del checked, todo
    out = Path(report_dir) if report_dir else None
    reused = None if ran else reuse_report(archive, sweep_spec.name, out)
    if reused is not None:
        log.info("report unchanged: every job was archived before this run")
        files = reused.__dict__
    else:  # None: the archive refused it (full, read-only), which ends the run Failed
        files = build_report(archive.uri, sweep_spec.name, report_dir)
        halted = halted or (None if files else "the archive refused the report")
    notify((archive.get_bytes(report_file(sweep_spec.name, "summary.md")) or b"").decode())
    return ended(
        {
            "sweep": sweep_spec.name,
            "store": archive.uri,
            "planned": planned,
            "already_archived": planned - ran,
            "ran": ran,
            "outcomes": counts,
            "failed": sum(v for k, v in counts.items() if k not in SUCCEEDED),
            "skipped_rows": skipped_rows,
            "report": files,
            "report_rebuilt": reused is None,
            "videos": archive.url(JOBS),
            "index": archive.url(sweep_file(sweep_spec.name, SWEEP_INDEX)),
            "halted": halted,
        }
    )


def ended(result: dict[str, Any]) -> dict[str, Any] | State:
    """The flow run's end: Completed with the result when every job is archived; else Failed,
    its message one line (why the run stopped submitting, or how many jobs are not archived),
    the result still its data (``state.result(raise_on_failure=False)``)."""
    if result["halted"]:
        why = f"stopped submitting: {result['halted']}; nothing more was sent"
        return Failed(message=why, data=result)
    if result["failed"]:
        counts = ", ".join(f"{n} {k}" for k, n in sorted(result["outcomes"].items()))
        why = f"{result['failed']} of {result['ran']} jobs not archived ({counts})"
        return Failed(message=why, data=result)
    return result


def _log_plan(log: Any, checked: Preflight) -> None:
    the_plan, todo = checked.plan, checked.todo
    for note in the_plan.notes:
        log.info("note: %s", note)
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
