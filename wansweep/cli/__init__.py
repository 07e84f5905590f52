"""The `wansweep` command: the outside face, one module per group of commands.

- :mod:`.run`      ``run`` (a sweep; Prefect imported only when a flow runs)
- :mod:`.plan`     ``plan`` (every row checked and priced; ``--check``: the store and fal too)
- :mod:`.archive`  ``report``, ``index``, ``review``, ``export``, ``verify``
- :mod:`.endpoints` ``endpoints`` (the profiles; ``--check``: against fal's documents), ``pricing``
- :mod:`.money`    ``spend``, ``reconcile``; the one mapping of errors to exit codes
- :mod:`.server`   ``fal-server``

The CLI is outside the core's rules: it may import flows (lazily) and every package.
"""

from __future__ import annotations

import typer

from wansweep.cli import archive, endpoints, money, plan, run, server

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Image-to-video sweeps and datasets on fal.ai (Wan, Kling, Veo, LTX, Seedance, Hailuo), "
    "with Prefect.",
)


@app.callback()
def _root() -> None:
    """Image-to-video sweeps and datasets on fal.ai, with Prefect."""


app.command("run")(run.run)
app.command("plan")(plan.plan)
app.command("report")(archive.report)
app.command("index")(archive.index)
app.command("review")(archive.review)
app.command("export")(archive.export)
app.command("verify")(archive.verify)
app.command("endpoints")(endpoints.endpoints)
app.command("pricing")(endpoints.pricing)
app.command("spend")(money.spend)
app.command("reconcile")(money.reconcile)
app.command("fal-server")(server.fal_server)


def main() -> None:
    app()
