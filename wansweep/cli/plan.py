"""`wansweep plan`: every row checked and the sweep priced before anything is paid; with
``--check``, what a run needs before its first submit too."""

from __future__ import annotations

from pathlib import Path

import typer

from wansweep.cli.money import _fail


def plan(
    spec: Path = typer.Argument(..., help="Sweep spec (YAML)."),
    manifest: str | None = typer.Option(None, help="Manifest URI; overrides the spec's."),
    store: str | None = typer.Option(None, help="Archive to compare with (what it already holds)."),
    check: bool = typer.Option(
        False,
        help="Also check what a run needs before its first submit: the archive takes a write "
        "(a small probe, removed) and fal answers your key (its pricing API, free).",
    ),
) -> None:
    """Validate every row and price the sweep; nothing is submitted."""
    from rich.console import Console
    from rich.table import Table

    from wansweep.errors import CannotRun, InputError, OverBudget
    from wansweep.plan.preflight import preflight
    from wansweep.plan.spec import DEFAULT_STORE, load_spec
    from wansweep.run.checks import check_fal, check_store
    from wansweep.store import open_store

    console = Console(soft_wrap=True)
    try:
        sweep_spec = load_spec(spec, manifest=manifest, store=store)
        archive = open_store(sweep_spec.store or DEFAULT_STORE)
        if check:
            check_store(archive)
        checked = preflight(sweep_spec, archive)
    except (InputError, CannotRun) as exc:
        raise _fail(console, exc) from None
    result, done = checked.plan, checked.archived
    _print_problems(console, result.problems)
    for note in result.notes:
        console.print(f"note: {note}", markup=False, highlight=False)
    table = Table(title=f"sweep {sweep_spec.name}: {result.rows} rows, {len(result.jobs)} jobs")
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
    if sweep_spec.budget_usd is not None:
        console.print(f"budget: ${sweep_spec.budget_usd:.2f}")
    if result.errors:
        console.print(f"[red]{len(result.errors)} error(s): a run would submit nothing[/red]")
    for blocked in checked.blocking:
        if isinstance(blocked, OverBudget):  # row problems are listed above
            console.print(str(blocked), style="red", markup=False, highlight=False)
    if checked.blocking:
        raise typer.Exit(2)
    if check and checked.todo:
        try:
            check_fal(archive, {j.endpoint for j in checked.todo}, warn=console.print)
        except CannotRun as exc:
            raise _fail(console, exc) from None
        console.print(f"checked: {archive.uri} takes writes; fal answers this key")


SHOWN_PER_RULE = 20  # a rule broken by 10,000 rows is said 20 times and counted


def _print_problems(console, problems) -> None:
    """Errors first, then warnings, at most SHOWN_PER_RULE of each rule, then a count of each
    rule (an animated input, a damaged EXIF block) so that none is lost in the scroll."""
    problems = sorted(problems, key=lambda p: p.severity != "error")  # stable: rows in order
    counts: dict[tuple[str, str], int] = {}
    for p in problems:
        seen = counts[(p.severity, p.rule)] = counts.get((p.severity, p.rule), 0) + 1
        if seen <= SHOWN_PER_RULE:
            console.print(
                f"{p.severity}: {p}",
                style="red" if p.severity == "error" else "yellow",
                markup=False,
                highlight=False,
            )
    for (severity, rule), n in counts.items():
        if n > SHOWN_PER_RULE:
            console.print(f"... and {n - SHOWN_PER_RULE:,} more {severity}s of rule {rule}")
    if counts:
        console.print(
            "problems by rule: " + ", ".join(f"{n:,} {rule}" for (_, rule), n in counts.items()),
            markup=False,
            highlight=False,
        )
