"""An unmodified fal-client against the local fal-compatible server, over real HTTPS."""

from __future__ import annotations

import asyncio
import io
import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import fal_client
import httpx
import pytest
from PIL import Image

from tests.conftest import data_uri, make_image, make_wav
from wansweep import media, schema
from wansweep.localfal.server import input_key

STANDARD, FLASH = schema.ENDPOINTS
SEED_EXAMPLE_PROMPT = (
    "A comedic cinematic demo where typed prompts physically transform reality. Photoreal, strong "
    "match cuts, coherent main character, no subtitles.\n\nShot 1 [0-4s] Continue from first frame. "
    'The creator presses "PRINT".\nShot 2 [4-8s] Smash cut: the printed paper flies into the air.\n'
    "Shot 3 [8-12s] Hard cut: the paper tears and reveals a tropical jungle.\nShot 4 [12-15s] Hard "
    "cut back to studio."
)


def _video(url: str) -> bytes:
    return httpx.get(url, timeout=60).raise_for_status().content


@pytest.mark.parametrize("endpoint", [STANDARD, FLASH])
def test_seed_example_returns_the_output_shape_and_a_real_video(fal, endpoint):
    image = make_image(640, 360)
    result = fal_client.subscribe(
        endpoint,
        arguments={
            "prompt": SEED_EXAMPLE_PROMPT,
            "image_url": data_uri(image),
            "resolution": "720p",
            "duration": "5",
            "negative_prompt": "low resolution, error, worst quality, low quality, defects",
            "enable_prompt_expansion": True,
            "enable_safety_checker": True,
            "seed": 11,
        },
        with_logs=True,
    )
    assert set(result) == {"video", "seed", "actual_prompt"}
    assert result["seed"] == 11 and isinstance(result["actual_prompt"], str)
    video = result["video"]
    assert video["content_type"] == "video/mp4"
    assert {
        "url",
        "file_name",
        "file_size",
        "width",
        "height",
        "fps",
        "duration",
        "num_frames",
    } <= set(video)
    data = _video(video["url"])
    assert len(data) == video["file_size"]
    probe = media.probe(data)
    assert (probe.width, probe.height) == (1280, 720)  # 16:9 input, 720p names the short side
    assert probe.duration == pytest.approx(5.0, abs=0.1) and probe.codec == "h264"
    first = media.frames_at(data, (0.0,))[0]
    assert media.similarity(Image.open(io.BytesIO(image)), first) > 0.95
    unrelated = Image.new("RGB", (640, 360), (0, 0, 0))
    assert media.similarity(unrelated, first) < 0.8


def test_same_input_and_seed_give_the_same_bytes_and_portrait_keeps_its_aspect(fal):
    args = {
        "prompt": "a slow pan",
        "image_url": data_uri(make_image(360, 640)),
        "resolution": "1080p",
        "seed": 5,
        "enable_prompt_expansion": False,
    }
    a = fal_client.subscribe(FLASH, arguments=args)
    b = fal_client.subscribe(FLASH, arguments=args)
    assert _video(a["video"]["url"]) == _video(b["video"]["url"])
    assert (a["video"]["width"], a["video"]["height"]) == (1080, 1920)
    assert "actual_prompt" not in a
    c = fal_client.subscribe(FLASH, arguments={**args, "seed": 6})
    assert _video(c["video"]["url"]) != _video(a["video"]["url"])


def test_random_seed_when_absent_and_durations(fal):
    r = fal_client.subscribe(
        FLASH,
        arguments={
            "prompt": "x",
            "image_url": data_uri(make_image()),
            "resolution": "720p",
            "duration": "10",
        },
    )
    assert isinstance(r["seed"], int)
    assert media.probe(_video(r["video"]["url"])).duration == pytest.approx(10.0, abs=0.1)


def test_multi_shots_cut_at_the_marked_times(fal):
    args = {
        "prompt": "Shot 1 [0-2s] calm. Shot 2 [2-5s] chaos.",
        "image_url": data_uri(make_image()),
        "resolution": "720p",
        "seed": 1,
        "multi_shots": True,
        "enable_prompt_expansion": True,
    }
    r = fal_client.subscribe(STANDARD, arguments=args)
    data = _video(r["video"]["url"])
    frames = media.frames_at(data, (30 / 79, 31 / 79, 33 / 79))  # 16 fps: the cut is at frame 32
    before, after = media.similarity(frames[0], frames[1]), media.similarity(frames[1], frames[2])
    assert before > 0.97 and after < before - 0.02


def test_audio_is_muxed(fal):
    r = fal_client.subscribe(
        FLASH,
        arguments={
            "prompt": "x",
            "image_url": data_uri(make_image()),
            "resolution": "720p",
            "audio_url": data_uri(make_wav(4.0), "audio/wav"),
        },
    )
    assert media.probe(_video(r["video"]["url"])).has_audio


def test_submit_status_result_handles_and_iter_events(fal):
    handle = fal_client.submit(
        FLASH,
        arguments={
            "prompt": "x",
            "image_url": data_uri(make_image()),
            "resolution": "720p",
            "seed": 1,
        },
    )
    events = list(handle.iter_events(with_logs=True, interval=0.05))
    assert isinstance(events[-1], fal_client.Completed)
    assert "inference_time" in events[-1].metrics
    again = fal_client.SyncClient().get_handle(FLASH, handle.request_id)
    assert isinstance(fal_client.status(FLASH, handle.request_id), fal_client.Completed)
    assert again.get()["seed"] == 1
    assert fal_client.result(FLASH, handle.request_id)["seed"] == 1


def test_async_client(fal):
    async def go():
        client = fal_client.AsyncClient()
        handle = await client.submit(
            STANDARD,
            arguments={
                "prompt": "x",
                "image_url": data_uri(make_image()),
                "resolution": "720p",
                "seed": 2,
            },
        )
        status = await handle.status()
        assert isinstance(status, (fal_client.Queued, fal_client.InProgress, fal_client.Completed))
        return await handle.get(interval=0.05), await client.result(STANDARD, handle.request_id)

    got, again = asyncio.run(go())
    assert got == again and got["seed"] == 2


def test_cancel_a_queued_request(fal):
    fal.configure(latency="queue=30")
    handle = fal_client.submit(
        FLASH, arguments={"prompt": "x", "image_url": data_uri(make_image())}
    )
    assert isinstance(handle.status(), fal_client.Queued)
    handle.cancel()
    with pytest.raises(fal_client.client.FalClientHTTPError) as err:
        handle.get(interval=0.05)
    assert err.value.status_code == 400
    assert fal.stats()["cancels"] == 1


def test_concurrency_limit_queues_the_rest(fal):
    fal.configure(latency="flash=0.2", concurrency=2)
    handles = [
        fal_client.submit(
            FLASH,
            arguments={
                "prompt": f"p{i}",
                "image_url": data_uri(make_image()),
                "resolution": "720p",
                "seed": i,
            },
        )
        for i in range(5)
    ]
    statuses = [h.status() for h in handles]
    assert any(isinstance(s, fal_client.Queued) and s.position >= 1 for s in statuses)
    for h in handles:
        h.get(interval=0.05)
    assert fal.stats()["peak_in_progress"] == 2


def test_status_stream_sse(fal):
    handle = fal_client.submit(
        FLASH, arguments={"prompt": "x", "image_url": data_uri(make_image()), "resolution": "720p"}
    )
    events = []
    with httpx.stream(
        "GET",
        handle.status_url + "/stream",
        headers={"Authorization": f"Key {fal.env['FAL_KEY']}"},
        timeout=60,
    ) as r:
        for line in r.iter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line[6:]))
    assert events[-1]["status"] == "COMPLETED"


def test_webhook_is_delivered(fal):
    received = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self):
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()
            done.set()

        def log_message(self, *a):
            pass

    done = threading.Event()
    server = HTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        handle = fal_client.submit(
            FLASH,
            arguments={
                "prompt": "x",
                "image_url": data_uri(make_image()),
                "resolution": "720p",
                "seed": 3,
            },
            webhook_url=f"http://127.0.0.1:{server.server_port}/hook",
        )
        assert done.wait(60)
    finally:
        server.shutdown()
    assert received[0]["request_id"] == handle.request_id and received[0]["status"] == "OK"
    assert received[0]["payload"]["seed"] == 3


def test_image_served_by_the_server_itself(fal):
    url = httpx.put(f"{fal.url}/_local/files/pic.png", content=make_image()).json()["url"]
    r = fal_client.subscribe(
        FLASH, arguments={"prompt": "x", "image_url": url, "resolution": "720p"}
    )
    assert r["video"]["width"] == 1280


def test_request_listing_finds_a_submit(fal):
    body = {"prompt": "find me", "image_url": data_uri(make_image()), "resolution": "720p"}
    handle = fal_client.submit(FLASH, arguments=body)
    handle.get(interval=0.05)
    r = httpx.get(
        f"{fal.url}/v1/models/requests/by-endpoint",
        params={"endpoint_id": FLASH, "expand": "payloads", "limit": 10},
        headers={"Authorization": f"Key {fal.env['FAL_KEY']}"},
    )
    items = r.json()["items"]
    assert items[0]["request_id"] == handle.request_id and items[0]["json_input"] == body
    assert items[0]["status_code"] == 200


def _fal_422(endpoint, args):
    handle = fal_client.submit(endpoint, arguments=args)
    with pytest.raises(fal_client.client.FalClientHTTPError) as err:
        handle.get(interval=0.05)
    assert err.value.status_code == 422
    detail = err.value.message
    assert isinstance(detail, list) and all(d["loc"][0] == "body" for d in detail)
    return {(d["loc"][1], d["type"]) for d in detail}


RGBA_PNG = make_image(mode="RGBA")
GIF = make_image(fmt="GIF")
CASES = {
    "prompt too long": ({"prompt": "x" * 801}, ("prompt", "string_too_long")),
    "negative prompt too long": (
        {"negative_prompt": "n" * 501},
        ("negative_prompt", "string_too_long"),
    ),
    "duration enum": ({"duration": "7"}, ("duration", "enum")),
    "resolution enum": ({"resolution": "480p"}, ("resolution", "enum")),
    "unknown field": ({"aspect_ratio": "16:9"}, ("aspect_ratio", "extra_forbidden")),
    "missing prompt": ({"prompt": None}, ("prompt", "missing")),
    "image unreadable": (
        {"image_url": data_uri(b"not an image")},
        ("image_url", "image_unreadable"),
    ),
    "image too small": (
        {"image_url": data_uri(make_image(200, 300))},
        ("image_url", "image_dimensions"),
    ),
    "image too big": (
        {"image_url": data_uri(make_image(7700, 300, fmt="JPEG"), "image/jpeg")},
        ("image_url", "image_dimensions"),
    ),
    "image format": ({"image_url": data_uri(GIF, "image/gif")}, ("image_url", "image_format")),
    "image unreachable": (
        {"image_url": "https://127.0.0.1:9/none.png"},
        ("image_url", "file_download_error"),
    ),
    "audio too short": (
        {"audio_url": data_uri(make_wav(1.0), "audio/wav")},
        ("audio_url", "audio_duration"),
    ),
    "audio format": (
        {"audio_url": data_uri(make_image(), "audio/wav")},
        ("audio_url", "audio_format"),
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_validation_rules_answer_fal_422_shape(fal, case):
    change, expected = CASES[case]
    args = {"prompt": "ok", "image_url": data_uri(make_image()), "resolution": "720p", **change}
    args = {k: v for k, v in args.items() if v is not None}
    assert expected in _fal_422(FLASH, args)


def test_image_over_25_mb_is_refused():
    info, problems = schema.check_image(make_image() + b"\0" * (25 * 1024 * 1024))
    assert ("image_url", "file_too_large") in {(p.field, p.rule) for p in problems}


def test_alpha_and_advised_size_are_warnings_only(fal):
    _, problems = schema.check_image(RGBA_PNG)
    assert {(p.rule, p.severity) for p in problems} >= {("image_alpha", "warning")}
    r = fal_client.subscribe(
        FLASH,
        arguments={
            "prompt": "x",
            "image_url": data_uri(make_image(300, 300)),
            "resolution": "720p",
        },
    )
    assert r["video"]["width"] == 720


FAULT_CASES = {
    "submit_429": "submits_rejected",
    "submit_5xx": "submits_rejected",
    "submit_ingress_5xx": "submits_rejected",
    "status_429": "status_polls",
    "status_5xx": "status_polls",
    "result_5xx": "result_fetches",
    "failed": "failed",
    "download_fail": "downloads",
    "download_slow": "downloads",
}


@pytest.mark.parametrize("fault", list(FAULT_CASES))
def test_every_fault_mode_is_counted(fal, fault):
    body = {"prompt": "x", "image_url": data_uri(make_image()), "resolution": "720p", "seed": 9}
    if fault.startswith("download"):
        url = fal_client.subscribe(FLASH, arguments=body)["video"]["url"]
        fal.configure(faults=f"{fault}=1.0,slow_bytes_per_s=10000000")
        with pytest.raises(httpx.HTTPError) if fault == "download_fail" else _no_error():
            _video(url)
    else:
        # Rate 1.0 where fal-client gives up at once; 0.5 where its own retries get through.
        rate = 1.0 if fault in ("failed", "result_5xx", "submit_5xx") else 0.5
        fal.configure(faults=f"{fault}={rate}", fault_seed=1)
        with pytest.raises(fal_client.client.FalClientHTTPError) if rate == 1.0 else _no_error():
            fal_client.subscribe(FLASH, arguments=body)
    stats = fal.stats()
    assert stats["faults"].get(fault, 0) >= 1
    assert stats[FAULT_CASES[fault]] >= 1


class _no_error:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_dropped_connection_after_accept_is_accepted_once_but_the_client_retries(fal):
    """The hazard this project exists to avoid: fal-client re-POSTs after a lost answer."""
    import random

    # The server's fault draws come from random.Random(fault_seed): pick a seed whose first
    # submit drops after being accepted and whose second goes through.
    seed = next(s for s in range(1000) if (r := random.Random(s)).random() < 0.5 <= r.random())
    fal.configure(faults="drop_after_accept=0.5", fault_seed=seed)
    body = {"prompt": "dup", "image_url": data_uri(make_image()), "resolution": "720p", "seed": 4}
    handle = fal_client.submit(FLASH, arguments=body)  # succeeds on its own retry
    stats = fal.stats()
    assert stats["faults"]["drop_after_accept"] == 1
    assert stats["submits_by_input"][input_key(FLASH, body)] == 2  # two paid jobs for one call
    assert handle.request_id


def test_result_expires_after_retention(fal):
    fal.configure(faults="retention=0")
    handle = fal_client.submit(
        FLASH, arguments={"prompt": "x", "image_url": data_uri(make_image()), "resolution": "720p"}
    )
    with pytest.raises(fal_client.client.FalClientHTTPError) as err:
        handle.get(interval=0.05)
    assert err.value.status_code == 410


def test_stats_reset_and_unauthorised(fal):
    r = httpx.post(f"{fal.url}/{FLASH}", json={"prompt": "x"})
    assert r.status_code == 401
    fal.reset()
    assert fal.stats()["submits_accepted"] == 0


def test_pricing_api_through_falqueue(fal):
    from wansweep.falqueue import FalConfig, FalQueue

    q = FalQueue(FalConfig.from_env())
    prices = q.prices(list(schema.ENDPOINTS))
    q.close()
    assert prices[FLASH]["unit_price"] == 0.05 and prices[FLASH]["unit"] == "second"
