"""Sidecars as rows: the report's and the dataset index's columns, and the Parquet indexes
(``index/all.parquet``, ``sweeps/<name>/index.parquet``) loadable without this tool."""

from __future__ import annotations

from typing import Any

from wansweep.media.quality import METRICS
from wansweep.plan.profile_parts import seconds_of
from wansweep.store import Store
from wansweep.store.layout import SIDECAR, VIDEO, archived_keys, job_file


def sidecar_row(meta: dict[str, Any]) -> dict[str, Any]:
    """The measured fields of one sidecar, flat: a row of the report and of the index."""
    video, timings = meta.get("video", {}), meta.get("timings", {})
    return {
        "job_key": meta["job_key"],
        "request_id": meta.get("request_id"),
        "served_by": meta.get("served_by"),
        "billable_units": meta.get("billable_units"),
        "seed": meta.get("seed"),
        "actual_prompt": meta.get("actual_prompt"),
        "video_duration": video.get("duration"),
        "width": video.get("width"),
        "height": video.get("height"),
        "fps": video.get("fps"),
        "frames": video.get("frames"),
        "codec": video.get("codec"),
        "has_audio": video.get("has_audio"),
        "video_size": video.get("size"),
        "video_sha256": video.get("sha256"),
        "queue_seconds": timings.get("queue_seconds"),
        "inference_seconds": timings.get("inference_seconds"),
        "wall_seconds": timings.get("wall_seconds"),
        "completion_uncertainty_s": timings.get("completion_uncertainty_s"),
        "detection_lag_s": timings.get("detection_lag_s"),
        "detected_via": timings.get("detected_via"),
        "first_frame_similarity": meta.get("first_frame_similarity"),
        # which definitions measured it (media.quality.QUALITY_VERSION; 1 before versions)
        "quality_version": (meta.get("quality") or {}).get(
            "version", 1 if meta.get("quality") else None
        ),
        # measured quality (wansweep.media.quality.METRICS) as q_<name> columns
        **{
            f"q_{name}": (meta.get("quality") or {}).get(name)
            for name in METRICS
            if name != "first_frame_similarity"
        },
    }


def index_row(meta: dict[str, Any], store: Store) -> dict[str, Any]:
    """A dataset index row: what the job was asked and what it produced, loadable without the tool."""
    inp = meta.get("input", {})
    # in wansweep's words (a sidecar before endpoint profiles: the request was in them)
    settings = meta.get("settings") or inp
    row = {
        "job_key": meta["job_key"],
        "endpoint": meta.get("endpoint"),
        "model": meta.get("model"),
        "arm": meta.get("arm"),
        "row_id": meta.get("row", {}).get("id"),
        "prompt": inp.get("prompt"),
        "negative_prompt": settings.get("negative_prompt"),
        "resolution": settings.get("resolution"),
        "aspect_ratio": settings.get("aspect_ratio"),
        "duration": seconds_of(settings.get("duration")),
        "enable_prompt_expansion": settings.get("enable_prompt_expansion"),
        "multi_shots": settings.get("multi_shots"),
        "seed_requested": meta.get("seed_requested"),
        "image_uri": inp.get("image", {}).get("uri"),
        "image_sha256": inp.get("image", {}).get("sha256"),
        "video_uri": store.url(job_file(meta["job_key"], VIDEO)),
        "estimated_usd": meta.get("estimated_usd"),
        "archived_at": meta.get("timings", {}).get("archived_at"),
        "tool_version": meta.get("tool_version"),
        **sidecar_row(meta),
    }
    for key, value in meta.get("row", {}).items():
        if key not in ("id", "index"):
            row[f"extra.{key}"] = None if value is None else str(value)
    return row


def read_sidecars(store: Store, keys: list[str] | None = None) -> list[dict[str, Any]]:
    """Sidecars of the given jobs (or of every archived job), read in parallel."""
    from concurrent.futures import ThreadPoolExecutor

    keys = sorted(archived_keys(store)) if keys is None else keys
    with ThreadPoolExecutor(16) as pool:
        return [m for m in pool.map(lambda k: store.get_json(job_file(k, SIDECAR)), keys) if m]


def index_frame(store: Store, metas: list[dict[str, Any]]) -> Any:
    """Index rows of the given sidecars as a DataFrame (its columns even when empty)."""
    import pandas as pd

    frame = pd.DataFrame([index_row(m, store) for m in metas])
    base = list(index_row({"job_key": ""}, store))
    return frame.reindex(columns=base + [c for c in frame.columns if c not in base])


def write_index(store: Store, frame: Any, key: str, merge: bool = False) -> int:
    """Write (or, with ``merge``, add to) a Parquet index of :func:`index_frame` rows;
    returns its row count."""
    import pandas as pd

    if merge and (old := get_parquet(store, key)) is not None:
        # the new rows win; dropping the old ones first keeps a re-indexed sweep from being
        # held twice (at 100,000 jobs, ~170 MB)
        old = old[~old["job_key"].isin(frame["job_key"])] if len(frame) else old
        frame = pd.concat([old, frame], ignore_index=True)
    if len(frame):
        frame = frame.drop_duplicates("job_key", keep="last").sort_values("job_key")
    put_parquet(store, key, frame)
    return len(frame)


def put_parquet(store: Store, key: str, frame: Any) -> None:
    import io

    buf = io.BytesIO()
    frame.to_parquet(buf, index=False)
    store.put_bytes(key, buf.getvalue(), "application/vnd.apache.parquet")


def get_parquet(store: Store, key: str) -> Any | None:
    import io

    import pandas as pd

    data = store.get_bytes(key)
    return None if data is None else pd.read_parquet(io.BytesIO(data))
