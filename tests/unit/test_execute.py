"""The job state machine, row by row of the table in wansweep.run.lifecycle: an in-process fake
fal queue and a real LocalStore, no server. Each test starts a job from one ledger state and
checks what was paid for (submits), what the ledger says and how the job ended."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
import time
from pathlib import Path

import fal_client
import pytest

from tests.helpers import make_image
from wansweep.errors import (
    AmbiguousSubmit,
    FailureKind,
    FalError,
    FalUnavailable,
    NotSent,
    Stopped,
    StoreRefused,
)
from wansweep.fal.platform import Lookup
from wansweep.fal.stream import Completion
from wansweep.fal.types import FalResult, Handle
from wansweep.localfal.video import render_clip
from wansweep.plan.pricing import Budget
from wansweep.plan.spec import Job, LeaseSpec, ReconcileSpec, RunSettings
from wansweep.run.execute import DAMAGED_WINDOW, run_job
from wansweep.run.leases import Leases, Owner
from wansweep.run.ledger import Ledger
from wansweep.run.lifecycle import SUCCEEDED, LedgerEntry, LedgerStatus, Outcome
from wansweep.run.reconcile import reconcile_store
from wansweep.run.runtime import Services
from wansweep.store import LocalStore
from wansweep.store.layout import job_file, lease_key

CLIP = render_clip(
    make_image(320, 240), prompt="p", seed=1, resolution="720p", duration="5", fps=4, short_side=64
)


UNKNOWN = Lookup(None, False, "not listed yet")
ABSENT = Lookup(None, True, "not listed long after: never accepted")


DONE = Completion(
    fal_client.Completed(logs=None, metrics={"inference_time": 1.5}),
    detected_at=100.0,
    completed_at=99.5,
    uncertainty=0.5,
    via="poll",
)


class FakeQueue:
    """Scripted fal: ``submits`` is a list of what each submit does ('ok', 'lost', or an
    exception); ``results`` likewise for each result fetch ('ok' or an exception)."""

    def __init__(self, submits=("ok",), results=("ok",), found=UNKNOWN, stop_on_wait=False):
        self.submit_script, self.result_script = list(submits), list(results)
        self.found, self.stop_on_wait = found, stop_on_wait
        self.stop = threading.Event()
        self.halted = threading.Event()
        self.calls: list[str] = []
        self.accepted = 0
        self.searched_without: list[tuple[str, ...]] = []  # ``earlier`` of each lookup
        self.windows: list[float | None] = []  # ``window`` of each lookup
        self.deadlines: list[float] = []
        self.units: str | None = None  # X-Fal-Billable-Units of results
        self.looked_at_once: list[bool] = []  # ``check_now`` of each wait

    def _handle(self, n: int) -> Handle:
        return Handle(
            f"req-{n}", f"https://q/r/{n}", f"https://q/r/{n}/status", f"https://q/r/{n}/c"
        )

    def submit(self, endpoint, body, *, deadline_s, marker=None, allow_fallbacks=False):
        self.calls.append("submit")
        self.deadlines.append(deadline_s)
        action = self.submit_script.pop(0)
        if isinstance(action, Exception):
            raise action
        self.accepted += 1
        if action == "lost":
            raise AmbiguousSubmit("answer lost")
        return self._handle(self.accepted)

    def find_submitted(self, endpoint, fields, since, settle_after, window=None, earlier=()):
        self.calls.append("find")
        self.windows.append(window)
        self.searched_without.append(earlier)
        if self.found.absent and settle_after == float("inf"):
            return UNKNOWN  # as fal's listing: without a start deadline, absence is never proven
        return self.found

    def confirm(self, endpoint, request_id, fields):
        return None

    def sleep(self, seconds):
        pass

    def wait(self, handle, poll=None, check_now=False):
        self.calls.append("wait")
        self.looked_at_once.append(check_now)
        if self.stop_on_wait:
            self.stop.set()
            raise Stopped("run cancelled")
        return DONE

    def result(self, handle, generation_failed=False, endpoint=None):
        self.calls.append("result")
        action = self.result_script.pop(0)
        if isinstance(action, Exception):
            raise action
        output = {"video": {"url": "https://cdn/v.mp4", "file_size": len(CLIP.data)}, "seed": 7}
        return FalResult(output, self.units)

    def is_running(self, handle):
        return True

    def cancel(self, handle):
        self.calls.append("cancel")

    def download(self, url, dest: Path, expected_size=None):
        self.calls.append("download")
        dest.write_bytes(CLIP.data)
        return len(CLIP.data), hashlib.sha256(CLIP.data).hexdigest()


@pytest.fixture
def image(tmp_path) -> Path:
    path = tmp_path / "in.png"
    path.write_bytes(make_image(320, 240))
    return path


@pytest.fixture
def job(image) -> Job:
    return Job(
        job_key="k1",
        arm="flash-720p",
        endpoint="wan/v2.6/image-to-video/flash",
        row_index=1,
        row_id="r1",
        prompt="a harbour",
        settings={"resolution": "720p", "duration": "5"},
        seed=7,
        image_uri=str(image),
        image_sha256="x",
        estimated_usd=0.25,
    )


def runtime(tmp_path, fal, budget=10.0, leases=None, **settings) -> Services:
    settings.setdefault("reconcile", ReconcileSpec(grace=0))
    settings = RunSettings(
        budget_usd=budget, endpoint_concurrency=4, leases=LeaseSpec(poll=0.01), **settings
    )
    store = LocalStore(tmp_path / "archive")
    return Services(store=store, fal=fal, budget=Budget(budget), settings=settings, leases=leases)


def seed_ledger(rt: Services, **fields) -> None:
    """An entry as an earlier run left it (read as a stored entry, status included)."""
    data = {"job_key": "k1", "deadline_s": 3600.0, **fields}
    if "handle" in data:
        data["handle"] = data["handle"].__dict__
    Ledger(rt.store)._write(LedgerEntry.from_json(data, "k1"))


def ledger(rt: Services) -> LedgerEntry:
    return Ledger(rt.store).get("k1")


HANDLE = Handle("req-old", "https://q/r/old", "https://q/r/old/status", "https://q/r/old/c")
FOUND = Lookup(HANDLE, False, "found")


def test_no_entry_submits_once_and_archives(tmp_path, job):
    fal = FakeQueue()
    rt = runtime(tmp_path, fal)
    result = run_job(job, rt)
    assert result.outcome is Outcome.ARCHIVED and fal.accepted == 1
    entry = ledger(rt)
    assert entry.status is LedgerStatus.ARCHIVED and entry.submits == 1 and entry.attempts == 1
    assert [h[0] for h in entry.history] == ["submitting", "submitted", "completed", "archived"]
    assert rt.store.exists(job_file("k1", "meta.json")) and rt.budget.committed == 0.25


def test_a_sidecar_and_its_video_mean_nothing_to_do(tmp_path, job):
    fal = FakeQueue()
    rt = runtime(tmp_path, fal)
    rt.store.put_bytes(job_file("k1", "video.mp4"), b"v" * 10)
    rt.store.put_json(job_file("k1", "meta.json"), {"job_key": "k1", "video": {"size": 10}})
    assert run_job(job, rt).outcome is Outcome.CACHED and fal.calls == []


@pytest.mark.parametrize("video", [None, b"", b"v" * 9])
def test_a_sidecar_whose_video_is_gone_or_wrong_is_not_archived(tmp_path, job, video):
    fal = FakeQueue()
    rt = runtime(tmp_path, fal)
    if video is not None:
        rt.store.put_bytes(job_file("k1", "video.mp4"), video)
    rt.store.put_json(job_file("k1", "meta.json"), {"job_key": "k1", "video": {"size": 10}})
    assert run_job(job, rt).outcome is not Outcome.CACHED


def test_submitted_is_resumed_not_paid_again(tmp_path, job):
    fal = FakeQueue()
    rt = runtime(tmp_path, fal)
    seed_ledger(rt, status="submitted", handle=HANDLE, request_id="req-old", attempts=1)
    assert run_job(job, rt).outcome is Outcome.RESUMED
    assert "submit" not in fal.calls and ledger(rt).request_id == "req-old"


def test_a_request_an_earlier_run_sent_counts_against_this_runs_budget(tmp_path, job):
    fal = FakeQueue()
    rt = runtime(tmp_path, fal, budget=0.25)
    seed_ledger(rt, status="submitted", handle=HANDLE, request_id="req-old", attempts=1)
    assert run_job(job, rt).outcome is Outcome.RESUMED
    assert rt.budget.holds("k1", 1) and rt.budget.committed == 0.25  # fal may bill it


def test_completed_is_archived_from_the_ledger_without_asking_fal(tmp_path, job):
    fal = FakeQueue()
    rt = runtime(tmp_path, fal)
    result = {"video": {"url": "https://cdn/v.mp4", "file_size": len(CLIP.data)}, "seed": 7}
    seed_ledger(rt, status="completed", handle=HANDLE, request_id="req-old", result=result)
    assert run_job(job, rt).outcome is Outcome.RESUMED
    assert fal.calls == ["download"]


def test_submitting_found_at_fal_is_adopted(tmp_path, job):
    fal = FakeQueue(found=FOUND)
    rt = runtime(tmp_path, fal)
    seed_ledger(rt, status="submitting", submitted_at=1.0, attempts=1)
    assert run_job(job, rt).outcome is Outcome.RESUMED  # an earlier run's request
    assert "submit" not in fal.calls and ledger(rt).reconciled


def test_submitting_proven_absent_is_submitted_again_as_a_new_attempt(tmp_path, job):
    fal = FakeQueue(found=ABSENT)
    rt = runtime(tmp_path, fal)
    seed_ledger(rt, status="submitting", submitted_at=1.0, attempts=1)
    assert run_job(job, rt).outcome is Outcome.ARCHIVED and fal.accepted == 1
    assert ledger(rt).attempts == 2  # the lost submit is never given back: no loop
    assert ledger(rt).retries("absent") == 1


def test_absence_is_never_proven_for_a_submit_without_fals_documented_deadline(tmp_path, job):
    # An entry of an older wansweep, which sent a start-timeout header fal does not document:
    # fal may hold such a request unstarted for ever, so "not listed" proves nothing.
    fal = FakeQueue(found=ABSENT)
    rt = runtime(tmp_path, fal)
    seed_ledger(rt, status="submitting", submitted_at=1.0, attempts=1, deadline_s=None)
    assert run_job(job, rt).outcome is Outcome.AMBIGUOUS and fal.accepted == 0
    assert "no start deadline" in ledger(rt).error or "not listed" in ledger(rt).error


def test_every_submit_sends_fals_documented_start_deadline_and_records_it(tmp_path, job):
    fal = FakeQueue()
    rt = runtime(
        tmp_path, fal, reconcile=ReconcileSpec(grace=0, start_timeout=900, settle_after=5000)
    )
    assert run_job(job, rt).outcome is Outcome.ARCHIVED
    assert fal.deadlines == [900] and ledger(rt).deadline_s == 900


def test_submitting_not_settled_stays_ambiguous_and_pays_nothing(tmp_path, job):
    fal = FakeQueue(found=UNKNOWN)
    rt = runtime(tmp_path, fal)
    seed_ledger(rt, status="submitting", submitted_at=1.0, attempts=1)
    result = run_job(job, rt)
    assert result.outcome is Outcome.AMBIGUOUS and fal.accepted == 0
    assert ledger(rt).status is LedgerStatus.AMBIGUOUS and "not listed yet" in ledger(rt).error
    assert "submit" not in fal.calls


def test_ambiguous_is_paid_again_only_when_the_user_says_so(tmp_path, job):
    fal = FakeQueue(found=UNKNOWN)
    rt = runtime(tmp_path, fal, resubmit_ambiguous=True)
    seed_ledger(rt, status="ambiguous", submitted_at=1.0, attempts=2)  # max_attempts is 2
    assert run_job(job, rt).outcome is Outcome.ARCHIVED and fal.accepted == 1
    entry = ledger(rt)
    assert entry.repaid == ("ambiguous",) and entry.attempts == 3  # one more, once, recorded
    # the earlier, maybe billed submit stays held beside the new one
    assert rt.budget.committed == pytest.approx(0.5)


@pytest.mark.parametrize("pay_again", [False, True])
def test_lost_answers_that_never_settle_cannot_loop(tmp_path, job, pay_again):
    fal = FakeQueue(submits=["lost"] * 5, found=UNKNOWN)  # fal took each; its records lag
    rt = runtime(tmp_path, fal, budget=10.0, resubmit_ambiguous=pay_again)
    result = run_job(job, rt)
    assert result.outcome is Outcome.AMBIGUOUS
    assert fal.accepted == (2 if pay_again else 1)  # the option pays again once, no more
    assert rt.budget.committed == pytest.approx(0.25 * fal.accepted)  # each may be billed
    # a later run with the option on pays nothing more: the ledger says it was used
    again = runtime(tmp_path, fal, resubmit_ambiguous=True)
    assert run_job(job, again).outcome is Outcome.AMBIGUOUS
    assert fal.accepted == 2 and ledger(rt).repaid == ("ambiguous",)


def test_paying_again_for_an_ambiguous_submit_stays_within_the_budget(tmp_path, job):
    fal = FakeQueue(submits=["lost"], found=UNKNOWN)
    rt = runtime(tmp_path, fal, budget=0.25, resubmit_ambiguous=True)  # room for one submit
    result = run_job(job, rt)
    assert result.outcome is Outcome.SKIPPED and fal.accepted == 1
    assert rt.budget.committed == pytest.approx(0.25)
    entry = ledger(rt)  # still ambiguous: the option is not used up by a refused payment
    assert entry.status is LedgerStatus.AMBIGUOUS and entry.repaid == () and entry.attempts == 1


def test_a_damaged_entry_is_kept_aside_and_settled_through_fal(tmp_path, job):
    fal = FakeQueue(found=FOUND)
    rt = runtime(tmp_path, fal)
    (tmp_path / "archive" / "ledger").mkdir(parents=True)
    (tmp_path / "archive" / "ledger" / "k1.json").write_text('{"job_key": "k1", "stat')
    assert run_job(job, rt).outcome in SUCCEEDED and fal.accepted == 0
    assert (tmp_path / "archive" / "ledger" / "k1.json.damaged").exists()
    assert ledger(rt).reconciled

    fal = FakeQueue(found=UNKNOWN)
    rt = runtime(tmp_path / "two", fal)
    (tmp_path / "two" / "archive" / "ledger").mkdir(parents=True)
    (tmp_path / "two" / "archive" / "ledger" / "k1.json").write_bytes(b"\x00" * 10)
    before = time.time()
    result = run_job(job, rt)
    assert result.outcome is Outcome.AMBIGUOUS and fal.accepted == 0
    entry = ledger(rt)
    assert "damaged" in entry.ambiguous and entry.error == "not listed yet"  # the lookup said
    # a submit that may have been paid for, looked for in the day before the entry's write
    assert entry.endpoint == job.endpoint and entry.attempts == 1
    assert entry.search_window == DAMAGED_WINDOW and fal.windows == [DAMAGED_WINDOW]
    assert before - 60 < entry.submitted_at <= time.time()
    assert entry.history[0][0] == "ambiguous" and entry.history[0][2] == "damaged"


def test_failed_generation_is_tried_again_and_its_reservation_given_back(tmp_path, job):
    fal = FakeQueue(submits=["ok", "ok"], results=[FalError("boom", FailureKind.FAILED, 500), "ok"])
    rt = runtime(tmp_path, fal, budget=0.25)  # room for one job: the failure was not billed
    assert run_job(job, rt).outcome is Outcome.ARCHIVED and fal.accepted == 2
    assert ledger(rt).retries("failed") == 1


def test_a_lost_answer_is_searched_for_without_the_jobs_earlier_requests(tmp_path, job):
    # The earlier attempts' requests carry the same fields minutes before: adopting one would
    # settle the new submit with an old (failed, or billed and collected) request.
    boom = FalError("boom", FailureKind.FAILED, 500)
    fal = FakeQueue(submits=["ok", "ok", "lost"], results=[boom, boom], found=ABSENT)
    rt = runtime(tmp_path, fal, max_attempts=3)
    assert run_job(job, rt).outcome is Outcome.FAILED  # absent: the third attempt is used up
    assert fal.searched_without == [("req-1", "req-2")]
    assert ledger(rt).earlier_requests == ("req-1", "req-2") and ledger(rt).request_id is None


def test_failing_every_attempt_ends_failed(tmp_path, job):
    boom = FalError("boom", FailureKind.FAILED, 500)
    fal = FakeQueue(submits=["ok", "ok"], results=[boom, boom])
    rt = runtime(tmp_path, fal)
    result = run_job(job, rt)
    assert result.outcome is Outcome.FAILED and result.error_kind is FailureKind.FAILED
    assert fal.accepted == 2 and ledger(rt).status is LedgerStatus.FAILED
    assert rt.budget.committed == 0


def test_refused_input_is_not_tried_again(tmp_path, job):
    fal = FakeQueue(results=[FalError("flagged", FailureKind.INVALID, 422)])
    rt = runtime(tmp_path, fal)
    assert run_job(job, rt).outcome is Outcome.FAILED and fal.accepted == 1
    assert ledger(rt).error_kind is FailureKind.INVALID


def test_stopped_while_waiting_cancels_at_fal_and_records_it(tmp_path, job):
    fal = FakeQueue(stop_on_wait=True)
    rt = runtime(tmp_path, fal)
    assert run_job(job, rt).outcome is Outcome.CANCELLED
    assert fal.calls[-1] == "cancel" and ledger(rt).status is LedgerStatus.CANCELLED


def test_a_users_cancel_does_not_use_up_an_attempt(tmp_path, job):
    fal = FakeQueue(results=[FalError("was cancelled", FailureKind.CANCELLED, 400), "ok"])
    rt = runtime(tmp_path, fal)
    seed_ledger(rt, status="cancelled", handle=HANDLE, request_id="req-old", attempts=2)
    assert run_job(job, rt).outcome in SUCCEEDED and fal.accepted == 1
    assert ledger(rt).attempts == 2


def test_a_cancelled_request_that_finished_anyway_is_archived_not_paid_again(tmp_path, job):
    fal = FakeQueue()  # fal finished it despite the cancel (it may do so, and bill it)
    rt = runtime(tmp_path, fal)
    seed_ledger(rt, status="cancelled", handle=HANDLE, request_id="req-old", attempts=1)
    assert run_job(job, rt).outcome in SUCCEEDED and fal.accepted == 0


def test_a_job_another_process_holds_is_waited_for(tmp_path, job):
    from wansweep.run.leases import Leases, Owner, lease_key

    fal = FakeQueue()
    rt = runtime(tmp_path, fal, leases=None)
    rt.leases = Leases(rt.store, Owner.new())
    other = Leases(rt.store, Owner.new())
    assert other.acquire("k1")
    owners = []
    submit = fal.submit

    def submit_checking_the_lease(*args, **kwargs):
        owners.append(json.loads(rt.store.get_bytes(lease_key("k1")))["owner"])
        return submit(*args, **kwargs)

    fal.submit = submit_checking_the_lease
    results = []
    worker = threading.Thread(target=lambda: results.append(run_job(job, rt)))
    worker.start()
    other.release("k1")  # the other process gives the job up: ours to run now
    worker.join()
    assert results[0].outcome is Outcome.ARCHIVED and owners == [rt.leases.owner.token]
    assert not rt.store.exists(lease_key("k1"))  # released when done

    rt2 = runtime(tmp_path / "b", FakeQueue())
    holder = Leases(rt2.store, Owner.new())
    assert holder.acquire("k1")
    rt2.leases = Leases(rt2.store, Owner.new())
    rt2.fal.stop.set()  # cancelled while waiting
    assert run_job(job, rt2).outcome is Outcome.BUSY and rt2.fal.calls == []
    holder.close()


def test_expired_is_reported_unless_the_user_allows_paying_again(tmp_path, job):
    gone = FalError("gone", FailureKind.EXPIRED, 410)
    fal = FakeQueue(results=[gone])
    rt = runtime(tmp_path, fal)
    seed_ledger(rt, status="submitted", handle=HANDLE, request_id="req-old", attempts=1)
    assert run_job(job, rt).outcome is Outcome.EXPIRED and fal.accepted == 0
    assert ledger(rt).status is LedgerStatus.EXPIRED

    fal = FakeQueue(results=[gone, "ok"])
    rt = runtime(tmp_path, fal, resubmit_expired=True)
    seed_ledger(rt, status="submitted", handle=HANDLE, request_id="req-old", attempts=1)
    assert run_job(job, rt).outcome in SUCCEEDED and fal.accepted == 1


def test_budget_refuses_before_any_submit(tmp_path, job):
    fal = FakeQueue()
    rt = runtime(tmp_path, fal, budget=0.1)
    result = run_job(job, rt)
    assert result.outcome is Outcome.SKIPPED and fal.calls == []
    assert "past the budget" in result.error and ledger(rt) is None


def test_a_refused_submit_gives_its_reservation_and_its_attempt_back(tmp_path, job):
    fal = FakeQueue(submits=[NotSent("no such app", FailureKind.REJECTED, 404)])
    rt = runtime(tmp_path, fal)
    result = run_job(job, rt)
    assert result.outcome is Outcome.FAILED and rt.budget.committed == 0
    assert (result.error, result.error_kind) == ("no such app", FailureKind.REJECTED)
    entry = ledger(rt)
    assert entry.status is LedgerStatus.FAILED and entry.attempts == 0
    assert (entry.error, entry.error_kind) == ("no such app", FailureKind.REJECTED)
    assert entry.history[-1][0] == "failed" and entry.history[-1][2] == "rejected"
    assert not rt.halted  # one job's refusal: the others go on


def test_a_submit_that_never_reached_fal_uses_no_attempt_and_stays_resumable(tmp_path, job):
    down = NotSent("ConnectError: connection refused", FailureKind.TRANSIENT, run_wide=True)
    fal = FakeQueue(submits=[down, down, "ok"])
    rt = runtime(tmp_path, fal, max_attempts=1)
    result = run_job(job, rt)
    assert result.outcome is Outcome.UNSENT and fal.accepted == 0
    entry = ledger(rt)
    assert entry.status is LedgerStatus.RETRYING and entry.attempts == 0
    assert rt.budget.committed == 0  # every other job would meet it: halted, saying why
    assert rt.halted == "ConnectError: connection refused" == result.error
    assert result.error_kind is FailureKind.TRANSIENT
    assert fal.halted.is_set()  # and submits still retrying stop at their next try
    second = runtime(tmp_path, fal, max_attempts=1)  # the cause fixed: the next run pays once
    assert run_job(job, second).outcome is Outcome.UNSENT  # (still down: nothing sent)
    assert run_job(job, runtime(tmp_path, fal, max_attempts=1)).outcome is Outcome.ARCHIVED
    assert fal.accepted == 1 and ledger(rt).attempts == 1


def test_a_halted_run_sends_nothing_more(tmp_path, job):
    fal = FakeQueue()
    rt = runtime(tmp_path, fal)
    rt.halt("fal refused the key (401)")
    assert run_job(job, rt).outcome is Outcome.UNSENT and fal.calls == []
    assert ledger(rt) is None and rt.budget.committed == 0


def test_a_lease_taken_over_while_stalled_submits_nothing(tmp_path, job):
    # This process took the lease, then stalled past its ttl; another took it over on the
    # store. Its renewal thread has not run since: only a look at the store itself tells.
    from wansweep.run.leases import Leases, Owner

    fal = FakeQueue()
    rt = runtime(tmp_path, fal)
    rt.leases = Leases(rt.store, Owner.new())
    real_acquire = rt.leases.acquire

    def acquire_then_stall(job_key):
        assert real_acquire(job_key)
        current = rt.store.read_versioned(lease_key(job_key))
        assert rt.store.replace_if(lease_key(job_key), Owner.new().payload(), current[1])
        return True

    rt.leases.acquire = acquire_then_stall
    result = run_job(job, rt)
    assert result.outcome is Outcome.BUSY and "taken over" in result.error
    assert "submit" not in fal.calls and rt.budget.committed == 0 and ledger(rt) is None


def test_a_refused_key_is_met_by_one_submit_of_an_endpoint_not_by_every_job(tmp_path, image):
    """Jobs in flight at once: the endpoint's first submit goes alone; refused (401), it halts
    the run before the next one passes the gate."""
    refused = NotSent("refused (401)", FailureKind.REJECTED, 401, run_wide=True)
    fal = FakeQueue(submits=[refused] * 8)
    gate_open = threading.Event()
    submit = fal.submit

    def slow_submit(*args, **kwargs):  # the others queue at the gate meanwhile
        gate_open.wait(5)
        return submit(*args, **kwargs)

    fal.submit = slow_submit
    rt = runtime(tmp_path, fal)
    jobs = [
        Job(
            job_key=f"k{n}",
            arm="flash-720p",
            endpoint="wan/v2.6/image-to-video/flash",
            row_index=n,
            row_id=f"r{n}",
            prompt="a harbour",
            settings={"resolution": "720p", "duration": "5"},
            seed=n,
            image_uri=str(image),
            image_sha256="x",
            estimated_usd=0.25,
        )
        for n in range(6)
    ]
    results = []
    threads = [threading.Thread(target=lambda j=j: results.append(run_job(j, rt))) for j in jobs]
    for t in threads:
        t.start()
    gate_open.set()
    for t in threads:
        t.join()
    assert fal.calls.count("submit") == 1 and rt.halted
    assert {r.outcome for r in results} == {Outcome.UNSENT}
    assert rt.budget.committed == 0


def archive_copy(store) -> None:
    """The job's video and sidecar, as a finished run leaves them."""
    store.put_bytes(job_file("k1", "video.mp4"), b"v" * 10)
    store.put_json(job_file("k1", "meta.json"), {"job_key": "k1", "video": {"size": 10}})


def test_a_jobs_result_names_it_and_what_it_paid_for(tmp_path, job):
    fal = FakeQueue()
    rt = runtime(tmp_path, fal)
    result = run_job(job, rt)
    assert (result.job_key, result.arm, result.row_id, result.seed) == ("k1", "flash-720p", "r1", 7)
    assert result.estimated_usd == 0.25 and result.outcome is Outcome.ARCHIVED
    assert (result.request_id, result.submits) == ("req-1", 1)
    assert "job k1 (flash-720p, row r1, seed 7)" in result.line()
    # found archived by a later run: nothing submitted, no request to name
    cached = run_job(job, runtime(tmp_path, FakeQueue()))
    assert cached.outcome is Outcome.CACHED and (cached.request_id, cached.submits) == (None, 0)
    assert (cached.job_key, cached.arm, cached.row_id, cached.seed) == ("k1", "flash-720p", "r1", 7)


def test_a_job_counts_as_in_flight_until_it_returns(tmp_path, job):
    # Ctrl-C waits while jobs are in flight, so that each records its ledger before exiting.
    fal = FakeQueue()
    rt = runtime(tmp_path, fal)
    seen = []
    submit = fal.submit

    def submit_counting(*args, **kwargs):
        seen.append(rt.active)
        return submit(*args, **kwargs)

    fal.submit = submit_counting
    run_job(job, rt)
    assert seen == [1] and rt.active == 0

    fal = FakeQueue()
    rt = runtime(tmp_path / "two", fal)
    rt.active = 1  # another job of this process is in flight meanwhile
    seen.clear()
    submit = fal.submit
    fal.submit = submit_counting
    run_job(job, rt)
    assert seen == [2] and rt.active == 1


class RefusingArchive(LocalStore):
    """An archive whose disk filled up just as the video was uploaded."""

    def put_verified(self, key, path, sha256, content_type=None):
        raise StoreRefused(f"the archive {self.uri} is full: No space left on device")


def test_an_archive_that_refuses_writes_halts_the_run_and_keeps_what_fal_made(tmp_path, job):
    fal = FakeQueue()
    rt = runtime(tmp_path, fal)
    rt.store = RefusingArchive(tmp_path / "archive")
    result = run_job(job, rt)
    assert result.outcome is Outcome.UNARCHIVED and result.job_key == "k1"
    assert "is full" in result.error and rt.halted == result.error  # no more submits
    assert fal.halted.is_set() and rt.active == 0
    assert ledger(rt).status is LedgerStatus.COMPLETED  # what fal made stays recorded
    # the archive fixed, the next run fetches the video: not paid again
    again = runtime(tmp_path, fal)
    assert run_job(job, again).outcome is Outcome.RESUMED and fal.accepted == 1


def test_an_archived_video_the_archive_lost_is_fetched_again_not_paid_again(tmp_path, job):
    fal = FakeQueue()
    rt = runtime(tmp_path, fal)
    result = {"video": {"url": "https://cdn/v.mp4", "file_size": len(CLIP.data)}, "seed": 7}
    seed_ledger(
        rt, status="archived", handle=HANDLE, request_id="req-old", result=result, submits=1
    )
    repaired = run_job(job, rt)
    assert repaired.outcome is Outcome.REPAIRED and fal.calls == ["download"]
    assert (repaired.request_id, repaired.submits) == ("req-old", 1)
    assert rt.store.exists(job_file("k1", "meta.json"))


# An entry an earlier run left: one submit accepted, its generation failed, one attempt used.
EARLIER = dict(
    status="failed", request_id="req-old", submits=1, attempts=1, error="boom", error_kind="failed"
)


def _lease_taken_over_at_submit(rt):
    rt.leases = Leases(rt.store, Owner.new())
    real_acquire = rt.leases.acquire

    def acquire_then_stall(job_key):
        assert real_acquire(job_key)
        current = rt.store.read_versioned(lease_key(job_key))
        assert rt.store.replace_if(lease_key(job_key), Owner.new().payload(), current[1])
        return True

    rt.leases.acquire = acquire_then_stall


BOOM = FalError("boom", FailureKind.FAILED, 500)
GONE = FalError("gone", FailureKind.EXPIRED, 410)
REFUSED = NotSent("no such app", FailureKind.REJECTED, 404)
DOWN = NotSent("ConnectError: connection refused", FailureKind.TRANSIENT, run_wide=True)


@pytest.mark.parametrize(
    "queue, budget, leased, outcome, submits",
    [
        (dict(), 10.0, False, Outcome.ARCHIVED, 2),
        (dict(results=[BOOM]), 10.0, False, Outcome.FAILED, 2),
        (dict(results=[GONE]), 10.0, False, Outcome.EXPIRED, 2),
        (dict(stop_on_wait=True), 10.0, False, Outcome.CANCELLED, 2),
        (dict(submits=["lost"]), 10.0, False, Outcome.AMBIGUOUS, 1),
        (dict(submits=[REFUSED]), 10.0, False, Outcome.FAILED, 1),
        (dict(submits=[DOWN]), 10.0, False, Outcome.UNSENT, 1),
        (dict(), 0.1, False, Outcome.SKIPPED, 1),
        (dict(), 10.0, True, Outcome.BUSY, 1),
    ],
    ids=lambda v: str(v) if isinstance(v, Outcome) else None,
)
def test_a_jobs_result_reports_the_submits_its_ledger_holds_however_it_ends(
    tmp_path, job, queue, budget, leased, outcome, submits
):
    # The user raised max_attempts: the failed job is tried again, from its ledger.
    fal = FakeQueue(**queue)
    rt = runtime(tmp_path, fal, budget=budget)
    seed_ledger(rt, **EARLIER)
    if leased:
        _lease_taken_over_at_submit(rt)
    result = run_job(job, rt)
    entry = ledger(rt)
    assert result.outcome is outcome and entry.submits == submits == result.submits
    assert result.request_id == entry.request_id
    assert rt.budget.committed <= budget


def test_a_retried_job_keeps_its_earlier_requests_whatever_ends_it(tmp_path, job):
    # A later lookup must not adopt the earlier, failed request as the new submit's.
    fal = FakeQueue(submits=[REFUSED])
    rt = runtime(tmp_path, fal)
    seed_ledger(rt, **EARLIER)
    result = run_job(job, rt)
    assert result.outcome is Outcome.FAILED and result.error_kind is FailureKind.REJECTED
    entry = ledger(rt)
    assert entry.earlier_requests == ("req-old",) and entry.attempts == 1
    assert entry.status is LedgerStatus.FAILED and entry.history[-1][2] == "rejected"


def test_a_failed_generation_is_recorded_with_its_error_and_cause(tmp_path, job):
    fal = FakeQueue(submits=["ok", "ok"], results=[BOOM, BOOM])
    rt = runtime(tmp_path, fal)
    result = run_job(job, rt)
    assert result.outcome is Outcome.FAILED and result.error == "boom"
    entry = ledger(rt)
    assert (entry.error, entry.error_kind) == ("boom", FailureKind.FAILED)
    assert entry.history[-1][0] == "failed" and entry.history[-1][2] == "failed"


def test_an_unsettled_lost_answer_tells_the_user_how_it_is_settled(tmp_path, job):
    fal = FakeQueue(submits=["lost"], found=UNKNOWN)
    rt = runtime(tmp_path, fal)
    result = run_job(job, rt)
    assert result.outcome is Outcome.AMBIGUOUS and result.error_kind is FailureKind.AMBIGUOUS
    assert "wansweep reconcile" in result.error and "not listed yet" in result.error


@pytest.mark.parametrize(
    "queue, outcome, kind",
    [
        (dict(results=[FalError("flagged", FailureKind.INVALID, 422)]), Outcome.FAILED, "invalid"),
        (dict(results=[GONE]), Outcome.EXPIRED, "expired"),
    ],
)
def test_an_ended_job_is_reported_the_same_by_later_runs_its_ledger_untouched(
    tmp_path, job, queue, outcome, kind
):
    fal = FakeQueue(**queue)
    first = run_job(job, runtime(tmp_path, fal))
    assert first.outcome is outcome and fal.accepted == 1
    before = ledger(runtime(tmp_path, fal))
    fal = FakeQueue()
    later = run_job(job, runtime(tmp_path, fal))
    assert (later.outcome, later.error, later.error_kind) == (outcome, first.error, kind)
    assert fal.calls == [] and ledger(runtime(tmp_path, fal)) == before


def test_a_job_with_no_attempts_left_says_so_and_pays_nothing(tmp_path, job):
    fal = FakeQueue()
    rt = runtime(tmp_path, fal)
    seed_ledger(rt, status="retrying", attempts=2)  # max_attempts is 2
    result = run_job(job, rt)
    assert result.outcome is Outcome.FAILED and result.error == "no attempts left"
    assert fal.calls == [] and ledger(rt).status is LedgerStatus.FAILED


def test_a_request_from_an_earlier_run_is_looked_at_at_once_a_fresh_one_is_not(tmp_path, job):
    # A request taken over may be long done; one submitted just now is not.
    fal = FakeQueue(submits=["ok", "ok"], results=[BOOM, "ok"])
    assert run_job(job, runtime(tmp_path / "fresh", fal)).outcome is Outcome.ARCHIVED
    assert fal.looked_at_once == [False, False]

    fal = FakeQueue()
    rt = runtime(tmp_path / "resumed", fal)
    seed_ledger(rt, status="submitted", handle=HANDLE, request_id="req-old", attempts=1)
    assert run_job(job, rt).outcome is Outcome.RESUMED and fal.looked_at_once == [True]

    fal = FakeQueue(found=FOUND)
    rt = runtime(tmp_path / "settled", fal)
    seed_ledger(rt, status="submitting", submitted_at=1.0, attempts=1)
    assert run_job(job, rt).outcome is Outcome.RESUMED and fal.looked_at_once == [True]


def _video_gone_once(fal, times=1):
    download, left = fal.download, [times]

    def gone_then_ok(*args, **kwargs):
        fal.calls.append("download")
        if left[0]:
            left[0] -= 1
            raise FalError("video gone from fal's CDN (404)", FailureKind.EXPIRED, 404)
        return download(*args, **kwargs)

    fal.download = gone_then_ok


def test_a_video_gone_before_it_was_archived_is_paid_again_only_if_allowed_once(tmp_path, job):
    fal = FakeQueue(submits=["ok", "ok"], results=["ok", "ok"])
    _video_gone_once(fal)
    rt = runtime(tmp_path / "no", fal)
    assert run_job(job, rt).outcome is Outcome.EXPIRED and fal.accepted == 1
    assert ledger(rt).status is LedgerStatus.EXPIRED

    fal = FakeQueue(submits=["ok", "ok"], results=["ok", "ok"])
    _video_gone_once(fal)
    rt = runtime(tmp_path / "yes", fal, resubmit_expired=True, max_attempts=1)
    assert run_job(job, rt).outcome is Outcome.ARCHIVED and fal.accepted == 2
    entry = ledger(rt)
    assert entry.repaid == ("expired",) and entry.retries("expired") == 1
    assert rt.budget.committed == pytest.approx(0.5)  # the lost video was billed too

    fal = FakeQueue(submits=["ok"] * 3, results=["ok"] * 3)
    _video_gone_once(fal, times=3)
    rt = runtime(tmp_path / "twice", fal, resubmit_expired=True, max_attempts=1)
    assert run_job(job, rt).outcome is Outcome.EXPIRED and fal.accepted == 2  # once, no more


def test_paying_again_for_a_gone_video_waits_for_budget_and_the_ledger_says_why(tmp_path, job):
    fal = FakeQueue(submits=["ok", "ok"], results=["ok", "ok"])
    _video_gone_once(fal)
    rt = runtime(tmp_path, fal, budget=0.25, resubmit_expired=True, max_attempts=1)
    assert run_job(job, rt).outcome is Outcome.SKIPPED and fal.accepted == 1
    entry = ledger(rt)
    assert entry.status is LedgerStatus.RETRYING and "video gone" in entry.error
    assert entry.repaid == ("expired",)
    again = runtime(tmp_path, fal, budget=1.0, resubmit_expired=True, max_attempts=1)
    assert run_job(job, again).outcome is Outcome.ARCHIVED and fal.accepted == 2


def test_a_job_holds_its_endpoints_fleet_wide_slot_from_submit_to_result(tmp_path, job):
    fal = FakeQueue()
    rt = runtime(tmp_path, fal)
    events = []

    @contextlib.contextmanager
    def guard(endpoint):
        events.append(("enter", endpoint, list(fal.calls)))
        yield
        events.append(("exit", endpoint, list(fal.calls)))

    rt.guard = guard
    assert run_job(job, rt).outcome is Outcome.ARCHIVED
    assert events == [
        ("enter", job.endpoint, []),
        ("exit", job.endpoint, ["submit", "wait", "result"]),
    ]


class Polls:
    """``fal.stop`` as a job waiting for another process sees it: each wait is one lease poll,
    during which the other process does what ``meanwhile`` says; then the run is cancelled."""

    def __init__(self, *meanwhile):
        self.meanwhile, self.timeouts = list(meanwhile), []

    def wait(self, timeout):
        self.timeouts.append(timeout)
        if not self.meanwhile:
            return True
        self.meanwhile.pop(0)()
        return False

    def is_set(self):
        return False


def _held_elsewhere(tmp_path, meanwhile):
    fal = FakeQueue()
    rt = runtime(tmp_path, fal)
    rt.leases = Leases(rt.store, Owner.new())
    other = Leases(rt.store, Owner.new())
    assert other.acquire("k1")
    fal.stop = Polls(*meanwhile(rt, other))
    return fal, rt, other


def test_a_job_the_other_holder_archives_is_not_paid_again(tmp_path, job):
    fal, rt, other = _held_elsewhere(
        tmp_path, lambda rt, other: [lambda: None, lambda: archive_copy(rt.store)]
    )
    result = run_job(job, rt)
    assert result.outcome is Outcome.CACHED and fal.calls == []
    assert fal.stop.timeouts == [0.01, 0.01]  # looked again every lease poll
    other.close()


def test_a_job_its_holder_gives_up_is_taken_over_at_the_next_poll(tmp_path, job):
    fal, rt, other = _held_elsewhere(
        tmp_path, lambda rt, other: [lambda: None, lambda: other.release("k1")]
    )
    owners = []
    submit = fal.submit

    def submit_checking_the_lease(*args, **kwargs):
        owners.append(json.loads(rt.store.get_bytes(lease_key("k1")))["owner"])
        return submit(*args, **kwargs)

    fal.submit = submit_checking_the_lease
    assert run_job(job, rt).outcome is Outcome.ARCHIVED and fal.accepted == 1
    assert owners == [rt.leases.owner.token] and len(fal.stop.timeouts) == 2
    other.close()


def test_a_job_archived_just_as_its_lease_came_free_is_not_paid_again(tmp_path, job):
    # The holder archived it and released the lease between our look and our take.
    fal, rt, other = _held_elsewhere(tmp_path, lambda rt, other: [lambda: None])
    acquire = rt.leases.acquire
    tries = []

    def acquire_after_the_holder_finished(job_key):
        tries.append(job_key)
        if len(tries) == 2:
            archive_copy(rt.store)
            other.release(job_key)
        return acquire(job_key)

    rt.leases.acquire = acquire_after_the_holder_finished
    result = run_job(job, rt)
    assert result.outcome is Outcome.CACHED and fal.calls == [] and result.submits == 0
    assert tries == ["k1", "k1"] and not rt.store.exists(lease_key("k1"))
    other.close()


def _damaged(tmp_path, age_s: float = 0.0) -> None:
    folder = tmp_path / "archive" / "ledger"
    folder.mkdir(parents=True)
    (folder / "k1.json").write_text('{"job_key": "k1", "stat')
    if age_s:
        then = time.time() - age_s
        os.utime(folder / "k1.json", (then, then))


def test_a_damaged_entrys_submit_is_looked_for_from_its_last_write_and_can_be_reconciled(
    tmp_path, job
):
    fal = FakeQueue(found=UNKNOWN)
    rt = runtime(tmp_path, fal)
    _damaged(tmp_path, age_s=7200)  # last written two hours ago
    before = time.time()
    assert run_job(job, rt).outcome is Outcome.AMBIGUOUS and fal.accepted == 0
    entry = ledger(rt)
    assert before - 7400 < entry.submitted_at < before - 7000
    assert "not valid JSON" in entry.ambiguous and ".damaged" in entry.ambiguous
    # the job's request fields are recorded, so `wansweep reconcile` can settle it
    assert entry.fields == job.request_fields()
    assert reconcile_store(rt.store, FakeQueue(found=FOUND), 5000)["found"] == 1
    assert ledger(rt).status is LedgerStatus.SUBMITTED and ledger(rt).request_id == "req-old"


def test_a_damaged_entry_is_replaced_before_fal_is_asked_saying_why(tmp_path, job):
    fal = FakeQueue(found=UNKNOWN)

    def unreachable(*args, **kwargs):
        raise FalUnavailable("fal's records unreachable")

    fal.find_submitted = unreachable
    rt = runtime(tmp_path, fal)
    _damaged(tmp_path)
    with pytest.raises(FalUnavailable):  # retried as a whole; the ledger resumes it
        run_job(job, rt)
    entry = ledger(rt)
    assert entry.status is LedgerStatus.AMBIGUOUS and entry.attempts == 1
    assert entry.error == "ledger entry of k1 is not valid JSON"
    assert (tmp_path / "archive" / "ledger" / "k1.json.damaged").exists()
