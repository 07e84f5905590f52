"""The steps of a job's life one at a time (wansweep.run.steps), each called on a ledger entry as
an earlier step or run left it: what it sends to fal, what it writes to the ledger, and what it
holds on the budget or gives back. The scripted fal and the real LocalStore are those of
tests/unit/test_execute.py, which drives the steps together; the clock is injected."""

from __future__ import annotations

import base64
import re
import types
from pathlib import Path

import fal_client
import pytest

from tests.helpers import make_image
from tests.unit.test_execute import (
    ABSENT,
    DONE,
    FOUND,
    HANDLE,
    UNKNOWN,
    FakeQueue,
    runtime,
    seed_ledger,
)
from wansweep.errors import BudgetExceeded, FailureKind, FalError, NotSent, Stopped, StoreRefused
from wansweep.fal.platform import Lookup
from wansweep.fal.stream import Completion
from wansweep.fal.types import FalResult, PollSpec
from wansweep.plan.endpoints import profile
from wansweep.plan.spec import Job, ReconcileSpec, RunSettings
from wansweep.run import steps
from wansweep.run.execute import DAMAGED_WINDOW
from wansweep.run.ledger import Ledger
from wansweep.run.lifecycle import LedgerEntry, LedgerStatus
from wansweep.run.reconcile import reconcile_store
from wansweep.run.steps import Step, media_url, next_step, request_body
from wansweep.store.layout import marker_key

S = LedgerStatus
FLASH = "wan/v2.6/image-to-video/flash"
WHO = re.escape("job k1 (row 1, flash-720p)")  # how the messages a user reads name a job


class Fal(FakeQueue):
    """The scripted fal of test_execute, remembering what each call was given. Its request
    listing holds what it accepted (endpoint, body, our clock then) once ``listed`` is set,
    and finds a request as fal's does: same endpoint, our fields in its input, received
    within a few minutes of when we say it was sent."""

    def __init__(self, *args, clock=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.clock = clock
        self.sent: list[dict] = []
        self.taken: list[tuple[str, dict, float | None]] = []
        self.listed = False
        self.named: dict = {}  # request ids a webhook may name, as fal confirms them
        self.waits: list[tuple] = []
        self.results: list[tuple] = []
        self.asked_running: list = []
        self.cancelled: list = []
        self.running: bool | None = True
        self.completion = DONE
        self.served_by: str | None = None
        self.slept: list[float] = []

    def submit(self, endpoint, body, *, deadline_s, marker=None, allow_fallbacks=False):
        self.sent.append(
            {"endpoint": endpoint, "body": body, "marker": marker, "fallbacks": allow_fallbacks}
        )
        if self.submit_script and self.submit_script[0] in ("ok", "lost"):  # fal takes it
            self.taken.append((endpoint, body, self.clock.time() if self.clock else None))
        return super().submit(
            endpoint, body, deadline_s=deadline_s, marker=marker, allow_fallbacks=allow_fallbacks
        )

    def find_submitted(self, endpoint, fields, since, settle_after, window=None, earlier=()):
        found = super().find_submitted(endpoint, fields, since, settle_after, window, earlier)
        if self.listed:
            for n, (ep, body, at) in enumerate(self.taken, 1):
                ours = bool(fields) and all(body.get(k) == v for k, v in fields.items())
                if ep == endpoint and ours and abs(at - since) <= 300:
                    return Lookup(self._handle(n), False, "found")
        return found

    def confirm(self, endpoint, request_id, fields):
        return self.named.get(request_id)

    def sleep(self, seconds):
        self.slept.append(seconds)
        assert len(self.slept) < 100, "a lost answer was looked up without end"
        self.clock.now += seconds

    def wait(self, handle, poll=None, check_now=False):
        self.waits.append((handle, poll, check_now))
        super().wait(handle)
        return self.completion

    def result(self, handle, generation_failed=False, endpoint=None):
        self.results.append((handle, generation_failed, endpoint))
        out = super().result(handle)
        return FalResult(out.output, out.billable_units, self.served_by)

    def is_running(self, handle):
        self.asked_running.append(handle)
        return self.running

    def cancel(self, handle):
        self.cancelled.append(handle)
        super().cancel(handle)


class Clock:
    """Our clock, as the steps read it (``time.time()``); fal's ``sleep`` advances it."""

    def __init__(self, now: float = 1000.0):
        self.now = now

    def time(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(steps, "time", types.SimpleNamespace(time=clock.time))
    return clock


@pytest.fixture
def image(tmp_path) -> Path:
    path = tmp_path / "in.png"
    path.write_bytes(make_image(32, 24))
    return path


@pytest.fixture
def job(image) -> Job:
    return Job(
        job_key="k1",
        arm="flash-720p",
        endpoint=FLASH,
        row_index=1,
        row_id="r1",
        prompt="a harbour",
        settings={"resolution": "720p", "duration": "5"},
        seed=7,
        image_uri=str(image),
        image_sha256="x",
        estimated_usd=0.25,
    )


def stored(rt, **fields) -> LedgerEntry:
    """The job's entry as an earlier step or run left it, read back as a stored entry."""
    seed_ledger(rt, **fields)
    return rt.ledger.get("k1")


# ---------------------------------------------------------------------------- next_step


def test_a_job_fal_failed_is_not_waited_on_again_though_its_entry_names_the_request():
    # A failure fal reported keeps the request in the ledger: waiting on it again would only
    # fetch the same refusal, and a failed request is never adopted again.
    settings = RunSettings(max_attempts=2)
    refused = LedgerEntry("k1", S.FAILED, attempts=1, handle=HANDLE, error_kind=FailureKind.INVALID)
    assert next_step(refused, settings) is Step.GIVE_UP
    failed = LedgerEntry("k1", S.FAILED, attempts=1, handle=HANDLE, error_kind=FailureKind.FAILED)
    assert next_step(failed, settings) is Step.REOPEN


# ---------------------------------------------------------------------------- the request


@pytest.mark.parametrize(
    "uri", ["http://host/a.png", "https://host/a.png", "data:image/png;base64,iVBORw0KGgo="]
)
def test_a_url_goes_to_fal_as_it_is(uri):
    assert media_url(uri) == uri


def test_a_private_s3_object_is_lent_to_fal_for_an_hour_at_most(monkeypatch):
    asked = []

    class S3:
        def generate_presigned_url(self, op, Params, ExpiresIn):  # noqa: N803 (boto's names)
            asked.append((op, Params, ExpiresIn))
            return "https://bucket.s3.amazonaws.com/img/a%232.png?X-Amz-Signature=s"

    monkeypatch.setattr("wansweep.store.s3.s3_client", lambda: S3())
    url = media_url("s3://bucket/img/a#2.png")
    assert url.startswith("https://bucket.s3.amazonaws.com/")  # never the s3:// name fal can't read
    [(op, params, expires)] = asked
    assert op == "get_object" and params == {"Bucket": "bucket", "Key": "img/a#2.png"}
    assert 0 < expires <= 3600  # a short-lived loan: the object is never made public


@pytest.mark.parametrize("prefix", ["", "file://"])
def test_a_local_file_goes_to_fal_inline_as_a_data_uri_of_its_type(image, prefix):
    url = media_url(prefix + str(image))
    head, _, data = url.partition(",")
    assert head == "data:image/png;base64" and base64.b64decode(data) == image.read_bytes()


def test_a_local_file_of_unknown_type_goes_inline_as_plain_bytes(tmp_path):
    path = tmp_path / "frame.raw"
    path.write_bytes(b"\x00\x01")
    assert media_url(str(path)) == "data:application/octet-stream;base64,AAE="


def test_a_jobs_audio_goes_to_fal_under_the_endpoints_own_audio_field(image, tmp_path):
    audio = tmp_path / "voice.wav"
    audio.write_bytes(b"RIFF fake wav")
    standard = profile("standard")
    job = Job(
        "k", "a", standard.id, 1, "r", "x", standard.complete({}), 1, str(image), "h", str(audio)
    )
    body = request_body(job)
    head, _, data = body[standard.field_of("audio")].partition(",")
    assert head.startswith("data:audio/") and base64.b64decode(data) == b"RIFF fake wav"
    assert body[standard.field_of("image")].startswith("data:image/png;base64,")


# ---------------------------------------------------------------------------- reopen


def test_a_failed_job_reopened_is_submitted_afresh_without_using_a_pay_again_option(tmp_path):
    rt = runtime(tmp_path, Fal(), max_attempts=3)  # the user raised max_attempts
    entry = stored(
        rt, status="failed", attempts=2, error_kind="failed", handle=HANDLE, request_id="req-old"
    )
    entry = steps.reopen(rt.ledger, entry)
    assert entry.status is S.RETRYING and rt.ledger.get("k1") == entry
    assert entry.repaid == () and entry.attempts == 2  # a new attempt, within max_attempts
    assert entry.handle is None  # the failed request is not waited on again
    assert entry.history[-1][2] == "failed"
    assert next_step(entry, rt.settings) is Step.SUBMIT


def test_an_expired_job_reopened_uses_its_one_pay_again_and_forgets_the_old_video(tmp_path):
    rt = runtime(tmp_path, Fal(), resubmit_expired=True)
    result = {"video": {"url": "https://cdn/gone.mp4"}}
    entry = stored(rt, status="expired", attempts=2, handle=HANDLE, result=result)
    assert next_step(entry, rt.settings) is Step.REOPEN
    entry = steps.reopen(rt.ledger, entry)
    assert entry.status is S.RETRYING and rt.ledger.get("k1") == entry
    assert entry.repaid == ("expired",)  # once per job, whatever the runs
    assert entry.result is None and entry.handle is None  # the gone video is not fetched again
    assert entry.history[-1][2] == "expired"
    assert next_step(entry, rt.settings) is Step.SUBMIT  # one attempt more than max_attempts


# ---------------------------------------------------------------------------- submit


def test_a_halted_run_sends_nothing_and_says_why(tmp_path, job):
    fal = Fal()
    rt = runtime(tmp_path, fal)
    rt.halt("fal refused the key (401)")
    with pytest.raises(NotSent, match=r"stopped submitting \(fal refused the key \(401\)\)"):
        steps.submit(job, rt, rt.ledger, LedgerEntry("k1"))
    assert fal.calls == [] and rt.budget.committed == 0


def test_a_job_with_no_attempt_left_is_refused_at_the_door(tmp_path, job):
    fal = Fal()
    rt = runtime(tmp_path, fal, max_attempts=2)
    entry = stored(rt, status="retrying", attempts=2)
    with pytest.raises(FalError, match=r"no attempts left \(2 of 2 used\)") as info:
        steps.submit(job, rt, rt.ledger, entry)
    assert info.value.kind is FailureKind.FAILED
    assert fal.calls == [] and rt.budget.committed == 0 and rt.ledger.get("k1") == entry


def test_a_submit_past_the_budget_names_the_job_and_its_row(tmp_path, job):
    fal = Fal()
    rt = runtime(tmp_path, fal, budget=0.1)
    with pytest.raises(BudgetExceeded, match=WHO):
        steps.submit(job, rt, rt.ledger, LedgerEntry("k1"))
    assert fal.calls == [] and rt.ledger.get("k1") is None


def test_a_submit_the_ledger_cannot_record_is_not_sent_and_gives_its_hold_back(tmp_path, job):
    class FullLedger(Ledger):
        def _write(self, entry):
            raise StoreRefused("the archive is full")

    fal = Fal()
    rt = runtime(tmp_path, fal)
    with pytest.raises(StoreRefused):
        steps.submit(job, rt, FullLedger(rt.store), LedgerEntry("k1"))
    assert fal.calls == [] and rt.budget.committed == 0 and not rt.budget.holds("k1", 1)


@pytest.mark.parametrize("fallbacks", [False, True])
def test_a_submit_goes_to_the_jobs_endpoint_with_the_users_fallback_choice(
    tmp_path, job, image, fallbacks
):
    fal = Fal()
    rt = runtime(tmp_path, fal, allow_fallbacks=fallbacks)
    entry = steps.submit(job, rt, rt.ledger, LedgerEntry("k1"))
    [sent] = fal.sent
    assert sent["endpoint"] == FLASH and sent["fallbacks"] is fallbacks
    assert sent["marker"] == ("k1", 1)  # its webhook names this attempt of this job
    assert sent["body"]["prompt"] == "a harbour" and sent["body"]["seed"] == 7
    assert sent["body"]["image_url"] == media_url(str(image))
    assert entry.status is S.SUBMITTED and entry.request_id == "req-1" and entry.submits == 1
    assert rt.budget.holds("k1", 1)


@pytest.mark.parametrize(
    "exc, kind",
    [
        (NotSent("ConnectError: connection refused", run_wide=True), FailureKind.TRANSIENT),
        (Stopped("run cancelled between tries"), None),
    ],
)
def test_a_submit_that_never_reached_fal_gives_back_its_hold_and_attempt_saying_why(
    tmp_path, job, exc, kind
):
    fal = Fal(submits=[exc])
    rt = runtime(tmp_path, fal)
    with pytest.raises(type(exc)):
        steps.submit(job, rt, rt.ledger, LedgerEntry("k1"))
    entry = rt.ledger.get("k1")  # the report shows the job's status, error and kind from it
    assert entry.status is S.RETRYING and entry.attempts == 0 and rt.budget.committed == 0
    assert (entry.error, entry.error_kind) == (str(exc), kind)
    assert entry.history[-1][2] == "not_sent"


def test_a_lost_answer_is_settled_later_from_fals_records_by_what_the_ledger_kept(
    tmp_path, job, clock
):
    fal = Fal(submits=["lost"], found=UNKNOWN, clock=clock)
    rt = runtime(tmp_path, fal)
    entry = steps.submit(job, rt, rt.ledger, LedgerEntry("k1"))
    assert entry.status is S.SUBMITTING and entry.handle is None and entry.attempts == 1
    assert entry.ambiguous == "answer lost" and rt.budget.holds("k1", 1)  # fal may bill it
    # fal lists a request only once it has finished: not yet, so nothing is paid again
    clock.now += 60
    what_to_do = "a later run or `wansweep reconcile` settles it without paying again"
    with pytest.raises(FalError, match=re.escape(f"(not listed yet); {what_to_do}")) as info:
        steps.settle(job, rt, rt.ledger, entry)
    assert info.value.kind is FailureKind.AMBIGUOUS and fal.accepted == 1
    # hours later `wansweep reconcile` finds it in fal's listing, from the ledger alone:
    # the endpoint, the fields and the time of the submit
    clock.now += 3 * 3600
    fal.listed = True
    assert reconcile_store(rt.store, fal, 8100.0) == {"found": 1}
    entry = rt.ledger.get("k1")
    assert entry.status is S.SUBMITTED and entry.request_id == "req-1" and entry.reconciled


def test_a_new_submit_is_recorded_as_itself_not_as_the_lost_one_before_it(tmp_path, job):
    # A damaged entry paid again for: its day-long search window and its note of a lost
    # answer belong to the old submit, not to the one sent now.
    fal = Fal(submits=["ok", "lost"], found=UNKNOWN)
    rt = runtime(tmp_path, fal, max_attempts=1)
    before = {
        "status": "retrying",
        "attempts": 1,
        "repaid": ["ambiguous"],
        "ambiguous": "damaged entry",
        "search_window": DAMAGED_WINDOW,
    }
    entry = steps.submit(job, rt, rt.ledger, stored(rt, **before))
    assert entry.status is S.SUBMITTED and entry.ambiguous is None  # its answer came
    # lost this time: looked for near its own time, where the old request does not match
    entry = steps.submit(job, rt, rt.ledger, stored(rt, **before))
    with pytest.raises(FalError):
        steps.settle(job, rt, rt.ledger, entry)
    assert fal.windows == [None]


# ---------------------------------------------------------------------------- settle


def test_a_lost_submit_is_looked_for_with_the_fields_it_was_sent_with(tmp_path, job, clock):
    # fal's records hold what was sent, as the ledger kept it; the job's fields today may
    # differ (a profile updated since gives a field the old submit did not carry).
    fal = Fal(found=UNKNOWN)
    rt = runtime(tmp_path, fal)
    sent = {k: v for k, v in job.request_fields().items() if k != "seed"}
    fal.taken, fal.listed = [(FLASH, sent, 1000.0)], True
    entry = stored(
        rt, status="submitting", attempts=1, endpoint=FLASH, fields=sent, submitted_at=1000.0
    )
    entry = steps.settle(job, rt, rt.ledger, entry)
    assert entry.status is S.SUBMITTED and entry.request_id == "req-1"


def test_a_lost_submit_its_webhook_named_is_adopted_once_fal_confirms_it(tmp_path, job):
    fal = Fal(found=UNKNOWN)  # not in fal's listing yet
    rt = runtime(tmp_path, fal)
    rt.store.put_json(marker_key("k1", 1), {"request_id": "req-old"})
    fal.named = {"req-old": HANDLE}
    entry = stored(rt, status="submitting", attempts=1, endpoint=FLASH, submitted_at=1.0)
    entry = steps.settle(job, rt, rt.ledger, entry)
    assert entry.status is S.SUBMITTED and entry.request_id == "req-old" and entry.reconciled
    assert fal.accepted == 0


def test_a_fresh_loss_is_looked_up_again_until_the_grace_ends_and_not_after(tmp_path, job, clock):
    fal = Fal(found=UNKNOWN, clock=clock)
    rt = runtime(tmp_path, fal, reconcile=ReconcileSpec(grace=55.5))
    entry = stored(rt, status="submitting", attempts=1, endpoint=FLASH, submitted_at=1000.0)
    with pytest.raises(FalError):
        steps.settle(job, rt, rt.ledger, entry)
    # after 1 s, then twice as long each time but at most 10 s apart; the last look is when
    # the grace ends, never later
    assert fal.slept == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0, 10.0, 10.0, 0.5]
    assert fal.calls.count("find") == len(fal.slept) + 1 and clock.now == 1055.5


def test_a_request_listed_during_the_grace_is_adopted_without_looking_again(tmp_path, job, clock):
    fal = Fal(found=UNKNOWN, clock=clock)
    rt = runtime(tmp_path, fal, reconcile=ReconcileSpec(grace=20.0))
    entry = stored(rt, status="submitting", attempts=1, endpoint=FLASH, submitted_at=1000.0)
    looks = iter([UNKNOWN, UNKNOWN, FOUND])
    fal.find_submitted = lambda *args, **kwargs: next(looks)
    entry = steps.settle(job, rt, rt.ledger, entry)
    assert entry.status is S.SUBMITTED and entry.request_id == "req-old"
    assert fal.slept == [1.0, 2.0] and fal.accepted == 0


def test_a_submit_proven_absent_gives_its_hold_back(tmp_path, job):
    fal = Fal(found=ABSENT)
    rt = runtime(tmp_path, fal)
    entry = stored(rt, status="submitting", attempts=1, endpoint=FLASH, submitted_at=1.0)
    rt.budget.take_over("k1", 1, 0.25)  # as the run that took the job over holds it
    entry = steps.settle(job, rt, rt.ledger, entry)
    assert entry.status is S.RETRYING and entry.attempts == 1  # the next submit is another
    assert not rt.budget.holds("k1", 1) and rt.budget.committed == 0  # fal never took it


def test_paying_again_for_an_ambiguous_submit_holds_the_new_attempt_and_says_why(tmp_path, job):
    fal = Fal(found=UNKNOWN)
    rt = runtime(tmp_path, fal, resubmit_ambiguous=True)
    entry = stored(rt, status="ambiguous", attempts=1, endpoint=FLASH, submitted_at=1.0)
    rt.budget.take_over("k1", 1, 0.25)
    entry = steps.settle(job, rt, rt.ledger, entry)
    assert entry.status is S.RETRYING and entry.repaid == ("ambiguous",)
    assert entry.error == "paid again while ambiguous (not listed yet)"  # the report shows it
    assert entry.history[-1][2] == "ambiguous"
    assert rt.budget.holds("k1", 1) and rt.budget.holds("k1", 2)  # the old one may be billed


def test_paying_again_past_the_budget_names_the_job_and_leaves_it_ambiguous(tmp_path, job):
    fal = Fal(found=UNKNOWN)
    rt = runtime(tmp_path, fal, budget=0.25, resubmit_ambiguous=True)
    entry = stored(rt, status="ambiguous", attempts=1, endpoint=FLASH, submitted_at=1.0)
    rt.budget.take_over("k1", 1, 0.25)
    with pytest.raises(BudgetExceeded, match=WHO):
        steps.settle(job, rt, rt.ledger, entry)
    assert rt.ledger.get("k1").status is S.AMBIGUOUS and rt.ledger.get("k1").repaid == ()


# ---------------------------------------------------------------------------- await_result


def submitted(rt, **fields) -> LedgerEntry:
    return stored(rt, **{"status": "submitted", "attempts": 1, "handle": HANDLE, **fields})


@pytest.mark.parametrize("check_now", [False, True])
def test_the_wait_follows_the_runs_poll_settings_and_looks_at_once_only_when_asked(
    tmp_path, job, check_now
):
    fal = Fal()
    poll = PollSpec(first=3.0)
    rt = runtime(tmp_path, fal, poll=poll)
    steps.await_result(job, rt, rt.ledger, submitted(rt), check_now=check_now)
    assert fal.waits == [(HANDLE, poll, check_now)]


@pytest.mark.parametrize("error", [None, "the generation failed"])
def test_the_result_is_read_as_the_status_said_the_generation_ended(tmp_path, job, error):
    # A 5xx result is the job's own failure only when fal's status said the generation
    # failed; otherwise it is the gateway's, asked again. The endpoint tells a fallback apart.
    fal = Fal()
    status = fal_client.Completed(logs=None, metrics={}, error=error)
    fal.completion = Completion(
        status, detected_at=1.0, completed_at=1.0, uncertainty=0, via="poll"
    )
    rt = runtime(tmp_path, fal)
    steps.await_result(job, rt, rt.ledger, submitted(rt), check_now=True)
    assert fal.results == [(HANDLE, error is not None, FLASH)]


def test_what_fal_billed_and_when_it_finished_are_kept_for_the_report(tmp_path, job):
    fal = Fal()
    fal.units, fal.served_by = "5", "wan/v2.6/image-to-video"
    rt = runtime(tmp_path, fal)
    entry = steps.await_result(job, rt, rt.ledger, submitted(rt), check_now=True)
    assert entry.status is S.COMPLETED and rt.ledger.get("k1") == entry
    assert entry.result["video"]["url"] == "https://cdn/v.mp4"
    # the billed price is fal's units times the price of the endpoint that served it
    assert (entry.billable_units, entry.served_by) == ("5", "wan/v2.6/image-to-video")
    assert (entry.completed_at, entry.detected_at, entry.completion_uncertainty) == (99.5, 100, 0.5)
    assert (entry.detected_via, entry.inference_seconds) == ("poll", 1.5)


@pytest.mark.parametrize("running", [True, False, None])
def test_a_stop_while_waiting_cancels_the_jobs_request_and_records_whether_it_had_started(
    tmp_path, job, running
):
    fal = Fal(stop_on_wait=True)
    fal.running = running  # queued: fal drops it unbilled; running: it may finish, and bill
    rt = runtime(tmp_path, fal)
    with pytest.raises(Stopped):
        steps.await_result(job, rt, rt.ledger, submitted(rt), check_now=True)
    assert fal.asked_running == [HANDLE] and fal.cancelled == [HANDLE]
    entry = rt.ledger.get("k1")
    assert entry.status is S.CANCELLED and entry.cancelled_running is running
    assert entry.cancelled_at is not None and entry.cancelled_at > 0


@pytest.mark.parametrize("running, billed", [(False, False), (True, True), (None, True)])
def test_a_request_the_user_cancelled_is_tried_again_without_using_an_attempt(
    tmp_path, job, running, billed
):
    fal = Fal(results=[FalError("was cancelled", FailureKind.CANCELLED, 400)])
    rt = runtime(tmp_path, fal)
    entry = submitted(rt, status="cancelled", attempts=2, cancelled_running=running)
    rt.budget.take_over("k1", 2, 0.25)
    entry = steps.await_result(job, rt, rt.ledger, entry, check_now=True)
    assert entry.status is S.RETRYING and entry.attempts == 1 and entry.handle is None
    # dropped while queued it was not billed; once started (or not known) it may have been
    assert rt.budget.holds("k1", 2) is billed


def test_a_cancel_this_run_did_not_make_uses_its_attempt(tmp_path, job):
    # fal says cancelled, but the ledger never recorded a cancel of ours: it counts, so a job
    # at max_attempts ends here instead of paying for one more
    fal = Fal(results=[FalError("was cancelled", FailureKind.CANCELLED, 400)])
    rt = runtime(tmp_path, fal, max_attempts=2)
    entry = submitted(rt, attempts=2)
    with pytest.raises(FalError) as info:
        steps.await_result(job, rt, rt.ledger, entry, check_now=True)
    assert info.value.kind is FailureKind.CANCELLED and rt.ledger.get("k1") == entry


def test_a_failed_generation_is_tried_again_saying_why_and_its_hold_given_back(tmp_path, job):
    fal = Fal(results=[FalError("boom", FailureKind.FAILED, 500)])
    rt = runtime(tmp_path, fal)
    entry = submitted(rt)
    rt.budget.take_over("k1", 1, 0.25)
    entry = steps.await_result(job, rt, rt.ledger, entry, check_now=True)
    assert entry.status is S.RETRYING and entry.attempts == 1 and entry.error == "boom"
    assert entry.handle is None and entry.retries("failed") == 1
    assert rt.budget.committed == 0  # fal does not bill a failed generation


def test_an_expired_result_is_paid_again_once_when_the_user_allows_it(tmp_path, job):
    gone = FalError("gone", FailureKind.EXPIRED, 410)
    fal = Fal(results=[gone, gone])
    rt = runtime(tmp_path, fal, resubmit_expired=True)
    rt.budget.take_over("k1", 1, 0.25)
    entry = steps.await_result(job, rt, rt.ledger, submitted(rt), check_now=True)
    assert entry.status is S.RETRYING and entry.repaid == ("expired",) and entry.error == "gone"
    assert entry.handle is None and entry.retries("expired") == 1
    assert rt.budget.holds("k1", 1)  # it was billed when it completed
    # the option is used: the next request's result gone too ends the job
    entry = submitted(rt, attempts=2, repaid=["expired"])
    with pytest.raises(FalError) as info:
        steps.await_result(job, rt, rt.ledger, entry, check_now=True)
    assert info.value.kind is FailureKind.EXPIRED
