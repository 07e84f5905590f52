"""What fal's request listing proves about a submit whose answer was lost (pure: a scripted
listing, no server). The verdicts decide whether a job is paid for again, so each is pinned."""

from __future__ import annotations

import time

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


@pytest.fixture
def queue():
    q = FalQueue(FalConfig("https://q", "https://api", "key"), backoff=0.0)
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


def test_nothing_listed_long_after_proves_fal_never_took_it(queue, monkeypatch):
    found = look(queue, monkeypatch, [listed("r1", sent_at=SENT - 2 * MATCH_WINDOW)])
    assert found.handle is None and found.absent


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
