"""The archive's layout: every key wansweep writes is built here (a test holds the rest of the
code to it), so the archive reads the same with plain ``aws s3 ls``::

    jobs/<job_key>/video.mp4     the video, byte for byte as fal made it
    jobs/<job_key>/thumb.jpg     its first frame
    jobs/<job_key>/strip.jpg     first, middle and last frames side by side (contact sheets)
    jobs/<job_key>/meta.json     the sidecar, written last: its presence means the video was whole
    jobs/<job_key>/damaged/...   files `wansweep verify --repair` found wrong, set aside
    ledger/<job_key>.json        request ledger: written before and after every submit
    leases/<job_key>.json        who runs the job now (one process at a time)
    markers/<job_key>/<n>.json   a verified webhook's word of which request attempt n became
    media/index.jsonl.gz         what planning found in each input
    pricing/fal.json             fal's pricing API as a run last read it (the report's unit prices)
    index/all.parquet            the dataset index
    sweeps/<name>/...            each sweep's plan, report, index and votes

Jobs live by key, not by sweep, so two sweeps that share a job pay for it once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from wansweep.errors import SpecError
from wansweep.store.base import Store

SIDECAR, VIDEO, THUMB, STRIP = "meta.json", "video.mp4", "thumb.jpg", "strip.jpg"
INDEX_KEY = "index/all.parquet"
MEDIA_INDEX_KEY = "media/index.jsonl.gz"
FAL_PRICES_KEY = "pricing/fal.json"  # fal's pricing API as last read, with its date
STORE_PROBE = "pricing/.probe-"  # a run's check that the store takes a write and gives it back
PLAN_FILE, SKIPPED_FILE, SWEEP_INDEX = "plan.parquet", "skipped.parquet", "index.parquet"
ANALYSIS_FILE = "analysis.json"  # how the report judges the sweep (its primary measure)
JOBS, LEDGER, LEASES = "jobs/", "ledger/", "leases/"
SWEEP_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,99}")


def check_sweep_name(name: str) -> str:
    """A sweep name, or :class:`SpecError`: lowercase letters, digits and dashes only (it
    becomes a folder of the archive, so nothing that could leave it)."""
    if not isinstance(name, str) or not SWEEP_NAME.fullmatch(name):
        raise SpecError(f"sweep name {name!r}: use lowercase letters, digits and dashes")
    return name


def lease_key(job_key: str) -> str:
    return f"{LEASES}{job_key}.json"


def lease_probe_key(token: str) -> str:
    """A throwaway object that tells whether the store honours conditional creates."""
    return f"{LEASES}.probe-{token}"


def ledger_job_key(key: str) -> str | None:
    """The job key of a ledger object's key (None for anything else under ``ledger/``)."""
    name = key.removeprefix(LEDGER)
    return name.removesuffix(".json") if name.endswith(".json") and "/" not in name else None


def job_file(job_key: str, name: str) -> str:
    return f"{JOBS}{job_key}/{name}"


def ledger_key(job_key: str) -> str:
    return f"{LEDGER}{job_key}.json"


def marker_key(job_key: str, attempt: int) -> str:
    """A verified webhook's word of which request this attempt of this job became: one object
    per attempt, created once (the first verified webhook's word stands)."""
    return f"markers/{job_key}/{int(attempt)}.json"


def marked_request(store: Store, job_key: str, attempt: int) -> str | None:
    """The request id a verified webhook named for this attempt of this job, if any."""
    try:
        request_id = (store.get_json(marker_key(job_key, attempt)) or {}).get("request_id")
    except (ValueError, AttributeError):
        return None
    return request_id if isinstance(request_id, str) else None


def sweep_prefix(name: str) -> str:
    return f"sweeps/{name}"


def sweep_file(name: str, *parts: str) -> str:
    """A file of a sweep: plan, index, report files, shard records. The name is checked here,
    where it becomes a path, whoever passed it (a spec, ``--sweep``, a flow parameter)."""
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


@dataclass(frozen=True)
class JobListing:
    """What one listing of ``jobs/`` shows: which jobs have a sidecar, and each video's size."""

    sidecars: frozenset[str]
    videos: dict[str, int]  # job key -> size of its video

    @property
    def archived(self) -> set[str]:
        """Jobs archived whole, as far as a listing can tell: a sidecar and a video that is
        not empty (a copy changed in place is found by reading it: ``wansweep verify``)."""
        return {k for k in self.sidecars if self.videos.get(k, 0) > 0}

    @property
    def lost(self) -> set[str]:
        """Jobs whose sidecar stands without its video, or with an empty one: the archive
        lost a finished video (a run fetches it from fal again)."""
        return set(self.sidecars) - self.archived


def list_jobs(store: Store) -> JobListing:
    """One listing of ``jobs/`` (with sizes), not a call per job."""
    sidecars, videos = set(), {}
    for key, size in store.list_sized(JOBS):
        parts = key.split("/")
        if len(parts) == 3 and parts[2] == SIDECAR:
            sidecars.add(parts[1])
        elif len(parts) == 3 and parts[2] == VIDEO:
            videos[parts[1]] = size
    return JobListing(frozenset(sidecars), videos)


def archived_keys(store: Store) -> set[str]:
    """Job keys archived whole: a sidecar and its video (see :class:`JobListing`)."""
    return list_jobs(store).archived


def is_archived(store: Store, job_key: str) -> bool:
    """Whether one job is archived whole: its sidecar stands and its video has the size the
    sidecar records (the sidecar is written last, so its presence alone once meant this)."""
    try:
        meta = store.get_json(job_file(job_key, SIDECAR))
    except ValueError:  # a damaged sidecar is rewritten by archiving the job again
        return False
    if not isinstance(meta, dict):
        return False
    size = store.size(job_file(job_key, VIDEO))
    recorded = (meta.get("video") or {}).get("size")
    return bool(size) and (recorded is None or size == recorded)


def damaged_key(job_key: str, stamp: str, name: str) -> str:
    """Where ``wansweep verify --repair`` sets aside a job's file found wrong (a video that
    does not match its sidecar, a sidecar that cannot be read): kept, never deleted."""
    return f"{JOBS}{job_key}/damaged/{stamp}-{name}"
