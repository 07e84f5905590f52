"""`wansweep report`, `index`, `review`, `export` and `verify`: what an archive holds, read back."""

from __future__ import annotations

from pathlib import Path

import typer

from wansweep.cli.money import _fail

SHOWN = ["arm", "jobs", "succeeded", "failed", "cost_usd", "wall_p50", "first_frame_similarity"]


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

    from wansweep.errors import CannotRun, InputError
    from wansweep.results.report import LOST, sweeps, write_report
    from wansweep.store import open_store
    from wansweep.store.layout import check_sweep_name

    console = Console(soft_wrap=True)
    archive = open_store(store)
    try:
        names = [check_sweep_name(sweep)] if sweep else sweeps(archive)
    except InputError as exc:
        raise _fail(console, exc) from None
    if not names:
        console.print(f"{archive.uri} holds no sweep", style="red", markup=False)
        raise typer.Exit(2)
    for name in names:
        try:
            frame, summ, files = write_report(
                archive, name, (out / name) if out else None, by or None
            )
        except CannotRun as exc:  # an archive that refuses writes: one line, no traceback
            raise _fail(console, exc) from None
        shown = [c for c in [*(by or ["arm"]), *SHOWN[1:]] if c in summ.columns]
        console.print(f"sweep {name}", style="bold", markup=False)
        console.print(summ[shown].to_string(index=False), markup=False, highlight=False)
        console.print(
            f"report: {files.html}\ntables: {files.jobs_csv} (one row per job), "
            f"{files.summary_csv} (every column above and more)",
            markup=False,
            highlight=False,
        )
        if (lost := int((frame["status"] == LOST).sum())) > 0:
            console.print(
                f"{lost} job(s) lost their video from the archive (sidecars kept): run the "
                "sweep again to fetch them from fal; `wansweep verify` checks every video",
                style="yellow",
                markup=False,
            )


def index(
    store: str = typer.Argument(..., help="Archive URI (s3://bucket/prefix or a folder)."),
) -> None:
    """Rebuild the dataset indexes (index/all.parquet and sweeps/<name>/index.parquet) from the sidecars."""
    from rich.console import Console

    from wansweep.results.report import rebuild_indexes
    from wansweep.store import open_store
    from wansweep.store.layout import INDEX_KEY, SWEEP_INDEX, sweep_file

    archive = open_store(store)
    counts = rebuild_indexes(archive)
    console = Console()
    console.print(f"{archive.url(INDEX_KEY)}: {counts.pop('all')} jobs")
    for name, n in counts.items():
        console.print(f"{archive.url(sweep_file(name, SWEEP_INDEX))}: {n} jobs")


def review(
    store: str = typer.Argument(..., help="Archive URI (s3://bucket/prefix or a folder)."),
    sweep: str = typer.Option(..., help="Sweep name."),
    rater: str = typer.Option("rater", help="Your name on the votes (a-z, 0-9, '-', '_')."),
    host: str = typer.Option("127.0.0.1", help="Address to serve on (loopback by default)."),
    port: int = typer.Option(0, min=0, max=65535, help="Port (0, the default: a free one)."),
    allow_host: list[str] = typer.Option(
        [], help="Another name the page may be reached by (e.g. behind a proxy); repeatable."
    ),
) -> None:
    """Blind side-by-side review of a sweep's pairs; votes go to the archive as cast."""
    import time

    from rich.console import Console

    from wansweep.errors import InputError
    from wansweep.results.report import jobs_frame
    from wansweep.results.review import Review, review_pairs
    from wansweep.results.review_server import serve
    from wansweep.store import open_store
    from wansweep.store.layout import check_sweep_name

    console = Console()
    archive = open_store(store)
    try:
        name = check_sweep_name(sweep)
        pairs = review_pairs(jobs_frame(archive, name))
        session = Review(archive, name, pairs, rater)
    except (InputError, ValueError, FileNotFoundError) as exc:
        console.print(f"error: {exc}", style="red", markup=False)
        raise typer.Exit(2) from None
    try:
        server = serve(session, host, port, tuple(allow_host))
    except OSError as exc:
        console.print(f"error: cannot serve on {host}:{port} ({exc})", style="red", markup=False)
        raise typer.Exit(2) from None
    if server.url_token:
        console.print(
            f"serving on {host}: the URL below carries a secret token; share it only with the "
            "raters",
            style="yellow",
            markup=False,
        )
    # the URL whole on one line, never wrapped: it is clicked or copied
    print(
        f"review of {name}: {session.total} pairs, {session.voted} voted by {rater}; "
        f"open {server.url} (Ctrl-C to stop)",
        flush=True,
    )
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.shutdown()


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
    skip_lost: bool = typer.Option(
        False, help="Leave out jobs whose video the archive lost (default: stop, naming them)."
    ),
) -> None:
    """Export archived videos and their metadata as WebDataset shards or a Hugging Face
    dataset; again later, only new jobs are added (as new shards)."""
    from rich.console import Console

    from wansweep.errors import InputError, WansweepError
    from wansweep.results.export import Filters, local_copy, parse_bounds
    from wansweep.results.export import export as run_export
    from wansweep.results.export import push as push_to_hub
    from wansweep.store import open_store
    from wansweep.store.layout import check_sweep_name

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
        result = run_export(open_store(store), out, format, filters, shard_mb, skip_lost)
    except WansweepError as exc:
        raise _fail(console, exc) from None
    mb = result.bytes_written / 2**20
    console.print(
        f"{result.out}: {result.new_rows} new rows in {len(result.new_shards)} new shard(s) "
        f"({mb:.1f} MB, {mb / max(result.seconds, 1e-9):.1f} MB/s); {result.total_rows} rows in all",
        markup=False,
    )
    if result.lost:
        console.print(
            f"left out: {len(result.lost)} job(s) whose video the archive lost: "
            + ", ".join(result.lost[:10]),
            style="yellow",
            markup=False,
        )
    if push:
        folder, tmp = local_copy(out)
        console.print(f"pushed: {push_to_hub(folder, push)}", markup=False)
        if tmp is not None:
            tmp.cleanup()


def verify(
    store: str = typer.Argument(..., help="Archive URI (s3://bucket/prefix or a folder)."),
    sweep: str | None = typer.Option(None, help="Only this sweep's jobs (default: every job)."),
    repair: bool = typer.Option(
        False,
        help="Set what is wrong aside (under jobs/<key>/damaged/, kept), so that the next run "
        "of the sweep fetches those videos from fal again, without paying while fal holds them.",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the findings as JSON."),
) -> None:
    """Check the archive against itself: every video against its sidecar (there, size,
    SHA-256, every byte read) and every ledger entry against the sidecars. Exit 0: all whole;
    1: problems found (each named)."""
    import json

    from rich.console import Console

    from wansweep.errors import WansweepError
    from wansweep.results.verify import verify as run_verify
    from wansweep.store import open_store
    from wansweep.store.layout import check_sweep_name

    console = Console(soft_wrap=True, stderr=as_json)
    last = [0.0]

    def progress(done: int, total: int) -> None:
        import time

        if done == total or time.monotonic() - last[0] > 5:  # a line every 5 s at most
            last[0] = time.monotonic()
            console.print(f"checked {done:,} of {total:,} jobs", markup=False, highlight=False)

    try:
        archive = open_store(store)
        result = run_verify(archive, check_sweep_name(sweep) if sweep else None, repair, progress)
    except WansweepError as exc:
        raise _fail(console, exc) from None
    if as_json:
        findings = [
            {"job_key": f.job_key, "found": str(f.found), "detail": f.detail}
            for f in result.findings
        ]
        print(
            json.dumps(
                {"jobs": result.jobs, "findings": findings, "set_aside": result.set_aside}, indent=2
            )
        )
    else:
        for f in result.findings:
            style = "red" if f.is_problem else "yellow"
            console.print(str(f), style=style, markup=False, highlight=False)
        console.print(
            f"{archive.uri}: {result.jobs:,} archived jobs, {result.videos_read:,} videos read "
            f"({result.bytes_read / 2**20:,.1f} MB), {result.ledger_entries:,} ledger entries; "
            f"{len(result.problems)} problem(s)",
            markup=False,
            highlight=False,
        )
        if result.set_aside:
            console.print(
                f"set aside {len(result.set_aside)} file(s) under jobs/<key>/damaged/; run the "
                "sweep again to fetch those videos from fal (no new payment while fal holds "
                "them; --resubmit-expired pays again for any it no longer holds)",
                markup=False,
                highlight=False,
            )
        elif result.problems:
            console.print(
                "run the sweep again to repair them (a missing video is fetched from fal); "
                "--repair first sets aside videos and sidecars that are wrong",
                markup=False,
                highlight=False,
            )
    if result.problems:
        raise typer.Exit(1)
