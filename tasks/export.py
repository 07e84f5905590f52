"""The export task: an archive's videos and metadata as training-ready shards."""

from __future__ import annotations

from dataclasses import asdict

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from wansweep.results.export import Filters, export
from wansweep.store import open_store


@task(name="export", cache_policy=NO_CACHE, persist_result=False)
def export_dataset(
    store_uri: str,
    out: str,
    fmt: str = "webdataset",
    sweeps: list[str] | None = None,
    arms: list[str] | None = None,
    minimum: dict[str, float] | None = None,
    maximum: dict[str, float] | None = None,
    shard_mb: float = 500.0,
) -> dict:
    filters = Filters(sweeps, arms or [], minimum or {}, maximum or {})
    result = export(open_store(store_uri), out, fmt, filters, shard_mb)
    line = (
        f"export to {result.out}: {result.new_rows} new rows in {len(result.new_shards)} new "
        f"shard(s); {result.total_rows} rows in all"
    )
    get_run_logger().info(line)
    try:
        from prefect.artifacts import create_markdown_artifact

        create_markdown_artifact(
            key="wansweep-export",
            markdown=f"{line}\n\nformat `{fmt}`; shards: "
            + (", ".join(f"`{s}`" for s in result.new_shards) or "none new"),
            description=f"Export to {result.out}",
        )
    except Exception as exc:  # an artifact is a view; the export itself is written
        get_run_logger().warning("could not publish the export's artifact: %s", exc)
    return asdict(result)
