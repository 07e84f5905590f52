"""The job state machine, row by row of the table in wansweep.run.lifecycle: an in-process fake
fal queue and a real LocalStore, no server. Each test starts a job from one ledger state and
checks what was paid for (submits), what the ledger says and how the job ended."""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path

import fal_client
import pytest

from tests.helpers import make_image
from wansweep.errors import AmbiguousSubmit, FailureKind, FalError, Stopped
from wansweep.fal.platform import Lookup
from wansweep.fal.stream import Completion
from wansweep.fal.types import Handle, PollSpec
from wansweep.localfal.video import render_clip
from wansweep.plan.pricing import Budget
from wansweep.plan.spec import Job, ReconcileSpec
from wansweep.run.execute import Runtime, run_job
from wansweep.run.ledger import Ledger
from wansweep.run.lifecycle import SUCCEEDED, LedgerEntry, LedgerStatus, Outcome
from wansweep.store import LocalStore
from wansweep.store.layout import job_file

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
        self.calls: list[str] = []
        self.accepted = 0
        self.searched_without: list[tuple[str, ...]] = []  # ``earlier`` of each lookup

    def _handle(self, n: int) -> Handle:
        return Handle(
            f"req-{n}", f"https://q/r/{n}", f"https://q/r/{n}/status", f"https://q/r/{n}/c"
        )

    def submit(self, endpoint, body, start_timeout=None, marker=None):
        self.calls.append("submit")
        action = self.submit_script.pop(0)
        if isinstance(action, Exception):
            raise action
        self.accepted += 1
        if action == "lost":
            raise AmbiguousSubmit("answer lost")
        return self._handle(self.accepted)

    def find_submitted(self, endpoint, fields, since, settle_after, window=None, earlier=()):
        self.calls.append("find")
        self.searched_without.append(earlier)
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

    def result(self, handle, generation_failed=False):
        self.calls.append("result")
        action = self.result_script.pop(0)
        if isinstance(action, Exception):
            raise action
        return {"video": {"url": "https://cdn/v.mp4", "file_size": len(CLIP.data)}, "seed": 7}

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


def runtime(tmp_path, fal, budget=10.0, **kw) -> Runtime:
    return Runtime(
        store=LocalStore(tmp_path / "archive"),
        fal=fal,
        budget=Budget(budget),
        poll=PollSpec(),
        max_attempts=kw.pop("max_attempts", 2),
        endpoint_concurrency=4,
        reconcile=ReconcileSpec(grace=0),
        **kw,
    )


def seed_ledger(rt: Runtime, **fields) -> None:
    Ledger(rt.store).put(LedgerEntry("k1"), **fields)


def ledger(rt: Runtime) -> LedgerEntry:
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


def test_a_sidecar_means_nothing_to_do(tmp_path, job):
    fal = FakeQueue()
    rt = runtime(tmp_path, fal)
    rt.store.put_json(job_file("k1", "meta.json"), {"job_key": "k1"})
    assert run_job(job, rt).outcome is Outcome.CACHED and fal.calls == []


def test_submitted_is_resumed_not_paid_again(tmp_path, job):
    fal = FakeQueue()
    rt = runtime(tmp_path, fal)
    seed_ledger(rt, status="submitted", handle=HANDLE, request_id="req-old", attempts=1)
    assert run_job(job, rt).outcome is Outcome.RESUMED
    assert "submit" not in fal.calls and ledger(rt).request_id == "req-old"


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
    assert run_job(job, rt).outcome is Outcome.ARCHIVED
    assert "submit" not in fal.calls and ledger(rt).reconciled


def test_submitting_proven_absent_is_submitted_again_as_a_new_attempt(tmp_path, job):
    fal = FakeQueue(found=ABSENT)
    rt = runtime(tmp_path, fal)
    seed_ledger(rt, status="submitting", submitted_at=1.0, attempts=1)
    assert run_job(job, rt).outcome is Outcome.ARCHIVED and fal.accepted == 1
    assert ledger(rt).attempts == 2  # the lost submit is never given back: no loop


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


def test_a_lost_answer_that_never_settles_cannot_loop(tmp_path, job):
    fal = FakeQueue(submits=["lost"] * 5, found=ABSENT)  # a listing that never shows it
    rt = runtime(tmp_path, fal, budget=10.0)
    result = run_job(job, rt)
    assert result.outcome is Outcome.FAILED and fal.accepted == 2  # max_attempts, no more
    assert rt.budget.committed == 0.25  # each possibly billed submit stays counted


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
    result = run_job(job, rt)
    assert result.outcome is Outcome.AMBIGUOUS and fal.accepted == 0
    assert "damaged" in ledger(rt).ambiguous


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
    rt = runtime(tmp_path, fal)
    rt.leases, rt.lease_poll = Leases(rt.store, Owner.new()), 0.01
    other = Leases(rt.store, Owner.new())
    assert other.acquire("k1")
    owners = []
    submit = fal.submit

    def submit_checking_the_lease(*args):
        owners.append(json.loads(rt.store.get_bytes(lease_key("k1")))["owner"])
        return submit(*args)

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
    rt2.leases, rt2.lease_poll = Leases(rt2.store, Owner.new()), 0.01
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


def test_a_refused_submit_gives_its_reservation_back(tmp_path, job):
    fal = FakeQueue(submits=[FalError("no such app", FailureKind.REJECTED, 404)])
    rt = runtime(tmp_path, fal)
    assert run_job(job, rt).outcome is Outcome.FAILED and rt.budget.committed == 0


def test_a_lease_lost_while_stalled_submits_nothing(tmp_path, job):
    from wansweep.run.leases import Leases, Owner

    fal = FakeQueue()
    rt = runtime(tmp_path, fal)
    rt.leases = Leases(rt.store, Owner.new())
    real_acquire = rt.leases.acquire

    def acquire_then_lose(job_key):  # the renewal found another holder (we were stalled)
        assert real_acquire(job_key)
        rt.leases._held[job_key] = None
        return True

    rt.leases.acquire = acquire_then_lose
    result = run_job(job, rt)
    assert result.outcome is Outcome.BUSY and "taken over" in result.error
    assert "submit" not in fal.calls
