"""When a request completed, from what a wait saw (pure: no server)."""

import fal_client
import pytest

from wansweep.fal.stream import Completion
from wansweep.run.finish import timings
from wansweep.run.lifecycle import LedgerEntry

DONE = fal_client.Completed(logs=None, metrics={"inference_time": 4.0})


def test_a_polled_completion_is_the_middle_of_the_gap_between_two_looks():
    c = Completion.between(DONE, after=100.0, via="poll")
    assert c.completed_at == pytest.approx((100.0 + c.detected_at) / 2)
    assert c.uncertainty == pytest.approx((c.detected_at - 100.0) / 2, abs=1e-3)


def test_a_completion_with_no_earlier_look_is_unbounded():
    c = Completion.between(DONE, after=None, via="poll")
    assert c.completed_at == c.detected_at and c.uncertainty is None


def test_latencies_are_measured_to_completion_not_to_detection():
    entry = LedgerEntry(
        "k",
        submitted_at=10.0,
        completed_at=20.0,
        detected_at=27.5,
        completion_uncertainty=0.0,
        detected_via="stream",
        inference_seconds=4.0,
    )
    t = timings(entry, archived_at=30.0)
    assert t["wall_seconds"] == 10.0 and t["queue_seconds"] == 6.0
    assert t["started_at"] == 16.0 and t["detection_lag_s"] == 7.5
