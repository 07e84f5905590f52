"""The money promises under generated histories: whatever fal answers, in whatever order, over
several runs of the same jobs, with every option that changes submitting.

A truthful in-process fal (it never claims a request it took is absent, and bills what it
says fal bills) answers each call with what Hypothesis draws: accepted, the answer lost after
fal took it or before, a 5xx after accepting, 429 and ingress errors, a connection refused, a
refused key or input; generations that succeed, fail unbilled, miss their start deadline or
are refused after GPU time; results and videos gone; a listing that lags or stores no payload;
fal's clock skewed either way; Ctrl-C at any call. Each example runs a few jobs through up to
four runs, each with its own budget, then checks:

- fal accepted at most ``max_attempts`` submits per job, plus one per pay-again option on;
- what fal may bill for the requests it accepted during a run never passes that run's budget,
  and the run's budget still holds every such request when the run ends;
- every run ends by itself (a cap on calls per job turns a loop into a failure);
- one job's video is collected from at most one request, and archived at most once.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
import types
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from unittest import mock

import fal_client
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers import make_image
from wansweep.errors import AmbiguousSubmit, FailureKind, FalError, NotSent, Stopped
from wansweep.fal.platform import Lookup
from wansweep.fal.stream import Completion
from wansweep.fal.types import FalResult, Handle
from wansweep.localfal.video import render_clip
from wansweep.plan.pricing import Budget
from wansweep.plan.spec import Job, LeaseSpec, ReconcileSpec, RunSettings
from wansweep.run import execute, steps
from wansweep.run.execute import run_job
from wansweep.run.ledger import Ledger
from wansweep.run.runtime import Services
from wansweep.store import LocalStore
from wansweep.store.layout import job_file

CLIP = render_clip(
    make_image(96, 64), prompt="p", seed=1, resolution="720p", duration="5", fps=2, short_side=32
)
PRICE = 0.25
SETTLE_AFTER = 1000.0  # a submit's absence is provable this long (fal's clock) after it
CALLS_PER_JOB = 60  # far above any bounded history: more is a loop

SUBMIT = st.sampled_from(
    [
        "accept",
        "accept",
        "accept",
        "lost_after_accept",  # fal took it; the answer never came
        "5xx_after_accept",  # fal took it; answered 500
        "lost_not_taken",  # the answer never came; fal never took it
        "429",  # refused before queueing, every try
        "connect_refused",  # never connected
        "401",
        "422",
    ]
)
GENERATION = st.sampled_from(["ok", "ok", "ok", "failed", "start_timeout", "invalid", "gone"])


@dataclass
class Request:
    rid: str
    job_key: str
    attempt: int
    seed: int
    outcome: str  # ok / failed / start_timeout / invalid / gone
    run: int  # which run sent it
    payload_stored: bool
    collected: bool = False

    @property
    def may_be_billed(self) -> bool:
        """What fal may charge (its FAQ): a produced video, a 422 after GPU time, an expired
        result (billed when it completed); never a failed generation or a missed deadline."""
        return self.outcome in ("ok", "invalid", "gone")


@dataclass
class TruthfulFal:
    """fal as it documents itself, answering with Hypothesis's draws."""

    data: st.DataObject
    skew: float  # fal's clock minus ours
    stop: threading.Event = field(default_factory=threading.Event)
    halted: threading.Event = field(default_factory=threading.Event)
    requests: dict[str, Request] = field(default_factory=dict)
    advanced: float = 0.0  # time that passed between runs (fal's and ours alike)
    run: int = 0
    calls: int = 0
    stop_at: int | None = None
    cap: int = CALLS_PER_JOB

    # ------------------------------------------------------------------ helpers
    def now(self) -> float:
        return self.local_time() + self.skew

    def local_time(self) -> float:
        """Our clock: the machine's, plus the time that passed between runs."""
        return time.time() + self.advanced

    def fal_time(self, local: float) -> float:
        return local + self.skew

    def _tick(self) -> None:
        self.calls += 1
        assert self.calls <= self.cap, "a job kept calling fal: a loop"
        if self.stop_at is not None and self.calls >= self.stop_at:
            self.stop.set()

    def sleep(self, seconds: float) -> None:
        if self.stop.is_set():
            raise Stopped("run cancelled")

    # ------------------------------------------------------------------ queue
    def submit(self, endpoint, body, *, deadline_s, marker=None, allow_fallbacks=False):
        self._tick()
        assert deadline_s and marker
        answer = self.data.draw(SUBMIT, label="submit")
        if answer == "429":
            raise NotSent("submit not accepted after 8 tries (429)", FailureKind.TRANSIENT, 429)
        if answer == "connect_refused":
            raise NotSent("ConnectError: refused", FailureKind.TRANSIENT, run_wide=True)
        if answer == "401":
            raise NotSent("refused (401)", FailureKind.REJECTED, 401, run_wide=True)
        if answer == "422":
            raise NotSent("refused (422)", FailureKind.INVALID, 422)
        if answer == "lost_not_taken":
            raise AmbiguousSubmit("ReadError: the answer was lost")
        job_key, attempt = marker
        rid = uuid.uuid4().hex
        self.requests[rid] = Request(
            rid,
            job_key,
            attempt,
            body["seed"],
            self.data.draw(GENERATION, label="generation"),
            self.run,
            self.data.draw(st.booleans(), label="payload stored"),
        )
        if answer != "accept":
            raise AmbiguousSubmit(f"{answer}: fal may hold it")
        return self._handle(rid)

    @staticmethod
    def _handle(rid: str) -> Handle:
        base = f"https://queue.test/app/requests/{rid}"
        return Handle(rid, base, base + "/status", base + "/cancel")

    def wait(self, handle, poll, check_now=False):
        self._tick()
        if self.stop.is_set():
            raise Stopped("run cancelled")
        if self.requests[handle.request_id].outcome == "gone":
            if self.data.draw(st.booleans(), label="status 404"):
                raise FalError("fal no longer knows it", FailureKind.EXPIRED, 404)
        done = fal_client.Completed(logs=None, metrics={"inference_time": 1.0})
        return Completion(done, time.time(), time.time(), 0.0, "poll")

    def result(self, handle, generation_failed=False, endpoint=None):
        self._tick()
        request = self.requests[handle.request_id]
        if request.outcome in ("failed", "start_timeout"):
            raise FalError("generation failed", FailureKind.FAILED, 500)
        if request.outcome == "invalid":
            raise FalError("input refused", FailureKind.INVALID, 422)
        if request.outcome == "gone":
            raise FalError("result expired", FailureKind.EXPIRED, 410)
        output = {"video": {"url": f"https://cdn.test/{request.rid}.mp4"}, "seed": 1}
        return FalResult(output, "5")

    def download(self, url, dest: Path, expected_size=None):
        self._tick()
        rid = url.rsplit("/", 1)[1].removesuffix(".mp4")
        if self.data.draw(st.booleans(), label="video gone from the CDN") and self.data.draw(
            st.booleans()
        ):
            raise FalError("video gone", FailureKind.EXPIRED, 404)
        request = self.requests[rid]
        request.collected = True
        dest.write_bytes(CLIP.data)
        return len(CLIP.data), hashlib.sha256(CLIP.data).hexdigest()

    def is_running(self, handle):
        return self.data.draw(st.booleans(), label="running when cancelled")

    def cancel(self, handle):
        pass

    # ------------------------------------------------------------------ records
    def find_submitted(self, endpoint, fields, submitted_at, settle_after, window=None, earlier=()):
        """fal's listing, truthfully: a request it took is found (when listed, alone, with its
        payload) or nothing is proven; "absent" only when it took no unknown request of the
        job, and only once ``settle_after`` has passed on fal's clock."""
        self._tick()
        mine = [
            r
            for r in self.requests.values()
            if r.seed == fields.get("seed") and r.rid not in earlier
        ]
        listed = [r for r in mine if self.data.draw(st.booleans(), label="listed yet")]
        if len(mine) == 1 and listed and listed[0].payload_stored:
            return Lookup(self._handle(listed[0].rid), False, "found")
        if mine:
            return Lookup(None, False, "not settled")
        waited = self.now() - self.fal_time(submitted_at)
        if waited >= settle_after:
            return Lookup(None, True, "never taken")
        return Lookup(None, False, "not listed yet")

    def confirm(self, endpoint, request_id, fields):
        return None


def _job(tmp: Path, n: int) -> Job:
    image = tmp / "in.png"
    if not image.exists():
        image.write_bytes(make_image(96, 64))
    key = f"job{n:020d}"
    return Job(
        job_key=key,
        arm="flash-720p",
        endpoint="wan/v2.6/image-to-video/flash",
        row_index=n,
        row_id=f"r{n}",
        prompt="a harbour",
        settings={"resolution": "720p", "duration": "5"},
        seed=n,
        image_uri=str(image),
        image_sha256="x",
        estimated_usd=PRICE,
    )


@given(data=st.data())
@settings(
    # `make mutate` runs this once per mutant: fewer histories there
    max_examples=int(os.environ.get("WANSWEEP_MONEY_EXAMPLES", "300")),
    deadline=None,
    derandomize=True,  # the same histories on every machine: a failure is reproducible
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
def test_no_history_pays_twice_passes_a_budget_or_loops(tmp_path_factory, data):
    tmp = tmp_path_factory.mktemp("machine")
    max_attempts = data.draw(st.integers(1, 3), label="max_attempts")
    pay_again_ambiguous = data.draw(st.booleans(), label="--resubmit-ambiguous")
    pay_again_expired = data.draw(st.booleans(), label="--resubmit-expired")
    skew = data.draw(st.sampled_from([-600.0, 0.0, 600.0]), label="fal's clock skew")
    jobs = [_job(tmp, n) for n in range(data.draw(st.integers(1, 3), label="jobs"))]
    fal = TruthfulFal(data, skew)
    store = LocalStore(tmp / "archive")
    archived_twice: list[str] = []
    clock = types.SimpleNamespace(time=fal.local_time)  # the time that passes between runs
    with mock.patch.object(execute, "time", clock), mock.patch.object(steps, "time", clock):
        archived_twice += _runs(
            data, fal, store, jobs, max_attempts, pay_again_ambiguous, pay_again_expired
        )
    limit = max_attempts + pay_again_ambiguous + pay_again_expired
    for job in jobs:
        accepted = [r for r in fal.requests.values() if r.job_key == job.job_key]
        assert len(accepted) <= limit, (job.job_key, len(accepted), limit)
        assert sum(r.collected for r in accepted) <= 1 + pay_again_expired
        entry = Ledger(store).get(job.job_key)
        if entry is not None:
            assert entry.attempts <= limit
    assert not archived_twice


def _runs(data, fal, store, jobs, max_attempts, pay_again_ambiguous, pay_again_expired):
    archived_twice = []
    for run in range(data.draw(st.integers(1, 4), label="runs")):
        fal.run, fal.calls = run, 0
        fal.stop.clear()
        fal.advanced += data.draw(st.sampled_from([0.0, SETTLE_AFTER + 1]), label="time passes")
        budget_usd = PRICE * data.draw(st.integers(1, 6), label="budget in jobs")
        fal.stop_at = data.draw(st.none() | st.integers(1, 20), label="Ctrl-C at call")
        settings = RunSettings(
            budget_usd=budget_usd,
            max_attempts=max_attempts,
            resubmit_ambiguous=pay_again_ambiguous,
            resubmit_expired=pay_again_expired,
            reconcile=ReconcileSpec(
                grace=0, start_timeout=SETTLE_AFTER - 1, settle_after=SETTLE_AFTER
            ),
            leases=LeaseSpec(poll=0.01),
        )
        services = Services(store=store, fal=fal, budget=Budget(budget_usd), settings=settings)
        for job in jobs:
            fal.cap = fal.calls + CALLS_PER_JOB
            had_sidecar = store.exists(job_file(job.job_key, "meta.json"))
            result = run_job(job, services)
            if had_sidecar and result.outcome.value != "cached":
                archived_twice.append(job.job_key)
        sent_now = [r for r in fal.requests.values() if r.run == run]
        billable = [r for r in sent_now if r.may_be_billed]
        assert PRICE * len(billable) <= budget_usd + 1e-9, (budget_usd, billable)
        for r in billable:  # held until the run's end: nothing billed was given back
            assert services.budget.holds(r.job_key, r.attempt), (r, services.budget._held)
    return archived_twice
