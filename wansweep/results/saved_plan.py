"""What a run leaves for its report before any job runs: the plan (every job, priced), the
rows left out, and how the report judges the sweep (its primary measure)."""

from __future__ import annotations

from typing import Any

import pandas as pd

from wansweep.plan.endpoints import profile
from wansweep.plan.spec import endpoint_alias
from wansweep.results.index import put_parquet
from wansweep.store import Store
from wansweep.store.layout import ANALYSIS_FILE, PLAN_FILE, SKIPPED_FILE, public_uri, sweep_file


def save_plan(
    store: Store,
    sweep: str,
    jobs: list[Any],
    skipped: list[Any] = (),
    primary_measure: str | None = None,
) -> None:
    """The plan the report is built against, and how it judges the sweep."""
    store.put_json(sweep_file(sweep, ANALYSIS_FILE), {"primary_measure": primary_measure})
    rows = [
        {
            "job_key": j.job_key,
            "arm": j.arm,
            "endpoint": j.endpoint,
            "row_index": j.row_index,
            "row_id": j.row_id,
            "prompt": j.prompt,
            "seed_requested": j.seed,
            "model": endpoint_alias(j.endpoint),
            "price_unit": f"per {profile(j.endpoint).pricing.unit}",  # fal bills each so
            "resolution": j.settings.get("resolution"),
            "aspect_ratio": j.settings.get("aspect_ratio"),
            "duration": j.video_seconds,
            "enable_prompt_expansion": j.settings.get("enable_prompt_expansion"),
            "multi_shots": j.settings.get("multi_shots"),
            "image_sha256": j.image_sha256,
            "image_uri": public_uri(j.image_uri),
            "estimated_usd": j.estimated_usd,
            **{f"extra.{k}": str(v) for k, v in j.extra.items()},
        }
        for j in jobs
    ]
    put_parquet(store, sweep_file(sweep, PLAN_FILE), pd.DataFrame(rows))
    if skipped:
        frame = pd.DataFrame(
            [
                {
                    "row_index": p.row,
                    "row_id": p.id,
                    "field": p.field,
                    "rule": p.rule,
                    "value": p.value,
                    "reason": p.msg,
                }
                for p in skipped
            ]
        )
        put_parquet(store, sweep_file(sweep, SKIPPED_FILE), frame)
    else:  # an earlier run's skipped rows are not this plan's
        store.delete(sweep_file(sweep, SKIPPED_FILE))
