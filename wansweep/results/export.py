"""Export an archive to what training pipelines read: WebDataset shards or a Hugging Face
dataset folder. `wansweep export STORE [--sweep NAME | --all] --format {webdataset,hf} --out URI`.

- ``webdataset``: tar shards (``shard-000000.tar``, ...) of about ``shard_mb`` each, holding
  ``<key>.mp4``, ``<key>.json`` (the row: prompt, settings, seeds, arm, metrics, sha256,
  cost, timings) and ``<key>.jpg`` (thumbnail), readable by the ``webdataset`` package.
- ``hf``: ``data/train-000000.parquet``, ... (the video bytes in a ``video`` column beside the
  same row fields) and a ``README.md`` whose header tells ``datasets.load_dataset(FOLDER)``
  where the data is; shards small enough for the Hub. ``--push REPO`` uploads the folder
  with ``huggingface_hub`` (needs a token: ``HF_TOKEN``).

Both write ``export.json`` last: every shard with its rows, job keys, byte size and SHA-256.
Each video is checked against its sidecar's SHA-256 as it is copied. Incremental: an export
into a folder that holds an earlier one adds only jobs it does not list, as new shards.
Never half-written: a shard is written under a temporary name and renamed (local) or put
whole (S3), and counts only once ``export.json`` lists it; a killed export leaves at most an
unlisted shard, which the next export writes over. Filters: sweeps, arms, and metric bounds
(``--min q_first_frame_similarity=0.8 --max q_frozen_fraction=0.05``); only archived jobs.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from wansweep.errors import InputError, StoreError, StoreMismatch
from wansweep.store import Store, open_store
from wansweep.store.layout import THUMB, VIDEO, job_file, sweep_names

FORMATS = ("webdataset", "hf")
MANIFEST = "export.json"
ROW_FIELDS = (
    "job_key", "sweep", "arm", "endpoint", "row_id", "prompt", "negative_prompt", "resolution",
    "duration", "seed_requested", "seed", "enable_prompt_expansion", "multi_shots",
    "actual_prompt", "image_sha256", "video_sha256", "video_size", "width", "height", "fps",
    "video_duration", "has_audio", "cost_usd", "wall_seconds", "queue_seconds",
    "inference_seconds", "first_frame_similarity",
)  # fmt: skip


@dataclass
class Filters:
    sweeps: list[str] | None = None  # None: every sweep in the archive
    arms: list[str] = field(default_factory=list)
    minimum: dict[str, float] = field(default_factory=dict)
    maximum: dict[str, float] = field(default_factory=dict)

    def apply(self, frame: pd.DataFrame, status: str = "succeeded") -> pd.DataFrame:
        keep = frame["status"] == status
        if self.arms:
            keep &= frame["arm"].isin(self.arms)
        for column in {**self.minimum, **self.maximum}:
            if column not in frame.columns:
                raise InputError(f"filter: no column {column!r} (quality metrics are q_<name>)")
        for column, bound in self.minimum.items():
            keep &= pd.to_numeric(frame[column], errors="coerce") >= bound
        for column, bound in self.maximum.items():
            keep &= pd.to_numeric(frame[column], errors="coerce") <= bound
        return frame[keep]

    def lost(self, frame: pd.DataFrame) -> pd.DataFrame:
        """The jobs these filters would export had the archive not lost their video."""
        from wansweep.results.report import LOST

        return self.apply(frame, status=LOST)


def parse_bounds(items: list[str]) -> dict[str, float]:
    """``NAME=NUMBER`` items (``--min`` / ``--max``)."""
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            raise InputError(f"filter {item!r}: expected COLUMN=NUMBER") from None
        if not sep:
            raise InputError(f"filter {item!r}: expected COLUMN=NUMBER")
    return out


@dataclass
class ExportResult:
    out: str
    new_shards: list[str]
    new_rows: int
    total_rows: int
    bytes_written: int
    seconds: float
    lost: list[str] = field(default_factory=list)  # left out with skip_lost: video lost


def export(
    store: Store,
    out: str,
    fmt: str,
    filters: Filters | None = None,
    shard_mb: float = 500.0,
    skip_lost: bool = False,
) -> ExportResult:
    """Export what ``filters`` keep and ``out`` does not list yet; see the module docstring.

    A job whose video the archive lost (its sidecar stands) stops the export before a shard
    is written, naming it, unless ``skip_lost`` leaves such jobs out (and they are named in
    :attr:`ExportResult.lost`)."""
    from wansweep.results.report import jobs_frame

    if fmt not in FORMATS:
        raise InputError(f"format must be one of {', '.join(FORMATS)}")
    filters = filters or Filters()
    t0 = time.perf_counter()
    target = open_store(out)
    manifest = target.get_json(MANIFEST) or {"format": fmt, "shards": []}
    if manifest.get("format") != fmt:
        raise InputError(f"{out} holds a {manifest.get('format')} export, not {fmt}")
    listed = {k for s in manifest["shards"] for k in s["keys"]}
    frames, lost = [], []
    for name in filters.sweeps or sweep_names(store):
        every = jobs_frame(store, name)
        frames.append(filters.apply(every).assign(sweep=name))
        lost += list(filters.lost(every)["job_key"])
    if lost and not skip_lost:
        named = ", ".join(lost[:10]) + (f" and {len(lost) - 10} more" if len(lost) > 10 else "")
        raise StoreError(
            f"{len(lost)} job(s) to export lost their video from the archive (sidecar kept): "
            f"{named}; nothing was exported. Run the sweep again to fetch them from fal, or "
            "export without them with --skip-lost (`wansweep verify` checks every video)"
        )
    rows = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    if len(rows):
        rows = rows[~rows["job_key"].isin(listed)].drop_duplicates("job_key")
    writer = _write_tar if fmt == "webdataset" else _write_parquet
    new, written = [], 0
    for batch in _batches(rows, int(shard_mb * 2**20)):
        number = len(manifest["shards"])
        name = (
            f"shard-{number:06d}.tar" if fmt == "webdataset" else f"data/train-{number:06d}.parquet"
        )
        with tempfile.TemporaryDirectory(prefix="wansweep-export-") as tmp:
            path = Path(tmp) / "shard"
            with path.open("wb") as f:  # streamed to disk and hashed on the way: flat memory
                out = _Hashing(f)
                writer(store, batch, out)
            size, sha = out.size, out.hash.hexdigest()
            # whole or not at all: a local shard is staged and renamed, an S3 object appears
            # only when its upload completes
            target.put_file(name, path)
        manifest["shards"].append(
            {
                "name": name,
                "rows": len(batch),
                "bytes": size,
                "sha256": sha,
                "keys": list(batch["job_key"]),
                "video_sha256": list(batch["video_sha256"]),
                "written_at": time.time(),
            }
        )
        # listed only now: a shard counts once export.json names it
        if fmt == "hf":
            target.put_bytes("README.md", _dataset_card(manifest).encode())
        target.put_json(MANIFEST, manifest)
        new.append(name)
        written += size
    return ExportResult(
        target.uri,
        new,
        sum(s["rows"] for s in manifest["shards"] if s["name"] in new),
        sum(s["rows"] for s in manifest["shards"]),
        written,
        time.perf_counter() - t0,
        lost,
    )


def _batches(rows: pd.DataFrame, limit: int) -> Iterator[pd.DataFrame]:
    """Consecutive rows whose videos add up to about ``limit`` bytes (at least one each)."""
    start, size = 0, 0
    sizes = list(rows["video_size"].fillna(0)) if len(rows) else []
    for i, s in enumerate(sizes):
        if size and size + s > limit:
            yield rows.iloc[start:i]
            start, size = i, 0
        size += s
    if start < len(sizes):
        yield rows.iloc[start:]


def _row(r: pd.Series) -> dict[str, Any]:
    """The JSON-ready fields of one exported job (metrics as q_<name>)."""
    fields = [c for c in ROW_FIELDS if c in r.index] + [c for c in r.index if c.startswith("q_")]
    out = {}
    for c in fields:
        v = r[c]
        if isinstance(v, float) and pd.isna(v):
            v = None
        elif hasattr(v, "item"):  # numpy scalars
            v = v.item()
        out[c] = v
    return out


def _video(store: Store, r: pd.Series) -> bytes:
    """The archived video, whole, checked against its sidecar's SHA-256."""
    video = _Checked(store, r)
    data = video.read()
    video.verify()
    return data


class _Hashing(io.RawIOBase):
    """A file being written, hashed and counted as it is written (no second read)."""

    def __init__(self, f):
        self.f, self.hash, self.size = f, hashlib.sha256(), 0

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self.hash.update(data)
        self.size += len(data)
        return self.f.write(data)

    def tell(self) -> int:
        return self.size


def _write_tar(store: Store, batch: pd.DataFrame, out: _Hashing) -> None:
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for _, r in batch.iterrows():
            key = r["job_key"]
            if os.environ.get("WANSWEEP_FAULT_EXIT_MID_EXPORT"):  # fault injection for tests
                os._exit(137)
            video = _Checked(store, r)  # streamed into the tar, hashed on the way
            _add(tar, f"{key}.mp4", video, int(r["video_size"]))
            video.verify()
            _add(tar, f"{key}.json", json.dumps(_row(r), sort_keys=True).encode())
            if thumb := store.get_bytes(job_file(key, THUMB)):
                _add(tar, f"{key}.jpg", thumb)


def _add(tar: tarfile.TarFile, name: str, data, size: int | None = None) -> None:
    info = tarfile.TarInfo(name)
    info.mtime, info.mode = int(time.time()), 0o644
    info.size = len(data) if size is None else size
    tar.addfile(info, io.BytesIO(data) if isinstance(data, bytes) else data)


class _Checked(io.RawIOBase):
    """An archived video as a file object, hashed as it is read; :meth:`verify` compares
    the hash with the sidecar's (so no bad copy is exported, and memory stays flat)."""

    def __init__(self, store: Store, r: pd.Series):
        self.key, self.expected = r["job_key"], r["video_sha256"]
        chunks = store.iter_chunks(job_file(self.key, VIDEO))
        if chunks is None:  # lost since the listing: named, never an empty stream
            raise StoreMismatch(f"job {self.key}: its video is missing from the archive")
        self.chunks = chunks
        self.chunk, self.offset, self.hash = b"", 0, hashlib.sha256()

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        """Exactly ``n`` bytes unless the video ends (tarfile insists), copied once."""
        out = bytearray()
        while n < 0 or len(out) < n:
            if self.offset >= len(self.chunk):
                chunk = next(self.chunks, None)
                if chunk is None:
                    break
                self.hash.update(chunk)
                self.chunk, self.offset = chunk, 0
            take = (
                len(self.chunk) - self.offset
                if n < 0
                else min(n - len(out), len(self.chunk) - self.offset)
            )
            out += self.chunk[self.offset : self.offset + take]
            self.offset += take
        return bytes(out)

    def verify(self) -> None:
        if self.hash.hexdigest() != self.expected:
            raise StoreMismatch(f"job {self.key}: the archived video differs from its sidecar")


def _write_parquet(store: Store, batch: pd.DataFrame, out: _Hashing) -> None:
    """Row groups of about ``ROW_GROUP_BYTES`` of video, written as they are read, under one fixed schema
    (every shard of every export alike, so loaders concatenate them)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    names = list(_row(batch.iloc[0]))
    schema = pa.schema([(n, _arrow_type(n)) for n in names] + [("video", pa.binary())])
    with pq.ParquetWriter(out, schema) as writer:
        rows, size = [], 0
        for _, r in batch.iterrows():
            rows.append({**_row(r), "video": _video(store, r)})
            size += len(rows[-1]["video"])
            if size >= ROW_GROUP_BYTES:  # a row group at a time: memory bounded by its size
                writer.write_table(pa.Table.from_pylist(rows, schema=schema))
                rows, size = [], 0
        if rows:
            writer.write_table(pa.Table.from_pylist(rows, schema=schema))


STRINGS = {
    "job_key", "sweep", "arm", "endpoint", "row_id", "prompt", "negative_prompt", "resolution",
    "actual_prompt", "image_sha256", "video_sha256",
}  # fmt: skip
BOOLS = {"enable_prompt_expansion", "multi_shots", "has_audio", "q_compliant"}


def _arrow_type(name: str):
    import pyarrow as pa

    return pa.string() if name in STRINGS else pa.bool_() if name in BOOLS else pa.float64()


ROW_GROUP_BYTES = 64 * 2**20


def _dataset_card(manifest: dict) -> str:
    rows = sum(s["rows"] for s in manifest["shards"])
    return (
        "---\nconfigs:\n- config_name: default\n  data_files:\n  - split: train\n"
        "    path: data/train-*.parquet\n---\n\n"
        f"# wansweep video dataset\n\n{rows} videos generated with fal's Wan 2.6 image-to-video "
        "endpoints and archived by wansweep. Each row: the video (`video`, MP4 bytes), its "
        "prompt and settings, seeds, arm, measured quality (`q_*`), SHA-256, cost and timings.\n"
    )


def push(folder: str, repo: str) -> str:
    """Upload an ``hf`` export to the Hugging Face Hub (``HF_TOKEN`` or a saved login)."""
    from huggingface_hub import HfApi

    api = HfApi()
    api.create_repo(repo, repo_type="dataset", exist_ok=True)
    return api.upload_folder(folder_path=folder, repo_id=repo, repo_type="dataset").commit_url


def local_copy(uri: str) -> tuple[str, tempfile.TemporaryDirectory | None]:
    """A local folder for ``uri`` (S3 exports are pushed from a temporary copy)."""
    if not uri.startswith("s3://"):
        return uri, None
    tmp = tempfile.TemporaryDirectory(prefix="wansweep-export-")
    source = open_store(uri)
    for key in source.list(""):
        path = Path(tmp.name) / key
        path.parent.mkdir(parents=True, exist_ok=True)
        source.download_file(key, path)
    return tmp.name, tmp
