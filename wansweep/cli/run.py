"""`wansweep run` and `wansweep plan`: a sweep, from spec to archive and report. Prefect is
imported only when a flow runs, never at import time."""

from __future__ import annotations

from pathlib import Path

import typer

from wansweep.cli.money import _fail


def _use_fal(console) -> object | None:
    """Which fal: host variables set -> that server; FAL_KEY alone -> fal.ai; neither -> start ours."""
    import atexit
    import os

    if os.environ.get("FAL_RUN_HOST") or os.environ.get("FAL_QUEUE_RUN_HOST"):
        console.print(
            f"fal: {os.environ.get('FAL_QUEUE_RUN_HOST') or os.environ['FAL_RUN_HOST']} "
            "(from FAL_RUN_HOST / FAL_QUEUE_RUN_HOST)"
        )
        return None
    if os.environ.get("FAL_KEY"):
        console.print("fal: fal.ai (FAL_KEY set): every job is paid")
        return None
    from wansweep.localfal.runner import start_local_fal

    server = start_local_fal(latency="demo", workdir=Path(".wansweep/localfal"))
    atexit.register(server.stop)  # also when a signal ends the run (see _stop_on_signals)
    os.environ.update(server.env)
    console.print(
        f"fal: no FAL_KEY and no fal host set, so started the local fal-compatible "
        f"server at {server.url} (free, synthetic videos)"
    )
    return server


# Prefect waits 20 s for its ephemeral server by default; a second run at once builds a fresh
# database (every migration) while the first one works, and on a busy 2-core machine that
# took longer (CI: three runs at once, two timed out). A longer setting of the user's wins.
EPHEMERAL_STARTUP_TIMEOUT_S = 120

# Prefect's server records task runs one event per database transaction by default, falls
# behind a sweep's thousands of task runs, and at the end of the run cancels what it has not
# recorded with an ERROR traceback. In batches it keeps up, on less CPU (bench/README.md:
# 24% less CPU per cold job, no such errors). A larger setting of the user's wins.
RECORDER_BATCHES = {"batch_size": 500, "read_batch_size": 100}


def _prepare_ephemeral_prefect(console) -> None:
    """Two runs in ephemeral Prefect mode would share one SQLite file and fail with 'database
    is locked'. The first run on the machine holds a lock and uses the usual database; another
    run at the same time gets a database of its own for its lifetime (and says so). Either way
    the ephemeral server gets at least EPHEMERAL_STARTUP_TIMEOUT_S to start, records task runs
    in batches of at least RECORDER_BATCHES, sends no telemetry and keeps its own log quiet (unless
    the user says otherwise)."""
    import atexit
    import fcntl
    import os
    import shutil
    import tempfile

    if os.environ.get("PREFECT_API_URL"):
        return
    from prefect.context import refresh_global_settings_context
    from prefect.settings import get_current_settings

    # Prefect reads its settings once, at import; what this function sets in the environment
    # must reach this process's reads too (the server's start timeout is read here)
    refresh_global_settings_context()
    settings = get_current_settings()
    if settings.api.url:  # a Prefect server is configured: no ephemeral server
        return
    # at least ours: the server (a child process) gets this environment and these settings
    raised = {}
    if settings.server.ephemeral.startup_timeout_seconds < EPHEMERAL_STARTUP_TIMEOUT_S:
        raised["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] = EPHEMERAL_STARTUP_TIMEOUT_S
    recorder = settings.server.services.task_run_recorder
    for name, size in RECORDER_BATCHES.items():
        if getattr(recorder, name) < size:
            raised[f"PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_{name.upper()}"] = size
    # its telemetry heartbeat writes to the server's SQLite while the run does and fails with a
    # 40-line "database is locked" traceback; a setting of the user's wins
    if "PREFECT_SERVER_ANALYTICS_ENABLED" not in os.environ:
        raised["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    # the server's own log (its bookkeeping, e.g. a recorder flush cut short when a run that
    # ends in seconds stops it) is not the run's: quiet unless the user asks for it
    if "PREFECT_SERVER_LOGGING_LEVEL" not in os.environ:
        raised["PREFECT_SERVER_LOGGING_LEVEL"] = "CRITICAL"
    if raised:
        os.environ.update({name: str(value) for name, value in raised.items()})
        refresh_global_settings_context()
    if os.environ.get("PREFECT_SERVER_DATABASE_CONNECTION_URL"):
        return  # the user chose the database
    home = Path(settings.home)
    home.mkdir(parents=True, exist_ok=True)
    lock = open(home / "wansweep-ephemeral.lock", "w")  # noqa: SIM115 (held for the process)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        _held.append(lock)
        return
    except OSError:
        lock.close()
    folder = tempfile.mkdtemp(prefix="wansweep-prefect-")
    atexit.register(shutil.rmtree, folder, True)
    os.environ["PREFECT_SERVER_DATABASE_CONNECTION_URL"] = (
        f"sqlite+aiosqlite:///{folder}/prefect.db"
    )
    refresh_global_settings_context()
    console.print(
        "prefect: another wansweep run uses this machine's ephemeral Prefect database; this "
        "run uses one of its own (its run history is not kept). Set PREFECT_API_URL to a "
        "Prefect server to keep every run's history.",
        markup=False,
        highlight=False,
    )


_held: list = []  # the ephemeral-database lock, held until the process exits

INTERRUPTED = (
    "[yellow]interrupted: in-flight fal requests were cancelled and recorded in the ledger; "
    "run the same command again to finish the sweep[/yellow]"
)


EXIT_SIGNALLED = {2: 130, 15: 143}  # SIGINT, SIGTERM: the shell's 128 + signal number
RECORD_S = 20.0  # the longest a stopped run waits for its jobs to record their cancels
UNWIND_S = 10.0  # ... and then for Prefect to wind down, before it exits anyway


def _stop_on_signals(console) -> list[int]:
    """SIGINT (Ctrl-C, ``kill -INT``) and SIGTERM (a supervisor, ``kill``) stop a run the same
    way, in any state: every waiting job cancels its fal request and records it in its ledger;
    nothing more is submitted; the run exits once they have (or after :data:`RECORD_S`), and
    with it everything it started (the ephemeral Prefect server, the local fal server). Returns
    the list the signal's number is put in."""
    import atexit
    import os
    import signal
    import sys
    import threading
    import time

    received: list[int] = []
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

    def exit_when_recorded(signum: int) -> None:
        from wansweep.run.runtime import active_jobs

        deadline = time.monotonic() + RECORD_S
        while active_jobs() and time.monotonic() < deadline:
            time.sleep(0.05)
        deadline = time.monotonic() + UNWIND_S  # the main thread exits by itself, normally
        while time.monotonic() < deadline:
            time.sleep(0.1)
        console.print(INTERRUPTED)
        sys.stdout.flush()
        atexit._run_exitfuncs()  # Prefect's ephemeral server and our own servers, stopped
        os._exit(EXIT_SIGNALLED[signum])

    def on_signal(signum, frame):
        from wansweep.run.runtime import stop_all

        if received:
            return  # a second signal changes nothing: the first is being carried out
        received.append(signum)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        stop_all()
        threading.Thread(target=exit_when_recorded, args=(signum,), daemon=True).start()
        raise KeyboardInterrupt

    for sig in previous:
        signal.signal(sig, on_signal)
    return received


def run(
    spec: Path = typer.Argument(..., help="Sweep spec (YAML), e.g. configs/quickstart.yaml."),
    manifest: str | None = typer.Option(None, help="Manifest URI; overrides the spec's."),
    store: str | None = typer.Option(None, help="Archive: s3://bucket/prefix or a folder."),
    concurrency: int | None = typer.Option(None, min=1, help="Jobs in flight at once."),
    budget_usd: float | None = typer.Option(
        None,
        "--budget-usd",
        "--budget",
        help="Most USD this run may commit (the spec's budget_usd).",
    ),
    skip_invalid: bool = typer.Option(False, help="Leave invalid rows out instead of stopping."),
    report_dir: Path | None = typer.Option(None, help="Also write the report files here."),
    resubmit_expired: bool = typer.Option(
        False, help="Pay again for jobs whose fal request was lost or whose result expired."
    ),
    resubmit_ambiguous: bool = typer.Option(
        False,
        help="Submit again jobs whose submit answer was lost and that fal's records cannot "
        "settle yet (may pay twice; default: report them as ambiguous).",
    ),
    shards: int = typer.Option(
        0,
        min=0,
        help="Run the jobs as this many child flow runs on the shard deployment's work pool.",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON (for scripts)."),
    global_limits: bool = typer.Option(
        False,
        help="Hold the Prefect global concurrency limit wansweep-<endpoint alias> per request.",
    ),
) -> None:
    """Run a sweep: validate, skip what is archived, generate the rest, archive, report."""
    import json

    from rich.console import Console

    console = Console(soft_wrap=True)  # paths and URLs are never wrapped: they are copied
    from wansweep.errors import CannotRun, InputError
    from wansweep.plan.spec import load_spec

    try:  # a spec that cannot be used ends here, as `wansweep plan` says it: no server started
        load_spec(spec, manifest=manifest, store=store, concurrency=concurrency)
    except InputError as exc:
        raise _fail(console, exc) from None
    server = _use_fal(console)
    _prepare_ephemeral_prefect(console)
    interrupted = _stop_on_signals(console)
    try:
        from flows.sweep import sweep

        try:
            state = sweep(
                str(spec),
                manifest=manifest,
                store=store,
                concurrency=concurrency,
                budget_usd=budget_usd,
                skip_invalid=skip_invalid,
                report_dir=str(report_dir) if report_dir else None,
                # an option not given keeps the spec's setting
                resubmit_expired=resubmit_expired or None,
                resubmit_ambiguous=resubmit_ambiguous or None,
                shards=shards,
                global_limits=global_limits or None,
                return_state=True,
            )
            result = state.result(raise_on_failure=False)
            if isinstance(result, BaseException):
                raise result
        except (InputError, CannotRun) as exc:
            raise _fail(console, exc) from None
        except (KeyboardInterrupt, Exception):
            if not interrupted:
                raise
            console.print(INTERRUPTED)
            raise typer.Exit(EXIT_SIGNALLED[interrupted[0]]) from None
        if as_json:
            print(json.dumps(result, indent=2, default=str))
        else:
            _summary(console, result)
        if result["halted"]:
            raise typer.Exit(3)
        if result["failed"]:
            raise typer.Exit(1)
    finally:
        if server is not None:
            stats = server.stats()
            console.print(
                f"local fal server: {stats['submits_accepted']} submits accepted, "
                f"{stats['stream_connects']} status streams, {stats['status_polls']} status polls, "
                f"{stats['result_fetches']} result fetches",
                markup=False,
                highlight=False,
            )
            server.stop()


def _summary(console, result: dict) -> None:
    """What a run did, and where its files are, in a few lines."""
    outcomes = ", ".join(f"{n} {k}" for k, n in sorted(result["outcomes"].items())) or "nothing"
    lines = [
        f"sweep {result['sweep']}: {result['planned']} jobs planned, {result['already_archived']}"
        f" already archived, {result['ran']} run: {outcomes}",
        f"videos:  {result['videos']}",
    ]
    if result["report"]:  # none when the archive refused it
        lines += [
            f"report:  {result['report']['html']}",
            f"tables:  {result['report']['jobs_csv']} (one row per job)",
            f"index:   {result['index']}",
        ]
    if result["halted"]:
        from wansweep.run.lifecycle import NEXT, UNFINISHED

        left = [(k, n) for k, n in sorted(result["outcomes"].items()) if k in UNFINISHED]
        lines[1:1] = [f"stopped submitting: {result['halted']}"] + [
            f"  {n} {k}: {NEXT[k]}" for k, n in left
        ]
    elif result["failed"]:
        lines.insert(1, f"{result['failed']} jobs not archived: each has a line above saying why")
    console.print("\n".join(lines), markup=False, highlight=False)
