"""`wansweep pricing`, `spend` and `reconcile` (what sweeps cost and what fal holds), and the
one mapping of errors to exit codes; registered on the app in :mod:`wansweep.cli`."""

from __future__ import annotations

import typer


def _fail(console, exc: BaseException) -> typer.Exit:
    """Print a wansweep error verbatim (never as markup) and give its exit code."""
    from wansweep.errors import exit_code

    console.print(str(exc), style="red", markup=False, highlight=False)
    return typer.Exit(exit_code(exc))


def pricing(
    refresh: bool = typer.Option(False, help="Ask fal's pricing API (needs FAL_KEY) and compare."),
) -> None:
    """Show the price table (configs/pricing.yaml) and, with --refresh, what fal's API says now."""
    from rich.console import Console
    from rich.table import Table

    from wansweep.plan import schema
    from wansweep.plan.pricing import PriceTable

    console = Console()
    table = PriceTable.load()
    live: dict = {}
    if refresh:
        from wansweep.fal import FalConfig, FalQueue
        from wansweep.fal.policy import RETRIES

        try:
            fal = FalQueue(FalConfig.from_env(), attempts=RETRIES.command_tries)
        except RuntimeError as exc:
            console.print(f"[red]{exc}[/red]")
            raise typer.Exit(2) from None
        live = fal.prices(list(schema.ENDPOINTS))
        fal.close()
    out = Table(title=f"USD per second of video ({table.path})")
    for col in ("endpoint", "720p", "1080p", "source", "as of") + (
        ("fal API now",) if refresh else ()
    ):
        out.add_column(col)
    for endpoint in schema.ENDPOINTS:
        row = table.prices.get(endpoint, {})
        cells = [
            endpoint,
            str(row.get("720p")),
            str(row.get("1080p")),
            str(row.get("source", "")),
            str(row.get("as_of", "")),
        ]
        if refresh:
            p = live.get(endpoint)
            cells.append(f"{p['unit_price']} per {p['unit']}" if p else "not listed")
        out.add_row(*cells)
    console.print(out)
    if refresh:
        console.print(
            "The table is not rewritten: the API gives one unit price per endpoint, the "
            "table one per resolution. Update configs/pricing.yaml by hand, with source and date."
        )


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
