"""The retry policy toward fal, as pure functions (no I/O): every 'send again?' decision."""

from __future__ import annotations

import httpx
import pytest

from wansweep.errors import FailureKind
from wansweep.fal import policy
from wansweep.fal.policy import ResultVerdict, SubmitVerdict

NGINX = "<html><center>nginx</center></html>"


@pytest.mark.parametrize(
    "code, headers, text, verdict",
    [
        (200, {}, "{}", SubmitVerdict.ACCEPTED),
        (429, {"retry-after": "1"}, "{}", SubmitVerdict.RETRY),
        (408, {}, "", SubmitVerdict.RETRY),
        (504, {}, NGINX, SubmitVerdict.AMBIGUOUS),
        (504, {"x-fal-request-id": "r"}, "{}", SubmitVerdict.AMBIGUOUS),
        (422, {}, "{}", SubmitVerdict.INVALID),
        (401, {}, "{}", SubmitVerdict.REJECTED),
        (404, {}, "{}", SubmitVerdict.REJECTED),
        (201, {}, "{}", SubmitVerdict.ACCEPTED),
        (299, {}, "{}", SubmitVerdict.ACCEPTED),
        (300, {}, "{}", SubmitVerdict.REJECTED),  # a redirect did not queue anything
        (199, {}, "{}", SubmitVerdict.REJECTED),
        # a conflict: fal may hold the request already (a retried POST reaching it twice)
        (409, {}, "{}", SubmitVerdict.AMBIGUOUS),
        (500, {"x-fal-request-id": "r"}, "{}", SubmitVerdict.AMBIGUOUS),
        (501, {}, NGINX, SubmitVerdict.AMBIGUOUS),  # not one of the ingress codes
        (502, {}, NGINX, SubmitVerdict.RETRY),  # fal's ingress: the app never saw it
        (503, {}, NGINX, SubmitVerdict.RETRY),
        (502, {"X-Fal-Request-Id": "r"}, NGINX, SubmitVerdict.AMBIGUOUS),  # the app answered
        (503, {}, '{"detail": "busy"}', SubmitVerdict.AMBIGUOUS),
        (400, {}, "{}", SubmitVerdict.REJECTED),
        (403, {}, "{}", SubmitVerdict.REJECTED),
    ],
)
def test_submit_answers(code, headers, text, verdict):
    assert policy.classify_submit_answer(code, headers, text) is verdict


def test_a_lost_answer_is_ambiguous_but_a_refused_connection_is_not():
    request = httpx.Request("POST", "https://queue.fal.run/x")
    assert (
        policy.classify_submit_error(httpx.ConnectError("refused", request=request))
        is SubmitVerdict.RETRY
    )
    assert policy.classify_submit_error(httpx.PoolTimeout("pool")) is SubmitVerdict.RETRY
    for exc in (
        httpx.ReadTimeout("slow", request=request),
        httpx.RemoteProtocolError("closed", request=request),
        httpx.ReadError("reset", request=request),
        httpx.WriteError("broken pipe", request=request),
    ):
        assert policy.classify_submit_error(exc) is SubmitVerdict.AMBIGUOUS, exc


def test_ingress_errors_are_told_from_app_errors():
    assert policy.is_ingress_error(502, {}, NGINX)
    assert not policy.is_ingress_error(502, {"X-Fal-Request-Id": "r"}, NGINX)
    assert not policy.is_ingress_error(500, {}, NGINX)
    assert not policy.is_ingress_error(502, {}, '{"detail": "x"}')


@pytest.mark.parametrize(
    "code, failed, verdict",
    [
        (200, False, ResultVerdict.OK),
        (500, False, ResultVerdict.RETRY),  # the gateway's, not the job's
        (500, True, ResultVerdict.FAIL),  # status said the generation failed
        (503, True, ResultVerdict.RETRY),
        (429, False, ResultVerdict.RETRY),
        (422, False, ResultVerdict.FAIL),
        (410, False, ResultVerdict.FAIL),
    ],
)
def test_result_answers(code, failed, verdict):
    assert policy.classify_result(code, failed) is verdict


@pytest.mark.parametrize(
    "code, text, kind",
    [
        (422, "", FailureKind.INVALID),
        (404, "", FailureKind.EXPIRED),
        (410, "", FailureKind.EXPIRED),
        (500, "", FailureKind.FAILED),
        (400, '{"detail": "Request was cancelled"}', FailureKind.CANCELLED),
        (400, '{"detail": "bad"}', FailureKind.REJECTED),
    ],
)
def test_result_failures(code, text, kind):
    assert policy.result_failure(code, text) is kind


def test_downloads_retry_gateway_trouble_and_call_a_missing_video_expired():
    assert policy.download_failure(503) is None and policy.download_failure(429) is None
    assert policy.download_failure(404) is FailureKind.EXPIRED
    assert policy.download_failure(403) is FailureKind.EXPIRED
    assert policy.download_failure(400) is FailureKind.REJECTED


def test_backoff_grows_caps_jitters_and_honours_retry_after():
    assert policy.backoff(0, base=0.5, jitter=0.5) == pytest.approx(0.5)
    assert policy.backoff(3, base=0.5, jitter=0.5) == pytest.approx(4.0)
    assert policy.backoff(20, base=0.5, cap=30, jitter=1.0) == pytest.approx(45.0)
    assert policy.backoff(20, base=0.5, cap=30, jitter=0.0) == pytest.approx(15.0)
    assert policy.backoff(0, hinted=7.0, jitter=0.0) == 7.0
    assert policy.retry_after({"Retry-After": "3"}) == 3.0
    assert policy.retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) is None
    assert policy.retry_after(None) is None


@pytest.mark.parametrize(
    "code, exc, wide",
    [
        (401, None, True),
        (403, None, True),
        (404, None, False),  # one endpoint unknown: not every job's
        (422, None, False),
        (429, None, False),
        (None, httpx.ConnectError("refused"), True),
        (None, httpx.ConnectTimeout("slow"), True),
        (None, httpx.ReadTimeout("slow"), False),  # it reached fal
        (None, None, False),
    ],
)
def test_a_cause_is_every_jobs_only_for_the_key_or_no_route(code, exc, wide):
    assert policy.run_wide(code, exc) is wide


def test_only_transient_answers_are_asked_again():
    again = {c for c in range(100, 600) if policy.retry_idempotent(c)}
    assert again == {408, 429, 500, 502, 503, 504}


def test_fals_start_timeout_answer_is_a_failure_not_the_gateways():
    user = {"X-Fal-Request-Timeout-Type": "user"}
    assert policy.start_timed_out(504, user)
    assert not policy.start_timed_out(504, {"X-Fal-Request-Timeout-Type": "system"})
    assert not policy.start_timed_out(503, user) and not policy.start_timed_out(504, {})
    assert policy.classify_result(504, False, user) is ResultVerdict.FAIL
    assert policy.classify_result(504, False, {}) is ResultVerdict.RETRY
    assert policy.classify_result(504, False) is ResultVerdict.RETRY
    for code in (408, 502):
        assert policy.classify_result(code, True) is ResultVerdict.RETRY
    assert policy.classify_result(501, True) is ResultVerdict.FAIL
    assert policy.classify_result(400, False) is ResultVerdict.FAIL


def test_attempts_and_paying_again_are_bounded():
    assert policy.attempts_allowed(2, ()) == 2
    assert policy.attempts_allowed(2, ("ambiguous", "expired", "ambiguous")) == 4
    assert policy.attempts_allowed(2, ("something",)) == 2
    assert policy.may_try_again(FailureKind.FAILED, 1, 2)
    assert not policy.may_try_again(FailureKind.FAILED, 2, 2)
    assert policy.may_try_again(FailureKind.CANCELLED, 0, 1)
    for kind in (FailureKind.EXPIRED, FailureKind.INVALID, FailureKind.AMBIGUOUS):
        assert not policy.may_try_again(kind, 0, 9), kind
    assert policy.may_pay_again("expired", True, ())
    assert not policy.may_pay_again("expired", False, ())
    assert not policy.may_pay_again("expired", True, ("expired",))
    assert not policy.may_pay_again("failed", True, ())


def test_prefect_retries_a_task_only_for_trouble_outside_the_job():
    from wansweep.errors import FalError, FalUnavailable, StoreUnavailable

    assert policy.task_may_retry(FalUnavailable("down"))
    assert policy.task_may_retry(StoreUnavailable("s3 down"))
    assert policy.task_may_retry(httpx.ReadError("reset"))
    assert policy.task_may_retry(ConnectionError()) and policy.task_may_retry(TimeoutError())
    assert not policy.task_may_retry(FalError("refused", FailureKind.REJECTED))
    assert not policy.task_may_retry(ValueError("a bug"))


def test_only_502_503_and_504_can_be_the_ingress_so_a_505_from_nginx_is_never_resent():
    # a 505 page from nginx is not one of the ingress answers fal-client retries: fal's app
    # may have taken the submit, and re-sending it could pay twice
    assert policy.is_ingress_error(504, {}, NGINX)
    assert not policy.is_ingress_error(505, {}, NGINX)
    assert policy.classify_submit_answer(505, {}, NGINX) is SubmitVerdict.AMBIGUOUS


def test_a_gateway_timeout_on_a_result_is_asked_again_even_after_a_failed_status():
    # the 504 is the gateway's answer, not the job's result; a 505 is the job's
    assert policy.classify_result(504, True) is ResultVerdict.RETRY
    assert policy.classify_result(505, True) is ResultVerdict.FAIL


def test_a_retry_after_of_zero_or_less_means_no_wait():
    assert policy.retry_after({"Retry-After": "0"}) == 0.0
    assert policy.retry_after({"Retry-After": "-3"}) == 0.0
    assert policy.retry_after({"Retry-After": "0.25"}) == 0.25
