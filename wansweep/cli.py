"""The `wansweep` command."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Wan 2.6 image-to-video sweeps and datasets on fal.ai, with Prefect.")


@app.callback()
def _root() -> None:
    """Wan 2.6 image-to-video sweeps and datasets on fal.ai, with Prefect."""


@app.command("fal-server")
def fal_server(
    host: str = typer.Option("127.0.0.1", help="Address to bind (loopback unless told otherwise)."),
    port: int = typer.Option(8443, help="Port; 0 picks a free one (the env file says which)."),
    env_file: Optional[Path] = typer.Option(
        None, help="Write the client environment (FAL_KEY, FAL_RUN_HOST, FAL_QUEUE_RUN_HOST, "
                   "SSL_CERT_FILE, ...) as KEY=VALUE lines here once the server is ready."),
    latency: str = typer.Option(
        "demo", help="Latency model: zero, demo, realistic, or queue=S,standard=S,flash=S "
                     "(inference seconds per second of video), or fixed=S (whole job)."),
    faults: str = typer.Option(
        "", help="Fault rates, e.g. submit_429=0.1,submit_5xx=0.05,drop_after_accept=0.05,"
                 "failed=0.05,status_429=0.1,status_5xx=0.05,result_5xx=0.05,download_fail=0.05,"
                 "download_slow=0.1,retention=360 (seconds a result stays fetchable)."),
    concurrency: int = typer.Option(10, min=1, help="Requests IN_PROGRESS at once; the rest queue."),
    media: str = typer.Option("full", help="full: real-size clips; tiny: 64 px clips (benchmarks)."),
    media_dir: Optional[Path] = typer.Option(None, help="Where rendered clips are kept."),
    state_dir: Optional[Path] = typer.Option(None, help="Where the local CA and certificate live."),
    key: Optional[str] = typer.Option(None, help="Require this FAL_KEY (any key is accepted if unset)."),
    fault_seed: int = typer.Option(0, help="Seed of the fault injector (repeatable runs)."),
    quiet: bool = typer.Option(False, help="Do not print the client environment."),
) -> None:
    """Serve fal's queue protocol for both Wan 2.6 image-to-video endpoints, over HTTPS."""
    from wansweep.localfal.config import Faults, Latency, ServerConfig
    from wansweep.localfal.runner import default_state_dir, serve

    if media not in ("full", "tiny"):
        raise typer.BadParameter("--media must be full or tiny")
    try:
        config = ServerConfig(latency=Latency.parse(latency), faults=Faults.parse(faults),
                              concurrency=concurrency, media=media, fault_seed=fault_seed, key=key)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    serve(host, port, env_file, config, state_dir or default_state_dir(), media_dir,
          announce=not quiet)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
