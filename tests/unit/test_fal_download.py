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
    """The CDN answers these, in turn (bytes: a 200 with that body; int: that status; a
    Response or an exception as it is)."""
    seen, script = [], list(answers)

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        step = script.pop(0)
        if isinstance(step, Exception):
            raise step
        if isinstance(step, httpx.Response):
            return step
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


@pytest.fixture
def waits(queue, monkeypatch):
    """The pauses the download takes between tries (backoff 0: only what fal asks for)."""
    paused: list[float] = []
    monkeypatch.setattr(queue, "sleep", paused.append)
    return paused


def test_a_video_is_fetched_with_a_plain_get(queue, tmp_path):
    seen = cdn(queue, VIDEO)
    queue.download("https://cdn/x.mp4", tmp_path / "v.mp4")
    assert seen[0].method == "GET"


def test_a_video_of_many_chunks_is_counted_and_hashed_whole(queue, tmp_path):
    big = VIDEO * 200  # over a MiB: streamed in more than one chunk
    cdn(queue, big)
    assert queue.download("https://cdn/x.mp4", tmp_path / "v.mp4") == (
        len(big),
        hashlib.sha256(big).hexdigest(),
    )
    assert (tmp_path / "v.mp4").read_bytes() == big
    cdn(queue, big)  # and with its size known, it is not taken for a short body
    assert queue.download("https://cdn/x.mp4", tmp_path / "v.mp4", len(big))[0] == len(big)


def test_a_busy_cdns_retry_after_is_waited_out_before_the_next_try(queue, waits, tmp_path):
    seen = cdn(queue, httpx.Response(429, headers={"Retry-After": "7"}), VIDEO)
    assert queue.download("https://cdn/x.mp4", tmp_path / "v.mp4")[0] == len(VIDEO)
    assert waits == [7.0] and len(seen) == 2


def test_every_try_but_the_first_is_waited_for_and_the_last_is_not_followed_by_a_wait(
    queue, waits, tmp_path
):
    tries = queue.attempts
    cdn(queue, *[503] * tries)
    with pytest.raises(FalUnavailable):
        queue.download("https://cdn/x.mp4", tmp_path / "v.mp4")
    assert len(waits) == tries - 1


def test_a_refused_download_names_its_status_and_url(queue, tmp_path):
    cdn(queue, 404)
    with pytest.raises(FalError, match=r"video download failed \(404\) from https://cdn/x.mp4"):
        queue.download("https://cdn/x.mp4", tmp_path / "v.mp4")


def test_giving_up_says_what_the_last_try_met(queue, tmp_path):
    tries = queue.attempts
    cdn(queue, *[VIDEO[:100]] * tries)
    with pytest.raises(FalUnavailable, match=f"got 100 bytes, expected {len(VIDEO)}"):
        queue.download("https://cdn/x.mp4", tmp_path / "v.mp4", len(VIDEO))
    cdn(queue, *[httpx.ConnectError("reset")] * tries)
    with pytest.raises(FalUnavailable, match="ConnectError: reset"):
        queue.download("https://cdn/x.mp4", tmp_path / "v.mp4")
