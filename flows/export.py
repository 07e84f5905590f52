"""The export flow: publish an archive (or some of its sweeps) as WebDataset shards or a
Hugging Face dataset folder; run again, it adds only what is new."""

from __future__ import annotations

from prefect import flow

from tasks.export import export_dataset
from tasks.secrets import load_secrets


@flow(name="wansweep-export", log_prints=True)
def export(
    store: str,
    out: str,
    format: str = "webdataset",
    sweeps: list[str] | None = None,
    arms: list[str] | None = None,
    minimum: dict[str, float] | None = None,
    maximum: dict[str, float] | None = None,
    shard_mb: float = 500.0,
) -> dict:
    """Export archived jobs of ``store`` to ``out`` (see wansweep.results.export for the formats)."""
    load_secrets()
    return export_dataset(store, out, format, sweeps, arms, minimum, maximum, shard_mb)
