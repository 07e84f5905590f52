"""Archive layout (every key is built here), the request ledger, sidecar rows and indexes.

Layout under the store root (readable with plain ``aws s3 ls``)::

    jobs/<job_key>/video.mp4     the video, byte for byte as fal made it
    jobs/<job_key>/thumb.jpg     its first frame
    jobs/<job_key>/strip.jpg     first, middle and last frames side by side (contact sheets)
    jobs/<job_key>/meta.json     the sidecar, written last: its presence means the video is whole
    ledger/<job_key>.json        request ledger: written before and after every submit
    leases/<job_key>.json        who runs the job now (one process at a time)
    markers/<job_key>/<n>-<id>   webhooks' word of which request attempt n became
    sweeps/<name>/...            each sweep's plan, report and index

Jobs live by key, not by sweep, so two sweeps that share a job pay for it once.
"""

from __future__ import annotations

from typing import Any

from wansweep.errors import LedgerDamaged
from wansweep.lifecycle import LedgerEntry
from wansweep.quality import METRICS
from wansweep.store import Store

SIDECAR, VIDEO, THUMB, STRIP = "meta.json", "video.mp4", "thumb.jpg", "strip.jpg"
INDEX_KEY = "index/all.parquet"
PLAN_FILE, SKIPPED_FILE, SWEEP_INDEX = "plan.parquet", "skipped.parquet", "index.parquet"


def job_file(job_key: str, name: str) -> str:
    return f"jobs/{job_key}/{name}"


def ledger_key(job_key: str) -> str:
    return f"ledger/{job_key}.json"


def marker_key(job_key: str, attempt: int, request_id: str) -> str:
    """A webhook's word that this attempt of this job is this request (see webhooks)."""
    return f"markers/{job_key}/{attempt}-{request_id}"


def marked_requests(store: Store, job_key: str, attempt: int) -> list[str]:
    """Request ids that webhooks named for this attempt of this job."""
    prefix = f"markers/{job_key}/{attempt}-"
    return [k.removeprefix(prefix) for k in store.list(prefix) if k.startswith(prefix)]


def sweep_prefix(name: str) -> str:
    return f"sweeps/{name}"


def sweep_file(name: str, *parts: str) -> str:
    """A file of a sweep: plan, index, report files, shard records. The name is checked here,
    where it becomes a path, whoever passed it (a spec, ``--sweep``, a flow parameter)."""
    from wansweep.sweep import check_sweep_name

    return "/".join([sweep_prefix(check_sweep_name(name)), *parts])


def report_file(name: str, file: str) -> str:
    return sweep_file(name, "report", file)


def vote_key(sweep: str, rater: str, vote_id: str) -> str:
    """One blind-review vote: its own object, so votes are appended, never rewritten."""
    return sweep_file(sweep, "votes", rater, f"{vote_id}.json")


def vote_keys(store: Store, sweep: str) -> list[str]:
    return [k for k in store.list(sweep_file(sweep, "votes") + "/") if k.endswith(".json")]


def sweep_names(store: Store) -> list[str]:
    """Every sweep with a saved plan."""
    return sorted({k.split("/")[1] for k in store.list("sweeps/") if k.endswith("/" + PLAN_FILE)})


def public_uri(uri: str | None) -> str | None:
    """Never inline data in metadata: data URIs are recorded by kind only."""
    if uri and uri.startswith("data:"):
        return uri.split(",", 1)[0] + ",..."
    return uri


def archived_keys(store: Store) -> set[str]:
    """Job keys whose sidecar exists: one listing of the store, not one call per job."""
    keys = set()
    for key in store.list("jobs/"):
        parts = key.split("/")
        if len(parts) == 3 and parts[2] == SIDECAR:
            keys.add(parts[1])
    return keys


class Ledger:
    """One small JSON object per job, so concurrent writers never contend (S3 has no append)."""

    def __init__(self, store: Store):
        self.store = store

    def get(self, job_key: str) -> LedgerEntry | None:
        """The job's entry, None if it has none; :class:`LedgerDamaged` if it is unreadable."""
        data = self.store.get_bytes(ledger_key(job_key))
        if data is None:
            return None
        import json

        try:
            parsed = json.loads(data)
        except ValueError:
            raise LedgerDamaged(f"ledger entry of {job_key} is not valid JSON") from None
        return LedgerEntry.from_json(parsed, job_key)

    def put(self, entry: LedgerEntry, cause: str | None = None, **changes: Any) -> LedgerEntry:
        """Write the next version of an entry (changes applied) and return it."""
        entry = entry.with_changes(cause, **changes)
        self.store.put_json(ledger_key(entry.job_key), entry.to_json())
        return entry

    def set_aside(self, job_key: str) -> float | None:
        """Keep an unreadable entry as ``ledger/<key>.json.damaged`` (never deleted, never
        trusted); returns how many seconds ago it was last written (None if it is gone)."""
        current = self.store.read_versioned(ledger_key(job_key))
        if current is None:
            return None
        self.store.put_bytes(ledger_key(job_key) + ".damaged", current[0])
        return current[2] or 0.0

    def all(self) -> dict[str, LedgerEntry]:
        out = {}
        for key in self.store.list("ledger/"):
            if key.endswith(".json"):
                job_key = key.rsplit("/", 1)[1].removesuffix(".json")
                entry = self.get(job_key)
                if entry:
                    out[job_key] = entry
        return out


def sidecar_row(meta: dict[str, Any]) -> dict[str, Any]:
    """The measured fields of one sidecar, flat: a row of the report and of the index."""
    video, timings = meta.get("video", {}), meta.get("timings", {})
    return {
        "job_key": meta["job_key"],
        "request_id": meta.get("request_id"),
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
        # measured quality (wansweep.quality.METRICS) as q_<name> columns
        **{
            f"q_{name}": (meta.get("quality") or {}).get(name)
            for name in METRICS
            if name != "first_frame_similarity"
        },
    }


def index_row(meta: dict[str, Any], store: Store) -> dict[str, Any]:
    """A dataset index row: what the job was asked and what it produced, loadable without the tool."""
    inp = meta.get("input", {})
    row = {
        "job_key": meta["job_key"],
        "endpoint": meta.get("endpoint"),
        "arm": meta.get("arm"),
        "row_id": meta.get("row", {}).get("id"),
        "prompt": inp.get("prompt"),
        "negative_prompt": inp.get("negative_prompt"),
        "resolution": inp.get("resolution"),
        "duration": int(inp["duration"]) if inp.get("duration") else None,
        "enable_prompt_expansion": inp.get("enable_prompt_expansion"),
        "multi_shots": inp.get("multi_shots"),
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
