"""What fal's request listing proves about a submit whose answer was lost (pure: a scripted
listing, no server). The verdicts decide whether a job is paid for again, so each is pinned."""

from __future__ import annotations

import math
import time

import httpx
import pytest

from wansweep.fal import FalConfig, FalQueue
from wansweep.fal.platform import MATCH_WINDOW, _iso

FLASH = "wan/v2.6/image-to-video/flash"
FIELDS = {"prompt": "a harbour", "seed": 7, "resolution": "720p"}
SENT = time.time() - 3600  # an hour ago: long settled
SETTLE = 600.0


def listed(request_id, sent_at=SENT, status=200, **fields):
    return {
        "request_id": request_id,
        "sent_at": _iso(sent_at),
        "status_code": status,
        "json_input": {**FIELDS, "image_url": "https://fal.media/x.png", **fields},
    }


def no_http(request):
    raise AssertionError(f"a scripted lookup asked fal: {request.url}")


@pytest.fixture
def queue():
    q = FalQueue(FalConfig("https://q", "https://api", "key"), backoff=0.0)
    q.http.close()
    q.http = httpx.Client(transport=httpx.MockTransport(no_http))  # nothing here needs fal
    yield q
    q.close()


def look(queue, monkeypatch, items, **kw):
    monkeypatch.setattr(queue, "_listing", lambda endpoint, since: iter(items))
    return queue.find_submitted(FLASH, FIELDS, SENT, SETTLE, **kw)


def test_one_billed_match_is_the_submit(queue, monkeypatch):
    found = look(queue, monkeypatch, [listed("r1"), listed("other", seed=8)])
    assert found.handle.request_id == "r1" and found.why == "found" and not found.absent


def test_two_billed_matches_prove_nothing(queue, monkeypatch):
    found = look(queue, monkeypatch, [listed("r1"), listed("r2", sent_at=SENT + 1)])
    assert found.handle is None and not found.absent and "2 listed" in found.why


def test_a_failed_match_is_adopted_so_the_job_can_try_again(queue, monkeypatch):
    found = look(queue, monkeypatch, [listed("r1", status=500)])
    assert found.handle.request_id == "r1" and found.why == "found, failed"
    assert not found.absent  # taken, not absent: its reservation is not given back as unsent


def test_nothing_listed_long_after_proves_fal_never_took_it(queue, monkeypatch):
    found = look(queue, monkeypatch, [listed("r1", sent_at=SENT - 2 * MATCH_WINDOW)])
    assert found.handle is None and found.absent and "fal never took it" in found.why


def test_nothing_listed_before_the_listing_settles_proves_nothing(queue, monkeypatch):
    monkeypatch.setattr(queue, "_listing", lambda endpoint, since: iter([]))
    found = queue.find_submitted(FLASH, FIELDS, time.time(), SETTLE)
    assert found.handle is None and not found.absent and "not listed yet" in found.why


@pytest.mark.parametrize("status", [500, 200], ids=["failed", "billed"])
def test_the_jobs_earlier_requests_are_never_taken_for_this_submit(queue, monkeypatch, status):
    # An earlier attempt carries the same fields, seconds before: adopting it would lose the
    # retry (failed) or leave the new, paid request uncollected (billed, e.g. after expiry).
    earlier = listed("r1", sent_at=SENT - 5, status=status)
    found = look(queue, monkeypatch, [earlier], earlier=("r1",))
    assert found.handle is None and found.absent
    found = look(queue, monkeypatch, [earlier, listed("r2")], earlier=("r1",))
    assert found.handle.request_id == "r2" and found.why == "found"


def test_a_request_outside_the_window_listed_before_ours_does_not_hide_it(queue, monkeypatch):
    found = look(queue, monkeypatch, [listed("old", sent_at=SENT - 2 * MATCH_WINDOW), listed("r1")])
    assert found.handle.request_id == "r1" and found.why == "found"


@pytest.mark.parametrize("edge", [-MATCH_WINDOW, MATCH_WINDOW], ids=["earliest", "latest"])
def test_a_request_received_at_either_edge_of_the_window_is_still_ours(queue, monkeypatch, edge):
    sent = float(int(SENT))  # whole seconds, as fal lists them
    monkeypatch.setattr(
        queue, "_listing", lambda endpoint, since: iter([listed("r1", sent + edge)])
    )
    found = queue.find_submitted(FLASH, FIELDS, sent, SETTLE)
    assert found.handle.request_id == "r1"


# An endpoint without seeds: a request listed without its payload cannot be told from ours.
NO_SEED = {k: v for k, v in FIELDS.items() if k != "seed"}


def payload_less(request_id, status=200):
    return {"request_id": request_id, "sent_at": _iso(SENT), "status_code": status}


def test_billed_requests_listed_without_payload_leave_the_submit_unproven(queue, monkeypatch):
    # the failed one cost nothing whoever's it was; the billed one may be ours
    items = [payload_less("b1"), payload_less("f1", status=500), payload_less("b2")]
    monkeypatch.setattr(queue, "_listing", lambda endpoint, since: iter(items))
    found = queue.find_submitted(FLASH, NO_SEED, SENT, SETTLE)
    assert found.handle is None and not found.absent
    assert found.why == "2 listed requests have no stored payload"


def test_a_failed_request_listed_without_payload_does_not_stop_the_proof(queue, monkeypatch):
    items = [payload_less("f1", status=500)]
    monkeypatch.setattr(queue, "_listing", lambda endpoint, since: iter(items))
    found = queue.find_submitted(FLASH, NO_SEED, SENT, SETTLE)
    assert found.handle is None and found.absent


def test_without_a_start_deadline_not_being_listed_never_proves_absence(queue, monkeypatch):
    monkeypatch.setattr(queue, "_listing", lambda endpoint, since: iter([]))
    found = queue.find_submitted(FLASH, FIELDS, SENT - 86400, math.inf)
    assert found.handle is None and not found.absent
    assert found.why == "not listed, and no start deadline is on record: never provably absent"


def test_a_request_received_long_after_ours_is_not_ours(queue, monkeypatch):
    # the same fields, sent again much later (another run, another sweep): never this submit
    late = listed("late", sent_at=SENT + 2 * MATCH_WINDOW)
    found = look(queue, monkeypatch, [late])
    assert found.handle is None and found.absent
    found = look(queue, monkeypatch, [late, listed("r1")])
    assert found.handle.request_id == "r1" and found.why == "found"
