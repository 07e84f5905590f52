"""`wansweep verify`: the archive checked against itself, every byte read.

Each sidecar is read and its video checked (there, its size, its SHA-256); each ledger entry
is read and held against the sidecars. A problem names the job and what is wrong. With
``repair``, what is wrong is set aside under ``jobs/<key>/damaged/`` (never deleted), so the
next run of the sweep sees the job as not archived and fetches its video from fal again,
without paying, while fal holds the result (the ledger has it); a video fal no longer holds
is paid for again only by ``wansweep run --resubmit-expired``, within the budget.

What a run checks on its own is cheaper: one listing tells it a video is missing or empty;
a video changed in place, byte for byte, only this check finds.
"""

from __future__ import annotations

import hashlib
import tempfile
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from wansweep.errors import InputError, LedgerDamaged
from wansweep.run.ledger import Ledger
from wansweep.run.lifecycle import LedgerStatus
from wansweep.store import Store
from wansweep.store.layout import (
    PLAN_FILE,
    SIDECAR,
    VIDEO,
    damaged_key,
    job_file,
    list_jobs,
    sweep_file,
)


class Found(StrEnum):
    """What can be wrong with an archived job (the first five are repaired by a rerun)."""

    VIDEO_MISSING = "video_missing"  # the sidecar stands, its video is gone
    VIDEO_SIZE = "video_size"  # the video's size differs from the sidecar's
    VIDEO_SHA256 = "video_sha256"  # the video's bytes differ from the sidecar's checksum
    SIDECAR_UNREADABLE = "sidecar_unreadable"  # the sidecar is not the JSON we wrote
    LEDGER_WITHOUT_SIDECAR = "ledger_without_sidecar"  # the ledger says archived, no sidecar
    LEDGER_DAMAGED = "ledger_damaged"  # `wansweep reconcile` settles it through fal
    LEDGER_DISAGREES = "ledger_disagrees"  # the sidecar and the ledger name other requests
    UNFINISHED = "unfinished"  # a video without its sidecar: a run stopped while archiving


SET_ASIDE = {Found.VIDEO_SIZE: VIDEO, Found.VIDEO_SHA256: VIDEO, Found.SIDECAR_UNREADABLE: SIDECAR}
NOTES = {Found.UNFINISHED, Found.LEDGER_DISAGREES}  # worth knowing; nothing is lost


@dataclass(frozen=True)
class Finding:
    job_key: str
    found: Found
    detail: str

    @property
    def is_problem(self) -> bool:
        return self.found not in NOTES

    def __str__(self) -> str:
        return f"job {self.job_key}: {self.found}: {self.detail}"


@dataclass
class Verified:
    jobs: int = 0  # sidecars checked
    videos_read: int = 0
    bytes_read: int = 0
    ledger_entries: int = 0
    findings: list[Finding] = field(default_factory=list)
    set_aside: list[str] = field(default_factory=list)  # keys moved under damaged/

    @property
    def problems(self) -> list[Finding]:
        return [f for f in self.findings if f.is_problem]


def verify(
    store: Store,
    sweep: str | None = None,
    repair: bool = False,
    progress: Callable[[int, int], None] | None = None,
    workers: int = 8,
) -> Verified:
    """Check every archived job (or a sweep's) and every ledger entry; see the module
    docstring. ``progress(done, total)`` is called as sidecars are checked."""
    listing, ledger = list_jobs(store), Ledger(store)
    scope = _sweep_keys(store, sweep) if sweep else None
    keys = {k for k in (*listing.sidecars, *listing.videos) if scope is None or k in scope}
    ledgered = [k for k in ledger.job_keys() if scope is None or k in scope]
    result = Verified()
    with ThreadPoolExecutor(workers) as pool:
        checked = pool.map(lambda k: _check_job(store, k, listing.videos.get(k)), sorted(keys))
        requests = {}  # job key -> the fal request its sidecar names
        for n, (key, findings, read, request_id) in enumerate(checked, start=1):
            requests[key] = request_id
            result.jobs += key in listing.sidecars
            result.videos_read += read > 0
            result.bytes_read += read
            result.findings += findings
            if progress is not None:
                progress(n, len(keys))
        entries = pool.map(
            lambda k: _check_ledger(ledger, k, k in listing.sidecars, requests.get(k)), ledgered
        )
        for findings in entries:
            result.ledger_entries += 1
            result.findings += findings
    result.findings.sort(key=lambda f: (f.job_key, f.found))
    if repair:
        result.set_aside = set_aside(store, result.findings)
    return result


def _sweep_keys(store: Store, sweep: str) -> set[str]:
    from wansweep.results.index import get_parquet

    plan = get_parquet(store, sweep_file(sweep, PLAN_FILE))
    if plan is None:
        raise InputError(f"{store.url(sweep_file(sweep))} holds no sweep plan")
    return set(plan["job_key"])


def _check_job(
    store: Store, key: str, listed_size: int | None
) -> tuple[str, list[Finding], int, str | None]:
    """One job's sidecar against its video: (key, findings, bytes of video read, the fal
    request the sidecar names)."""
    try:
        meta = store.get_json(job_file(key, SIDECAR))
    except ValueError:
        return key, [Finding(key, Found.SIDECAR_UNREADABLE, "not valid JSON")], 0, None
    if meta is None:
        what = "a video without its sidecar; the next run finishes archiving it (no payment)"
        return key, [Finding(key, Found.UNFINISHED, what)], 0, None
    video = meta.get("video") if isinstance(meta, dict) else None
    if not isinstance(video, dict) or not video.get("sha256"):
        what = "it records no video checksum"
        return key, [Finding(key, Found.SIDECAR_UNREADABLE, what)], 0, None
    request_id = meta.get("request_id")
    gone = Finding(key, Found.VIDEO_MISSING, "the sidecar stands, the video is gone")
    if listed_size is None:
        return key, [gone], 0, request_id
    if video.get("size") is not None and listed_size != video["size"]:
        detail = f"{listed_size:,} bytes; the sidecar says {video['size']:,}"
        return key, [Finding(key, Found.VIDEO_SIZE, detail)], 0, request_id
    digest, read = _sha256(store, job_file(key, VIDEO))
    if digest is None:  # gone between the listing and the read
        return key, [gone], 0, request_id
    if digest != video["sha256"]:
        detail = f"SHA-256 {digest[:12]}...; the sidecar says {video['sha256'][:12]}..."
        return key, [Finding(key, Found.VIDEO_SHA256, detail)], read, request_id
    return key, [], read, request_id


def _sha256(store: Store, key: str) -> tuple[str | None, int]:
    chunks = store.iter_chunks(key)
    if chunks is None:
        return None, 0
    h, size = hashlib.sha256(), 0
    for chunk in chunks:
        h.update(chunk)
        size += len(chunk)
    return h.hexdigest(), size


def _check_ledger(
    ledger: Ledger, key: str, has_sidecar: bool, sidecar_request: str | None
) -> list[Finding]:
    """One ledger entry against the job's sidecar."""
    try:
        entry = ledger.get(key)
    except LedgerDamaged as exc:
        return [Finding(key, Found.LEDGER_DAMAGED, f"{exc}; `wansweep reconcile` settles it")]
    if entry is None:
        return []
    if entry.status is LedgerStatus.ARCHIVED and not has_sidecar:
        what = "the ledger says archived, the sidecar is gone; the next run archives it again"
        return [Finding(key, Found.LEDGER_WITHOUT_SIDECAR, what)]
    if sidecar_request and entry.request_id and sidecar_request != entry.request_id:
        what = f"the sidecar names request {sidecar_request}, the ledger {entry.request_id}"
        return [Finding(key, Found.LEDGER_DISAGREES, what)]
    return []


def set_aside(store: Store, findings: Iterable[Finding]) -> list[str]:
    """Move what is wrong under ``jobs/<key>/damaged/`` (copied, then removed), so that the
    next run archives those jobs again; returns the keys written."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    moved = []
    for f in findings:
        if (name := SET_ASIDE.get(f.found)) is None:
            continue
        source, target = job_file(f.job_key, name), damaged_key(f.job_key, stamp, name)
        if store.size(source) is None:
            continue  # gone meanwhile: nothing to set aside
        with tempfile.TemporaryDirectory(prefix="wansweep-verify-") as tmp:
            local = Path(tmp) / name
            store.download_file(source, local)
            store.put_file(target, local)  # a copy first: nothing is lost if we stop here
        store.delete(source)
        moved.append(target)
    return moved
