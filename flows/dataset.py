"""Scheduled dataset generation: each run generates only what the archive does not hold yet.

A nightly deployment points it at a manifest that grows (typically on S3). Rows whose jobs
are archived cost nothing; new rows are generated, archived and added to the dataset index.
Invalid new rows are skipped and reported rather than stopping the night's work.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.states import Failed, State

from flows.sweep import sweep
from tasks.export import export_dataset


@flow(name="wansweep-dataset", log_prints=True)
def dataset(
    spec: str,
    manifest: str | None = None,
    store: str | None = None,
    concurrency: int | None = None,
    budget_usd: float | None = None,
    skip_invalid: bool = True,
    export_to: str | None = None,
    export_format: str = "webdataset",
) -> dict[str, Any] | State:
    """Generate the rows of ``manifest`` not yet in the archive at ``store``; update the index;
    with ``export_to``, add the new jobs to that export (new shards only)."""
    state = sweep(
        spec,
        manifest=manifest,
        store=store,
        concurrency=concurrency,
        budget_usd=budget_usd,
        skip_invalid=skip_invalid,
        return_state=True,
    )
    result = state.result(raise_on_failure=False)
    if isinstance(result, BaseException):  # nothing ran (a bad spec, a refused key)
        return state
    get_run_logger().info(
        "dataset %s: %d new jobs run (%s), %d already archived, %d invalid rows skipped; index: %s",
        result["sweep"],
        result["ran"],
        result["outcomes"],
        result["already_archived"],
        result["skipped_rows"],
        result["index"],
    )
    if export_to:  # what was archived is exported, whatever failed beside it
        result["export"] = export_dataset(
            result["store"], export_to, export_format, [result["sweep"]]
        )
    return Failed(message=state.message, data=result) if state.is_failed() else result
