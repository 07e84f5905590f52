"""The local fal server refuses what fal refuses (422 shape) and injects every fault on demand."""

from __future__ import annotations

import fal_client
import httpx
import pytest

from tests.helpers import FLASH, STANDARD, data_uri, fetch, make_image, make_wav
from wansweep.localfal.queue import input_key
from wansweep.plan import schema


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
    "prompt too long": ({"prompt": "x" * 10_001}, ("prompt", "string_too_long")),
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
            fetch(url)
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


def test_pricing_api_through_fal_package(fal):
    from wansweep.fal import FalConfig, FalQueue

    q = FalQueue(FalConfig.from_env())
    prices = q.prices([STANDARD, FLASH])
    q.close()
    assert prices[FLASH]["unit_price"] == 0.05 and prices[FLASH]["unit"] == "units"
