"""`wansweep endpoints` and `wansweep pricing`: the endpoint profiles (configs/endpoints, and
WANSWEEP_ENDPOINTS), their prices, and how they compare with what fal publishes now."""

from __future__ import annotations

import typer

from wansweep.cli.money import _fail


def _fal(console):
    from wansweep.fal import FalConfig, FalQueue
    from wansweep.fal.policy import RETRIES

    try:
        return FalQueue(FalConfig.from_env(), attempts=RETRIES.command_tries)
    except RuntimeError as exc:
        raise _fail(console, exc) from None


def _price(p) -> str:
    """A profile's pricing in one phrase."""
    unit = "s" if p.pricing.unit == "second" else "video"

    def when(k, v) -> str:
        if k == "generate_audio":
            return f"audio {'on' if str(v).lower() == 'true' else 'off'}"
        return str(v) if k == "resolution" else f"{k} {v}"

    rates = ", ".join(
        f"${r.usd:g}/{unit}"
        + (f" ({', '.join(when(k, v) for k, v in r.when.items())})" if r.when else "")
        for r in p.pricing.rates
    )
    base = p.pricing.base
    return f"${base['usd']:g} for {base['seconds']:g} s, then {rates}" if base else rates


def endpoints(
    check: bool = typer.Option(
        False, "--check", help="Compare each profile with fal's live OpenAPI document (FAL_KEY)."
    ),
) -> None:
    """List the endpoints a spec may name (by alias or id): durations, resolutions or aspect
    ratios, audio, seed and price, each from its profile."""
    from rich.console import Console
    from rich.table import Table

    from wansweep.errors import WansweepError
    from wansweep.plan.endpoints import registry

    console = Console(soft_wrap=True)
    try:
        profiles = registry().profiles
    except WansweepError as exc:
        raise _fail(console, exc) from None
    if not check:
        table = Table(title="fal endpoints (configs/endpoints; yours in WANSWEEP_ENDPOINTS)")
        for col in ("alias", "id", "seconds", "resolution / aspect", "audio", "seed", "price"):
            table.add_column(col, overflow="fold")
        for p in profiles:
            shape = [
                p.input[f].allowed() for s in ("resolution", "aspect_ratio") if (f := p.field_of(s))
            ]
            audio = [s for s in ("generate_audio", "audio") if s in p.map]
            table.add_row(
                p.alias,
                p.id,
                ", ".join(p.seconds_allowed()),
                " / ".join(shape) or "-",
                ", ".join(audio) or "-",
                "yes" if p.takes_seed else "no: seeds are replicates",
                _price(p),
            )
        console.print(table)
        return
    from wansweep.plan.openapi import differences

    fal, differ = _fal(console), 0
    try:
        for p in profiles:
            try:
                found = differences(p, fal.openapi(p.id))
            except (WansweepError, ValueError) as exc:
                found = [f"could not compare: {exc}"]
            differ += bool(found)
            console.print(
                f"{p.alias} ({p.id}): " + ("agrees with fal" if not found else "differs"),
                markup=False,
            )
            for line in found:
                console.print(f"  - {line}", markup=False, highlight=False)
    finally:
        fal.close()
    if differ:
        console.print(
            f"{differ} profile(s) differ from fal's documents: update them (with the source "
            "and date) before paying for requests fal may refuse or price otherwise",
            markup=False,
        )
        raise typer.Exit(1)


def pricing(
    refresh: bool = typer.Option(False, help="Ask fal's pricing API (needs FAL_KEY) and compare."),
) -> None:
    """Each endpoint's price from its profile; with --refresh, fal's pricing API beside it."""
    from rich.console import Console
    from rich.table import Table

    from wansweep.plan.endpoints import registry

    console = Console(soft_wrap=True)
    profiles = registry().profiles
    live: dict = {}
    if refresh:
        fal = _fal(console)
        try:
            live = fal.prices([p.id for p in profiles])
        finally:
            fal.close()
    table = Table(title="USD per request, from each endpoint's profile")
    for col in ("alias", "price", "source", "checked") + (("fal API now",) if refresh else ()):
        table.add_column(col, overflow="fold")
    for p in profiles:
        cells = [p.alias, _price(p), p.pricing.source or p.sources[-1], p.checked]
        if refresh:
            now = live.get(p.id)
            cells.append(f"{now['unit_price']} per {now['unit']}" if now else "not listed")
        table.add_row(*cells)
    console.print(table)
    if refresh:
        console.print(
            "The profiles are not rewritten: fal's API gives one unit price per endpoint, a "
            "profile one per resolution or audio setting. Update configs/endpoints by hand, "
            "with source and date.",
            markup=False,
        )
