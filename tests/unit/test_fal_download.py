"""Video downloads from fal's CDN (wansweep.fal.download), against an in-process transport:
the key never goes with them, a short body is fetched again, a gone video is expired at once."""

from __future__ import annotations

import hashlib

import httpx
import pytest

from wansweep.errors import FailureKind, FalError, FalUnavailable
from wansweep.fal import FalConfig, FalQueue

VIDEO = b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 40


@pytest.fixture
def queue(monkeypatch):
    q = FalQueue(FalConfig("https://q", "https://api", "secret-key"), backoff=0.0)
    monkeypatch.setattr(q, "sleep", lambda s: None)
    keyed = []
    q.http = httpx.Client(
        transport=httpx.MockTransport(lambda r: keyed.append(r) or httpx.Response(500)),
        headers=dict(q.http.headers),
    )
    q.keyed = keyed
    yield q
    q.close()


def cdn(queue, *answers):
    """The CDN answers these, in turn (bytes: a 200 with that body; int: that status)."""
    seen, script = [], list(answers)

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        step = script.pop(0)
        if isinstance(step, Exception):
            raise step
        return httpx.Response(step) if isinstance(step, int) else httpx.Response(200, content=step)

    queue.cdn = httpx.Client(transport=httpx.MockTransport(answer))
    return seen


def test_a_download_streams_to_disk_hashed_and_never_carries_the_key(queue, tmp_path):
    seen = cdn(queue, VIDEO)
    size, sha = queue.download("https://v3.fal.media/files/x.mp4", tmp_path / "v.mp4", len(VIDEO))
    assert (size, sha) == (len(VIDEO), hashlib.sha256(VIDEO).hexdigest())
    assert (tmp_path / "v.mp4").read_bytes() == VIDEO
    assert len(seen) == 1 and "authorization" not in seen[0].headers
    assert queue.keyed == []  # the keyed client was never used for a video


def test_a_short_body_is_fetched_again(queue, tmp_path):
    seen = cdn(queue, VIDEO[:100], VIDEO)
    assert queue.download("https://cdn/x.mp4", tmp_path / "v.mp4", len(VIDEO))[0] == len(VIDEO)
    assert len(seen) == 2


@pytest.mark.parametrize("code", [403, 404, 410])
def test_a_video_fal_no_longer_serves_is_expired_at_once(queue, tmp_path, code):
    seen = cdn(queue, code, VIDEO)
    with pytest.raises(FalError) as err:
        queue.download("https://cdn/x.mp4", tmp_path / "v.mp4")
    assert err.value.kind is FailureKind.EXPIRED and err.value.status_code == code
    assert len(seen) == 1


def test_another_refusal_is_rejected_at_once(queue, tmp_path):
    seen = cdn(queue, 400)
    with pytest.raises(FalError) as err:
        queue.download("https://cdn/x.mp4", tmp_path / "v.mp4")
    assert err.value.kind is FailureKind.REJECTED and len(seen) == 1


def test_busy_answers_and_broken_connections_are_tried_again_then_given_up(queue, tmp_path):
    broken = httpx.ConnectError("reset")
    seen = cdn(queue, 503, broken, 429, VIDEO)
    assert queue.download("https://cdn/x.mp4", tmp_path / "v.mp4")[0] == len(VIDEO)
    assert len(seen) == 4
    tries = queue.attempts
    seen = cdn(queue, *[503] * tries)
    with pytest.raises(FalUnavailable, match="answer 503"):
        queue.download("https://cdn/x.mp4", tmp_path / "v.mp4")
    assert len(seen) == tries
