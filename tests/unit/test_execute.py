"""The job state machine, row by row of the table in wansweep.run.lifecycle: an in-process fake
fal queue and a real LocalStore, no server. Each test starts a job from one ledger state and
checks what was paid for (submits), what the ledger says and how the job ended."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from pathlib import Path

import fal_client
import pytest

from tests.helpers import make_image
from wansweep.errors import AmbiguousSubmit, FailureKind, FalError, NotSent, Stopped
from wansweep.fal.platform import Lookup
from wansweep.fal.stream import Completion
from wansweep.fal.types import FalResult, Handle
from wansweep.localfal.video import render_clip
from wansweep.plan.pricing import Budget
from wansweep.plan.spec import Job, LeaseSpec, ReconcileSpec, RunSettings
from wansweep.run.execute import DAMAGED_WINDOW, run_job
from wansweep.run.ledger import Ledger
from wansweep.run.lifecycle import SUCCEEDED, LedgerEntry, LedgerStatus, Outcome
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

    def wait(self, handle, *args):
        self.calls.append("wait")
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
