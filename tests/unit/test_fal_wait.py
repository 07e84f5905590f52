"""How a wait reacts to its status stream (pure: a scripted stream and status, no server)."""

from __future__ import annotations

import fal_client
import pytest

from wansweep.fal import FalConfig, FalQueue
from wansweep.fal.stream import Completion, StreamBroken, StreamUnsupported
from wansweep.fal.types import Handle, PollSpec

DONE = fal_client.Completed(logs=None, metrics={})
RUNNING = fal_client.InProgress(logs=None)
HANDLE = Handle("r1", "https://q/r1", "https://q/r1/status", "https://q/r1/cancel")


class Script:
    """``stream``: what each follow() does; ``status``: what each status check answers."""

    def __init__(self, stream, status):
        self.stream, self.status, self.calls = list(stream), list(status), []

    def follow(self, url, parse):
        self.calls.append("stream")
        step = self.stream.pop(0)
        if isinstance(step, Exception):
            raise step
        return Completion(DONE, 1.0, 1.0, 0.0, "stream")

    def close(self):
        pass

    def cancel_all(self):
        pass

    def check(self, handle, fh):
        self.calls.append("status")
        return self.status.pop(0)


@pytest.fixture
def queue(monkeypatch):
    q = FalQueue(FalConfig("https://q", "https://api", "key"), backoff=0.0)
    monkeypatch.setattr(q, "sleep", lambda s: None)
    yield q
    q.close()


def wait(queue, script, **poll):
    queue.streams = script
    queue._status = script.check
    return queue.wait(HANDLE, PollSpec(first=0.01, **poll))


def test_a_live_stream_sees_the_completion_with_no_other_request(queue):
    script = Script(["done"], [])
    assert wait(queue, script).via == "stream" and script.calls == ["stream"]


def test_a_break_is_followed_by_one_status_check_then_a_reconnect(queue):
    script = Script([StreamBroken("dropped", events=2), "done"], [RUNNING])
    assert wait(queue, script).via == "stream"
    assert script.calls == ["stream", "status", "stream"]


def test_a_completion_missed_by_a_broken_stream_is_found_by_the_check(queue):
    script = Script([StreamBroken("dropped")], [DONE])
    done = wait(queue, script)
    assert done.via == "poll" and done.uncertainty is not None
    assert script.calls == ["stream", "status"]


def test_a_server_without_streams_is_polled_from_then_on(queue):
    script = Script([StreamUnsupported(405)], [RUNNING, RUNNING, DONE, DONE])
    assert wait(queue, script).via == "poll"
    assert queue.streams_off
    assert wait(queue, script).via == "poll"  # the next job does not try a stream
    assert script.calls == ["stream", "status", "status", "status", "status"]


def test_streams_that_keep_breaking_give_way_to_polling(queue):
    broken = [StreamBroken("refused") for _ in range(5)]
    script = Script(broken, [RUNNING] * 5 + [DONE])
    assert wait(queue, script).via == "poll"
    assert script.calls.count("stream") == 5 and script.calls[-1] == "status"


def test_polling_when_streams_are_turned_off(queue):
    script = Script([], [RUNNING, DONE])
    assert wait(queue, script, stream=False).via == "poll"
    assert "stream" not in script.calls
