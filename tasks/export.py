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
    get_run_logger().info(
        "export to %s: %d new rows in %d new shard(s); %d rows in all",
        result.out,
        result.new_rows,
        len(result.new_shards),
        result.total_rows,
    )
    return asdict(result)
