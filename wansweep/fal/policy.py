"""Every "send again?" decision, as pure functions and one table of numbers (:data:`RETRIES`).

Three levels ask it, and all read from here (tests/unit/test_house.py finds no other module
of fal's, a run's or the tasks' keeping a count of tries or a backoff of its own):

- an HTTP call to fal (:class:`wansweep.fal.connection.Connection`): how often, how long to wait,
  which answers are worth repeating; a submit only while fal surely did not take it;
- a job (:mod:`wansweep.run.execute`): may another generation be paid for
  (:func:`attempts_allowed`, :func:`may_try_again`, :func:`may_pay_again`);
- a Prefect task re-run of a whole job after store or network trouble
  (:data:`Retries.task_retry_delays_s`, :func:`task_may_retry`).

Nothing here does I/O, so each rule is unit-tested on its own (tests/unit/test_fal_policy.py).

Submit answers, and why (fal's queue has no idempotency key, so a re-sent submit that fal had
taken is a second paid job):

- any 2xx with a ``request_id``: accepted. Both official clients accept any 2xx.
- 408, 429: not queued. fal's docs: queued requests are never rejected, so a 429 is the rate
  limiter refusing before the queue; 408 means the request never arrived whole.
- 502/503 from the ingress (an nginx page, no ``x-fal-request-id``): not queued. The ingress
  could not reach fal's app; fal-client retries exactly these (``_is_ingress_error``).
- 504 from the ingress: ambiguous. A gateway *timeout* means the app may have taken it.
- any other 5xx, or a 5xx that carries ``x-fal-request-id`` (fal's app answered): ambiguous.
  No source says a 500/502/503 from fal's app means the request was not queued.
- 409: ambiguous (a conflict with something fal already holds).
- 422: the input was refused; other 4xx: refused (auth, unknown app); neither is retried. Both
  come before fal queues anything: the submit was never a paid attempt.
- transport errors before the request went out (DNS, connect refused, TLS, connect or pool
  timeout): not sent, retry. Any other transport error (read, write, a dropped answer):
  ambiguous.
- a key fal refuses (401, 403) or no route to fal (DNS, connect, TLS) is no single job's
  fault: :func:`run_wide` says so, and the run stops instead of meeting it once per job.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

import httpx

from wansweep.errors import FailureKind, FalUnavailable, StoreUnavailable, WansweepError


@dataclass(frozen=True)
class Retries:
    """The numbers of every retry: one place to read them, one to change them."""

    http_tries: int = 8  # tries of one HTTP call to fal (a submit: only while not taken)
    backoff_s: float = 0.5  # first wait between tries; doubles, +-50% jitter
    max_backoff_s: float = 30.0
    task_retry_delays_s: tuple[float, ...] = (2.0, 10.0, 30.0)  # Prefect re-runs of a job
    command_tries: int = 3  # HTTP tries of a command a person waits on (pricing, spend, ...)
    stream_breaks: int = 5  # status-stream breaks in a row (no event between) before polling
    jwks_refetch_s: float = 60.0  # fal's webhook keys fetched again at most this often
    # a lost answer looked for again in fal's request listing while it may still appear
    listing_backoff_s: float = 1.0  # first wait; doubles
    max_listing_backoff_s: float = 10.0


RETRIES = Retries()


class SubmitVerdict(StrEnum):
    ACCEPTED = "accepted"  # fal holds the job
    RETRY = "retry"  # fal surely did not take it: send again after a backoff
    AMBIGUOUS = "ambiguous"  # fal may hold it: never send again until its records say not
    INVALID = "invalid"  # input refused (422)
    REJECTED = "rejected"  # refused for another reason (auth, unknown app, ...)


def is_ingress_error(status_code: int, headers: Mapping[str, str], text: str) -> bool:
    """An answer of fal's ingress (nginx) rather than of fal's app: the app never saw it."""
    return (
        status_code in (502, 503, 504)
        and "x-fal-request-id" not in {k.lower() for k in headers}
        and "nginx" in text
    )


def classify_submit_answer(
    status_code: int, headers: Mapping[str, str], text: str
) -> SubmitVerdict:
    """What an HTTP answer to a submit POST tells about whether fal took the job."""
    if 200 <= status_code < 300:
        return SubmitVerdict.ACCEPTED  # the caller checks the body names a request
    if status_code in (408, 429):
        return SubmitVerdict.RETRY
    if is_ingress_error(status_code, headers, text):
        return SubmitVerdict.AMBIGUOUS if status_code == 504 else SubmitVerdict.RETRY
    if status_code >= 500 or status_code == 409:
        return SubmitVerdict.AMBIGUOUS
    if status_code == 422:
        return SubmitVerdict.INVALID
    return SubmitVerdict.REJECTED


def classify_submit_error(exc: Exception) -> SubmitVerdict:
    """What a transport error during a submit tells: was anything sent?"""
    if isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)):
        return SubmitVerdict.RETRY  # the request never left this machine
    return SubmitVerdict.AMBIGUOUS


def run_wide(status_code: int | None = None, exc: BaseException | None = None) -> bool:
    """Is this refusal or error every job's, not one job's? A key fal refuses (401, 403), or
    no connection to fal at all (DNS, refused, TLS verification, connect timeout)."""
    if status_code in (401, 403):
        return True
    return isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout))


def retry_idempotent(status_code: int) -> bool:
    """Status, result, listing, pricing, downloads: safe to repeat on these answers."""
    return status_code in (408, 429) or status_code in (500, 502, 503, 504)


class ResultVerdict(StrEnum):
    OK = "ok"
    RETRY = "retry"  # the gateway's trouble, not the job's: ask again
    FAIL = "fail"  # the job ended badly: see :func:`result_failure`


def start_timed_out(status_code: int, headers: Mapping[str, str]) -> bool:
    """fal's answer for a request that did not start within its start timeout (not billed)."""
    return status_code == 504 and any(
        k.lower() == "x-fal-request-timeout-type" and v == "user" for k, v in headers.items()
    )


def classify_result(
    status_code: int, generation_failed: bool, headers: Mapping[str, str] | None = None
) -> ResultVerdict:
    """A result GET. A 5xx is the job's own failure only when its status said it failed (or
    it is fal's start-timeout answer); otherwise it is the gateway's and is asked again."""
    if status_code == 200:
        return ResultVerdict.OK
    if headers is not None and start_timed_out(status_code, headers):
        return ResultVerdict.FAIL
    if status_code in (408, 429, 502, 503, 504):
        return ResultVerdict.RETRY
    if status_code >= 500 and not generation_failed:
        return ResultVerdict.RETRY
    return ResultVerdict.FAIL


def result_failure(status_code: int, text: str) -> FailureKind:
    """How a failed result answer ended the job."""
    if status_code == 422:
        return FailureKind.INVALID
    if status_code in (404, 410):
        return FailureKind.EXPIRED
    if status_code >= 500:
        return FailureKind.FAILED
    if status_code == 400 and "cancel" in text.lower():
        return FailureKind.CANCELLED
    return FailureKind.REJECTED


def download_failure(status_code: int) -> FailureKind | None:
    """A video download answer: None to retry, else how it failed."""
    if retry_idempotent(status_code):
        return None
    return FailureKind.EXPIRED if status_code in (403, 404, 410) else FailureKind.REJECTED


def retry_after(headers: Mapping[str, str] | None) -> float | None:
    """Seconds from a ``Retry-After`` header (numeric form), if any."""
    if not headers:
        return None
    value = next((v for k, v in headers.items() if k.lower() == "retry-after"), None)
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None


def backoff(
    attempt: int,
    hinted: float | None = None,
    base: float = RETRIES.backoff_s,
    cap: float = RETRIES.max_backoff_s,
    jitter: float | None = None,
) -> float:
    """Seconds to wait before try ``attempt + 1``: exponential with +-50% jitter, capped,
    never shorter than the server's ``Retry-After``. ``jitter`` (0-1) fixes the draw (tests)."""
    draw = random.random() if jitter is None else jitter
    delay = min(cap, base * 2**attempt) * (0.5 + draw)
    return max(hinted or 0.0, delay)


# ---------------------------------------------------------------------------- jobs
PAY_AGAIN_REASONS = ("ambiguous", "expired")  # --resubmit-ambiguous, --resubmit-expired


def attempts_allowed(max_attempts: int, repaid: tuple[str, ...]) -> int:
    """Submits fal may have queued for one job, at most: ``max_attempts``, plus one for each
    pay-again option the user gave that the job used (each at most once, in its ledger)."""
    return max_attempts + len(set(repaid) & set(PAY_AGAIN_REASONS))


def may_try_again(kind: FailureKind, attempts: int, allowed: int) -> bool:
    """After a generation ended badly: may another attempt be submitted? Only after a failure
    fal did not bill (a failed generation, or a cancel before fal finished it), with an
    attempt left. An expired result was billed: only :func:`may_pay_again` allows another."""
    return kind in (FailureKind.FAILED, FailureKind.CANCELLED) and attempts < allowed


def may_pay_again(reason: str, allowed_by_user: bool, repaid: tuple[str, ...]) -> bool:
    """May a job pay again for ``reason`` (``ambiguous``: a lost submit fal's records cannot
    settle; ``expired``: a result or video fal no longer holds)? Only with the user's option,
    and once per job, whatever the runs."""
    return allowed_by_user and reason in PAY_AGAIN_REASONS and reason not in repaid


def task_may_retry(exc: BaseException) -> bool:
    """May Prefect run a job's task again after it raised ``exc``? Only for trouble outside
    the job (the store, the network, fal unreachable): the ledger resumes it without paying
    again. A job-level failure is an outcome, never an exception to retry."""
    if isinstance(exc, (FalUnavailable, StoreUnavailable)):
        return True
    if isinstance(exc, WansweepError):
        return False
    return isinstance(exc, (httpx.TransportError, ConnectionError, TimeoutError))
