"""The report flow: rebuild a sweep's report from its archive (any archive, any age)."""

from __future__ import annotations

from prefect import flow

from tasks.report import build_report
from tasks.secrets import load_secrets
from wansweep.results.report import sweeps
from wansweep.store import open_store


@flow(name="wansweep-report", log_prints=True)
def report(store: str, sweep: str | None = None, out_dir: str | None = None) -> dict:
    """Write the report of one sweep (or of every sweep) in the archive at ``store``."""
    load_secrets()
    names = [sweep] if sweep else sweeps(open_store(store))
    return {name: build_report(store, name, out_dir) for name in names}
