"""The `wansweep` command: the outside face. Prefect is imported only by the commands that run
flows (``run``), never at import time; errors map to exit codes in :func:`_fail` alone."""

from __future__ import annotations

from pathlib import Path

import typer

from wansweep import cli_money
from wansweep.cli_money import _fail
from wansweep.localfal.config import FAULTS

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Wan 2.6 image-to-video sweeps and datasets on fal.ai, with Prefect.",
)


@app.callback()
def _root() -> None:
    """Wan 2.6 image-to-video sweeps and datasets on fal.ai, with Prefect."""


@app.command("fal-server")
def fal_server(
    host: str = typer.Option("127.0.0.1", help="Address to bind (loopback unless told otherwise)."),
    port: int = typer.Option(8443, help="Port; 0 picks a free one (the env file says which)."),
    env_file: Path | None = typer.Option(
        None,
        help="Write the client environment (FAL_KEY, FAL_RUN_HOST, FAL_QUEUE_RUN_HOST, "
        "SSL_CERT_FILE, ...) as KEY=VALUE lines here once the server is ready.",
    ),
    latency: str = typer.Option(
        "demo",
        help="Latency model: zero, demo, realistic, or queue=S,standard=S,flash=S "
        "(inference seconds per second of video), or fixed=S (whole job).",
    ),
    faults: str = typer.Option(
        "",
        help="Fault rates NAME=P (probability 0-1), comma-separated, NAME one of: "
        + ", ".join(FAULTS)
        + "; and retention=S (seconds a result stays fetchable), slow_bytes_per_s=N, "
        "listing_lag=S (seconds before a finished request is listed). "
        "E.g. submit_429=0.1,drop_after_accept=0.05,failed=0.05.",
    ),
    concurrency: int = typer.Option(
        10, min=1, help="Requests IN_PROGRESS at once; the rest queue."
    ),
    media: str = typer.Option(
        "full", help="full: real-size clips; tiny: 64 px clips (benchmarks)."
    ),
    listing: str = typer.Option(
        "documented",
        help="Request listing: documented (as fal documents it: finished requests only, "
        "sorted by end time, faults listing_lag / listing_payloads apply) or cooperative "
        "(queued requests listed at once, payloads as sent).",
    ),
    cancel_running: str = typer.Option(
        "complete",
        help="A cancelled running request: complete (finishes and is billed, as fal allows) "
        "or stop.",
    ),
    clock_offset: float = typer.Option(
        0.0, help="Seconds the server's clock runs ahead (negative: behind) of this machine's."
    ),
    status_stream: str = typer.Option(
        "on", help="on: serve the status stream; 404 or 405: answer that (a server without it)."
    ),
    media_dir: Path | None = typer.Option(None, help="Where rendered clips are kept."),
    state_dir: Path | None = typer.Option(None, help="Where the local CA and certificate live."),
    key: str | None = typer.Option(
        None, help="Require this FAL_KEY (any key is accepted if unset)."
    ),
    fault_seed: int = typer.Option(0, help="Seed of the fault injector (repeatable runs)."),
    quiet: bool = typer.Option(False, help="Do not print the client environment."),
) -> None:
    """Serve fal's queue protocol for both Wan 2.6 image-to-video endpoints, over HTTPS."""
    from wansweep.localfal.config import Faults, Latency, ServerConfig
    from wansweep.localfal.runner import default_state_dir, serve

    try:
        config = ServerConfig(
            latency=Latency.parse(latency),
            faults=Faults.parse(faults),
            concurrency=concurrency,
            media=media,
            fault_seed=fault_seed,
            key=key,
            listing=listing,
            cancel_running=cancel_running,
            clock_offset=clock_offset,
            status_stream=status_stream,
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    serve(
        host,
        port,
        env_file,
        config,
        state_dir or default_state_dir(),
        media_dir,
        announce=not quiet,
    )


def _use_fal(console) -> object | None:
    """Which fal: host variables set -> that server; FAL_KEY alone -> fal.ai; neither -> start ours."""
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
    the ephemeral server gets at least EPHEMERAL_STARTUP_TIMEOUT_S to start and records task
    runs in batches of at least RECORDER_BATCHES."""
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


@app.command()
def run(
    spec: Path = typer.Argument(..., help="Sweep spec (YAML), e.g. configs/quickstart.yaml."),
    manifest: str | None = typer.Option(None, help="Manifest URI; overrides the spec's."),
    store: str | None = typer.Option(None, help="Archive: s3://bucket/prefix or a folder."),
    concurrency: int | None = typer.Option(None, min=1, help="Jobs in flight at once."),
    budget: float | None = typer.Option(None, help="Most USD this run may commit."),
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
    global_limits: bool = typer.Option(
        False,
        help="Hold Prefect global concurrency limits wansweep-standard / wansweep-flash per request.",
    ),
) -> None:
    """Run a sweep: validate, skip what is archived, generate the rest, archive, report."""
    import json
    import os
    import signal
    import sys
    import threading
    import time

    from rich.console import Console

    console = Console()
    server = _use_fal(console)
    _prepare_ephemeral_prefect(console)
    interrupted = []
    previous = signal.getsignal(signal.SIGINT)

    def on_sigint(signum, frame):
        """Ctrl-C: cancel every in-flight fal request, record it, and exit promptly. Prefect's
        own bookkeeping may hang on (in ephemeral mode Ctrl-C stops its server too)."""
        from wansweep.runtime import active_jobs, stop_all

        interrupted.append(True)
        signal.signal(signal.SIGINT, previous)
        stop_all()

        def exit_when_recorded() -> None:
            deadline = time.monotonic() + 30
            while active_jobs() and time.monotonic() < deadline:
                time.sleep(0.05)
            console.print(INTERRUPTED)
            sys.stdout.flush()
            os._exit(130)

        threading.Thread(target=exit_when_recorded, daemon=True).start()
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, on_sigint)
    try:
        from flows.sweep import sweep
        from wansweep.errors import InputError

        try:
            result = sweep(
                str(spec),
                manifest=manifest,
                store=store,
                concurrency=concurrency,
                budget_usd=budget,
                skip_invalid=skip_invalid,
                report_dir=str(report_dir) if report_dir else None,
                resubmit_expired=resubmit_expired,
                resubmit_ambiguous=resubmit_ambiguous,
                shards=shards,
                global_limits=global_limits,
            )
        except InputError as exc:
            raise _fail(console, exc) from None
        except (KeyboardInterrupt, Exception):
            if not interrupted:
                raise
            console.print(INTERRUPTED)
            raise typer.Exit(130) from None
        console.print(json.dumps(result, indent=2, default=str), highlight=False, markup=False)
        console.print(
            f"videos:  {result['videos']}\n"
            f"report:  {result['report']['html']}\n"
            f"tables:  {result['report']['jobs_csv']} (one row per job), {result['report']['summary_csv']}\n"
            f"index:   {result['index']}",
            markup=False,
        )
        if result["failed"]:
            raise typer.Exit(1)
    finally:
        if server is not None:
            stats = server.stats()
            console.print(
                f"local fal server: {stats['submits_accepted']} submits accepted, "
                f"{stats['stream_connects']} status streams, {stats['status_polls']} status polls, "
                f"{stats['result_fetches']} result fetches"
            )
            server.stop()


@app.command("plan")
def plan_cmd(
    spec: Path = typer.Argument(..., help="Sweep spec (YAML)."),
    manifest: str | None = typer.Option(None, help="Manifest URI; overrides the spec's."),
    store: str | None = typer.Option(None, help="Archive to compare with (what it already holds)."),
) -> None:
    """Validate every row and price the sweep; nothing is submitted."""
    from rich.console import Console
    from rich.table import Table

    from wansweep.errors import InputError, OverBudget
    from wansweep.preflight import preflight
    from wansweep.store import open_store
    from wansweep.sweep import DEFAULT_STORE, load_spec

    console = Console()
    try:
        cfg = load_spec(spec, manifest=manifest, store=store)
        checked = preflight(cfg, open_store(cfg.store or DEFAULT_STORE))
    except InputError as exc:
        raise _fail(console, exc) from None
    result, done = checked.plan, checked.archived
    table = Table(title=f"sweep {cfg.name}: {result.rows} rows, {len(result.jobs)} jobs")
    for col in ("arm", "jobs", "video s", "estimated $", "archived", "to run", "to run $"):
        table.add_column(col, justify="left" if col == "arm" else "right")
    arms: dict[str, list] = {}
    for j in result.jobs:
        arms.setdefault(j.arm, []).append(j)
    for arm, jobs in arms.items():
        todo = [j for j in jobs if j.job_key not in done]
        table.add_row(
            arm,
            str(len(jobs)),
            str(sum(j.video_seconds for j in jobs)),
            f"{sum(j.estimated_usd for j in jobs):.2f}",
            str(len(jobs) - len(todo)),
            str(len(todo)),
            f"{sum(j.estimated_usd for j in todo):.2f}",
        )
    todo_all = [j for j in result.jobs if j.job_key not in done]
    table.add_row(
        "total",
        str(len(result.jobs)),
        str(sum(j.video_seconds for j in result.jobs)),
        f"{result.estimated_usd:.2f}",
        str(len(result.jobs) - len(todo_all)),
        str(len(todo_all)),
        f"{sum(j.estimated_usd for j in todo_all):.2f}",
        style="bold",
    )
    console.print(table)
    console.print(
        f"inputs: {result.media_fetched} downloaded and checked, {result.media_reused} "
        "unchanged since an earlier plan checked them (media index)"
    )
    if cfg.budget_usd is not None:
        console.print(f"budget: ${cfg.budget_usd:.2f}")
    for p in result.problems:
        console.print(
            f"{p.severity}: {p}",
            style="red" if p.severity == "error" else "yellow",
            markup=False,
            highlight=False,
        )
    if result.errors:
        console.print(f"[red]{len(result.errors)} error(s): a run would submit nothing[/red]")
    for blocked in checked.blocking:
        if isinstance(blocked, OverBudget):  # row problems are listed above
            console.print(str(blocked), style="red", markup=False, highlight=False)
    if checked.blocking:
        raise typer.Exit(2)


@app.command()
def report(
    store: str = typer.Argument(..., help="Archive URI (s3://bucket/prefix or a folder)."),
    sweep: str | None = typer.Option(
        None, help="Sweep name (default: every sweep in the archive)."
    ),
    by: list[str] = typer.Option([], help="Group the summary by these columns (default: arm)."),
    out: Path | None = typer.Option(None, help="Also write the report files to this folder."),
) -> None:
    """Build the report of a sweep from its archive alone (no Prefect server needed)."""
    from rich.console import Console

    from wansweep.errors import InputError
    from wansweep.report import sweeps, write_report
    from wansweep.store import open_store
    from wansweep.sweep import check_sweep_name

    console = Console()
    archive = open_store(store)
    try:
        names = [check_sweep_name(sweep)] if sweep else sweeps(archive)
    except InputError as exc:
        raise _fail(console, exc) from None
    if not names:
        console.print(f"{archive.uri} holds no sweep", style="red", markup=False)
        raise typer.Exit(2)
    for name in names:
        _, summ, files = write_report(archive, name, (out / name) if out else None, by or None)
        console.print(summ.to_string(index=False), markup=False, highlight=False)
        console.print(f"report of {name}: {files.jobs_csv}", markup=False)


@app.command()
def index(
    store: str = typer.Argument(..., help="Archive URI (s3://bucket/prefix or a folder)."),
) -> None:
    """Rebuild the dataset indexes (index/all.parquet and sweeps/<name>/index.parquet) from the sidecars."""
    from rich.console import Console

    from wansweep.report import rebuild_indexes
    from wansweep.store import open_store

    archive = open_store(store)
    counts = rebuild_indexes(archive)
    console = Console()
    console.print(f"{archive.url('index/all.parquet')}: {counts.pop('all')} jobs")
    for name, n in counts.items():
        console.print(f"{archive.url(f'sweeps/{name}/index.parquet')}: {n} jobs")


@app.command()
def review(
    store: str = typer.Argument(..., help="Archive URI (s3://bucket/prefix or a folder)."),
    sweep: str = typer.Option(..., help="Sweep name."),
    rater: str = typer.Option("rater", help="Your name on the votes (a-z, 0-9, '-', '_')."),
    host: str = typer.Option("127.0.0.1", help="Address to serve on (loopback by default)."),
    port: int = typer.Option(8790, min=0, max=65535, help="Port (0: any free one)."),
) -> None:
    """Blind side-by-side review of a sweep's pairs; votes go to the archive as cast."""
    import time

    from rich.console import Console

    from wansweep.errors import InputError
    from wansweep.report import jobs_frame
    from wansweep.review import Review, review_pairs, serve
    from wansweep.store import open_store
    from wansweep.sweep import check_sweep_name

    console = Console()
    archive = open_store(store)
    try:
        name = check_sweep_name(sweep)
        pairs = review_pairs(jobs_frame(archive, name))
        session = Review(archive, name, pairs, rater)
    except (InputError, ValueError, FileNotFoundError) as exc:
        console.print(f"error: {exc}", style="red", markup=False)
        raise typer.Exit(2) from None
    server = serve(session, host, port)
    bound_host, bound_port = server.server_address[:2]
    if host not in ("127.0.0.1", "localhost", "::1"):
        console.print(f"warning: serving on {host}: anyone who reaches it can vote", style="yellow")
    console.print(
        f"review of {name}: {session.total} pairs, {session.voted} voted by {rater}; "
        f"open http://{bound_host}:{bound_port}/ (Ctrl-C to stop)",
        markup=False,
    )
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.shutdown()


@app.command()
def export(
    store: str = typer.Argument(..., help="Archive URI (s3://bucket/prefix or a folder)."),
    out: str = typer.Option(..., help="Where the dataset goes (a folder or s3://...)."),
    format: str = typer.Option(..., "--format", help="webdataset (tar shards) or hf (parquet)."),
    sweep: list[str] = typer.Option([], help="Sweep(s) to export."),
    all_sweeps: bool = typer.Option(False, "--all", help="Every sweep in the archive."),
    arm: list[str] = typer.Option([], help="Only these arms."),
    minimum: list[str] = typer.Option([], "--min", help="COLUMN=NUMBER: keep rows at or above."),
    maximum: list[str] = typer.Option([], "--max", help="COLUMN=NUMBER: keep rows at or below."),
    shard_mb: float = typer.Option(500.0, min=1, help="Target shard size (MB)."),
    push: str | None = typer.Option(None, help="hf only: upload to this Hub dataset repo."),
) -> None:
    """Export archived videos and their metadata as WebDataset shards or a Hugging Face
    dataset; again later, only new jobs are added (as new shards)."""
    from rich.console import Console

    from wansweep.errors import InputError, WansweepError
    from wansweep.export import Filters, local_copy, parse_bounds
    from wansweep.export import export as run_export
    from wansweep.export import push as push_to_hub
    from wansweep.store import open_store
    from wansweep.sweep import check_sweep_name

    console = Console()
    try:
        if bool(sweep) == all_sweeps:
            raise InputError("give --sweep NAME (repeatable) or --all")
        if push and format != "hf":
            raise InputError("--push uploads hf exports only")
        filters = Filters(
            [check_sweep_name(s) for s in sweep] or None,
            arm,
            parse_bounds(minimum),
            parse_bounds(maximum),
        )
        result = run_export(open_store(store), out, format, filters, shard_mb)
    except WansweepError as exc:
        raise _fail(console, exc) from None
    mb = result.bytes_written / 2**20
    console.print(
        f"{result.out}: {result.new_rows} new rows in {len(result.new_shards)} new shard(s) "
        f"({mb:.1f} MB, {mb / max(result.seconds, 1e-9):.1f} MB/s); {result.total_rows} rows in all",
        markup=False,
    )
    if push:
        folder, tmp = local_copy(out)
        console.print(f"pushed: {push_to_hub(folder, push)}", markup=False)
        if tmp is not None:
            tmp.cleanup()


app.command()(cli_money.pricing)
app.command()(cli_money.spend)
app.command()(cli_money.reconcile)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
