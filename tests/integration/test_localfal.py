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

from tests.helpers import FLASH, STANDARD, data_uri, fetch, make_image, make_wav
from wansweep.media import frames as media

SEED_EXAMPLE_PROMPT = (
    "A comedic cinematic demo where typed prompts physically transform reality. Photoreal, strong "
    "match cuts, coherent main character, no subtitles.\n\nShot 1 [0-4s] Continue from first frame. "
    'The creator presses "PRINT".\nShot 2 [4-8s] Smash cut: the printed paper flies into the air.\n'
    "Shot 3 [8-12s] Hard cut: the paper tears and reveals a tropical jungle.\nShot 4 [12-15s] Hard "
    "cut back to studio."
)


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
    data = fetch(video["url"])
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
    assert fetch(a["video"]["url"]) == fetch(b["video"]["url"])
    assert (a["video"]["width"], a["video"]["height"]) == (1080, 1920)
    assert "actual_prompt" not in a
    c = fal_client.subscribe(FLASH, arguments={**args, "seed": 6})
    assert fetch(c["video"]["url"]) != fetch(a["video"]["url"])


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
    assert media.probe(fetch(r["video"]["url"])).duration == pytest.approx(10.0, abs=0.1)


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
    data = fetch(r["video"]["url"])
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
    assert media.probe(fetch(r["video"]["url"])).has_audio


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


def test_the_local_server_serves_no_file_outside_its_folder(fal):
    secret = fal.workdir / "state" / "secret.txt"
    secret.parent.mkdir(exist_ok=True)
    secret.write_text("top secret")
    for name in ("../../state/secret.txt", "..%2F..%2Fstate%2Fsecret.txt", "../../../etc/passwd"):
        url = f"{fal.url}/_local/files/{name}"
        handle = fal_client.submit(FLASH, arguments={"prompt": "p", "image_url": url})
        with pytest.raises(fal_client.client.FalClientHTTPError) as err:
            handle.get(interval=0.05)
        assert err.value.status_code == 422
        text = str(err.value.response.text)
        assert "top secret" not in text and str(fal.workdir) not in text and "root:" not in text


def test_with_a_key_every_route_wants_it(tmp_path):
    from wansweep.localfal.runner import start_local_fal

    with start_local_fal(workdir=tmp_path, key="only-this-key") as server:
        import ssl

        trust = ssl.create_default_context(cafile=server.env["SSL_CERT_FILE"])
        plain = httpx.Client(verify=trust, base_url=server.url)
        for method, path in (
            ("GET", "/_local/stats"),
            ("POST", "/_local/reset"),
            ("POST", "/_local/config"),
            ("GET", "/_local/files/x.png"),
            ("GET", "/v1/models/requests/by-endpoint"),
        ):
            assert plain.request(method, path).status_code == 401, path
        assert server.stats()["submits_accepted"] == 0  # with the key: fine
