"""`wansweep spend` and `reconcile` (what sweeps cost and what fal holds), and the
one mapping of errors to exit codes; registered on the app in :mod:`wansweep.cli`."""

from __future__ import annotations

import typer


def _fail(console, exc: BaseException) -> typer.Exit:
    """Print a wansweep error verbatim (never as markup) and give its exit code."""
    from wansweep.errors import exit_code

    console.print(str(exc), style="red", markup=False, highlight=False)
    return typer.Exit(exit_code(exc))


def spend(
    store: str = typer.Argument(..., help="Archive URI (s3://bucket/prefix or a folder)."),
    sweep: str | None = typer.Option(None, help="Sweep name (default: every sweep)."),
) -> None:
    """Compare a sweep's billed, likely and upper-bound spend with fal's usage API."""
    from rich.console import Console

    from wansweep.errors import WansweepError
    from wansweep.fal import FalConfig, FalQueue
    from wansweep.fal.policy import RETRIES
    from wansweep.results.report import sweeps
    from wansweep.results.spend import compare_spend
    from wansweep.store import open_store

    console = Console()
    archive = open_store(store)
    try:
        fal = FalQueue(FalConfig.from_env(), attempts=RETRIES.command_tries)
    except RuntimeError as exc:
        raise _fail(console, exc) from None
    try:
        for name in [sweep] if sweep else sweeps(archive):
            check = compare_spend(archive, name, fal)
            console.print(f"sweep {name}", style="bold", markup=False)
            console.print(check.table.to_string(index=False), markup=False, highlight=False)
            console.print(check.note, markup=False, highlight=False)
    except WansweepError as exc:
        raise _fail(console, exc) from None
    finally:
        fal.close()


def reconcile(
    store: str = typer.Argument(..., help="Archive URI (s3://bucket/prefix or a folder)."),
    settle_after: float = typer.Option(
        8100.0, help="Seconds after a lost submit when fal's records are complete for it."
    ),
) -> None:
    """Settle jobs whose submit answer was lost, through fal's own records; pays nothing."""
    from rich.console import Console

    from wansweep.errors import WansweepError
    from wansweep.fal import FalConfig, FalQueue
    from wansweep.fal.policy import RETRIES
    from wansweep.run.reconcile import reconcile_store
    from wansweep.store import open_store

    console = Console()
    try:
        fal = FalQueue(FalConfig.from_env(), attempts=RETRIES.command_tries)
        counts = reconcile_store(open_store(store), fal, settle_after)
    except (RuntimeError, WansweepError) as exc:
        raise _fail(console, exc) from None
    console.print(
        f"found at fal (a run archives them without paying): {counts['found']}; "
        f"never accepted (a run submits them again): {counts['absent']}; "
        f"still ambiguous: {counts['ambiguous']}",
        markup=False,
    )
