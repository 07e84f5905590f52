"""Finishing a job: its video into the archive (checked), thumbnail and strip, then the
sidecar last, whose presence means the video is whole."""

from __future__ import annotations

import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from wansweep import __version__
from wansweep.fal import FalQueue
from wansweep.media import frames as media
from wansweep.media import quality
from wansweep.plan import endpoints, schema
from wansweep.plan.media_index import load_media
from wansweep.plan.spec import Job
from wansweep.run.ledger import Ledger
from wansweep.run.lifecycle import LedgerEntry
from wansweep.run.transitions import Move
from wansweep.store import Store
from wansweep.store.layout import VIDEO, job_file, public_uri

# Decoding and measuring a video is CPU work: with 100 jobs finishing at once, 100 decoders
# in 100 threads only contend for the cores and keep 100 sets of frames and codec buffers
# (measured: 1,000 tiny clips on 100 threads took 1.9x the time and 2-6x the memory of the
# same on 2). Jobs wait their turn here; downloads and uploads stay fully concurrent.
CPU_BOUND = threading.BoundedSemaphore(os.cpu_count() or 2)


def archive_result(
    job: Job, store: Store, fal: FalQueue, ledger: Ledger, entry: LedgerEntry
) -> None:
    """Video first, checksum verified by the store, thumbnail and strip, then the sidecar
    last; the ledger says ``archived`` only once the sidecar is written."""
    video = entry.result[endpoints.profile(job.endpoint).output]
    video_key = job_file(job.job_key, VIDEO)
    with tempfile.TemporaryDirectory(prefix="wansweep-") as tmp:
        local = Path(tmp) / VIDEO
        size, sha = entry.video_size, entry.video_sha256
        # Killed between upload and sidecar: the stored copy is fetched once and checked here,
        # and fal is not asked again when it is whole.
        if not (
            sha and store.size(video_key) == size and store.fetch_matches(video_key, local, sha)
        ):
            size, sha = fal.download(video["url"], local, video.get("file_size"))
            entry = ledger.put(entry, video_size=size, video_sha256=sha)
            # the store checks what it received against our checksum (StoreMismatch: the
            # step is run again), so no sidecar ever points at a bad copy
            store.put_verified(video_key, local, sha, "video/mp4")
        with CPU_BOUND:
            probe = media.probe(local)
            decoded = quality.decode(local)  # one pass: metrics, thumbnail and contact sheet
            first, middle, last = decoded.picks
            thumb = media.thumbnail_jpeg(first)
            strip = media.strip_jpeg([first, middle, last])
            fidelity = _first_frame_similarity(job, first)
            measured = quality.measure(quality.Clip(decoded, asked(job), probe, fidelity))
            del decoded  # every grey frame: not kept while the store is written
        store.put_bytes(job_file(job.job_key, "thumb.jpg"), thumb, "image/jpeg")
        store.put_bytes(job_file(job.job_key, "strip.jpg"), strip, "image/jpeg")
    archived_at = time.time()
    meta = sidecar(job, entry, size, sha, probe, measured, archived_at)
    if os.environ.get("WANSWEEP_FAULT_EXIT_BEFORE_SIDECAR"):  # fault injection for tests
        os._exit(137)
    store.put_json(job_file(job.job_key, "meta.json"), meta)
    ledger.move(entry, Move.ARCHIVE, archived_at=archived_at)


def asked(job: Job) -> quality.Asked:
    """What a job asked for, as the quality metrics compare it."""
    settings = job.settings
    return quality.Asked(
        duration=float(job.video_seconds),
        short_side=schema.short_side(settings.get("resolution")),  # None: an aspect ratio only
        # multi_shots acts only with prompt expansion (Wan 2.6's page says so)
        multi_shots=bool(settings.get("multi_shots"))
        and bool(settings.get("enable_prompt_expansion", True)),
        prompt=job.prompt,
        audio=job.audio_uri is not None,
    )


def _first_frame_similarity(job: Job, first: Any) -> float | None:
    """How much the video's first frame looks like the input image (None if unreadable).
    The input is read again only when planning's reference of it is not at hand."""
    try:
        ref = media.REFERENCES.get(job.image_sha256)
        if ref is None:
            ref = media.reference_of(load_media(job.image_uri))
            media.REFERENCES.put(job.image_sha256, ref)
        return media.similarity(ref, first)
    except Exception:
        return None


def timings(entry: LedgerEntry, archived_at: float) -> dict[str, Any]:
    """When each step happened (this machine's clock; fal's own figure for inference).

    Latencies are measured to ``completed_at``, when fal completed the job (see
    :class:`wansweep.fal.stream.Completion`), not to when we noticed (``detected_at``): a
    slow poll must not make an arm look slower. ``completion_uncertainty_s`` bounds the
    estimate (0 when a stream or webhook said so at once)."""
    submitted, completed, inference = (
        entry.submitted_at,
        entry.completed_at,
        entry.inference_seconds,
    )
    both = submitted is not None and completed is not None
    return {
        "submitted_at": submitted,
        # fal reports inference time, not a start time: started = completed - inference
        "started_at": completed - inference if completed and inference is not None else None,
        "completed_at": completed,
        "detected_at": entry.detected_at,
        "detected_via": entry.detected_via,
        "completion_uncertainty_s": entry.completion_uncertainty,
        "archived_at": archived_at,
        "inference_seconds": inference,
        "queue_seconds": round(completed - submitted - inference, 3)
        if both and inference is not None
        else None,
        "wall_seconds": round(completed - submitted, 3) if both else None,
        "detection_lag_s": round(entry.detected_at - completed, 3)
        if entry.detected_at is not None and completed is not None
        else None,
    }


def sidecar(
    job: Job,
    entry: LedgerEntry,
    size: int,
    sha: str,
    probe: media.Probe,
    measured: dict[str, Any],
    archived_at: float,
) -> dict[str, Any]:
    """The metadata sidecar of an archived job (no secrets, no inline data)."""
    result = entry.result
    return {
        "job_key": job.job_key,
        "arm": job.arm,
        "endpoint": job.endpoint,
        "model": endpoints.profile(job.endpoint).alias,
        "row": {"index": job.row_index, "id": job.row_id, **job.extra},
        "settings": job.settings,  # in wansweep's words; "input" is in the endpoint's
        "input": {
            **job.request_fields(),
            "image": {"uri": public_uri(job.image_uri), "sha256": job.image_sha256},
            **(
                {"audio": {"uri": public_uri(job.audio_uri), "sha256": job.audio_sha256}}
                if job.audio_uri
                else {}
            ),
        },
        "request_id": entry.request_id,
        "served_by": entry.served_by or job.endpoint,  # another only when fal said so
        "billable_units": entry.billable_units,  # fal's X-Fal-Billable-Units, as sent
        "seed_requested": job.seed,
        "seed": result.get("seed"),
        "actual_prompt": result.get("actual_prompt"),
        "fal_video": {
            k: v for k, v in result[endpoints.profile(job.endpoint).output].items() if k != "url"
        },
        "timings": timings(entry, archived_at),
        "video": {
            "key": job_file(job.job_key, VIDEO),
            "sha256": sha,
            "size": size,
            **probe.as_dict(),
        },
        "first_frame_similarity": measured.get("first_frame_similarity"),
        "quality": measured,  # see wansweep.media.quality.METRICS
        "estimated_usd": job.estimated_usd,
        "tool_version": __version__,
    }
