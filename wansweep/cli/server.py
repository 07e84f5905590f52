"""`wansweep fal-server`: the local fal-compatible server in the foreground."""

from __future__ import annotations

from pathlib import Path

import typer

from wansweep.localfal.config import FAULTS


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
