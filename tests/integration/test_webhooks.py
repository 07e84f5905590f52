"""fal webhooks wake waiting jobs; lost or forged webhooks cost a status call, nothing more."""

from __future__ import annotations

import json

import httpx

from flows.sweep import sweep
from tests.helpers import kill_everything, ledger_statuses, start_run, wait_for, write_case
from wansweep.fal.webhooks import WebhookReceiver

LATENCY = 4.0


def flash_case(tmp_path, fallback: float):
    return write_case(
        tmp_path,
        rows=2,
        endpoints=["flash"],
        grid={"resolution": ["720p"]},
        seeds=[1, 2, 3],
        poll={"first": 1.0, "factor": 1.5, "max": 2.0, "webhook_fallback": fallback},
    )


def test_webhooks_replace_polling(fal, prefect_harness, tmp_path, webhook_env):
    fal.configure(latency=f"fixed={LATENCY}", media="tiny", concurrency=10)
    result = sweep(str(flash_case(tmp_path, fallback=600)))
    stats = fal.stats()
    assert result["outcomes"] == {"archived": 6}
    assert stats["webhooks_sent"] == 6 and stats["webhooks_failed"] == 0
    # without webhooks this poll spec checks each job 3+ times in 4 s; with them, once
    assert set(stats["status_polls_by_request"].values()) == {1}


def test_lost_webhooks_fall_back_to_polling(fal, prefect_harness, tmp_path, webhook_env):
    fal.configure(
        latency=f"fixed={LATENCY}", media="tiny", concurrency=10, faults="webhook_drop=1.0"
    )
    result = sweep(str(flash_case(tmp_path, fallback=2.0)))
    stats = fal.stats()
    assert result["outcomes"] == {"archived": 6}
    assert stats["faults"]["webhook_drop"] == 6 and stats["webhooks_sent"] == 0
    assert all(n >= 2 for n in stats["status_polls_by_request"].values())


def test_requests_taken_over_after_a_kill_are_checked_at_once(
    fal, prefect_harness, tmp_path, webhook_env
):
    """Their webhooks went to the dead process: waiting for one (or for the fallback) would
    only delay the archive, so a taken-over request is looked at straight away."""
    fal.configure(latency="fixed=8", media="tiny", concurrency=10)  # none ends before the kill
    spec = flash_case(tmp_path, fallback=600)
    proc = start_run(spec, tmp_path)
    wait_for(lambda: ledger_statuses(tmp_path / "archive")["submitted"] == 6, what="6 in flight")
    kill_everything(proc)
    wait_for(lambda: fal.stats()["completed"] == 6, what="fal to finish them")
    fal.reset()
    result = sweep(str(spec))
    stats = fal.stats()
    assert result["outcomes"] == {"resumed": 6} and stats["submits_accepted"] == 0
    assert set(stats["status_polls_by_request"].values()) == {1}


def test_receiver_wakes_only_the_named_request_and_refuses_junk():
    receiver = WebhookReceiver("http://127.0.0.1:0/hook")
    try:
        assert receiver.url.startswith("http://127.0.0.1:") and ":0/" not in receiver.url
        with httpx.Client() as http:
            early = {"request_id": "a", "status": "OK", "payload": {}}
            assert http.post(receiver.url, content=json.dumps(early)).status_code == 200
            assert http.post(receiver.url, content=b"not json").status_code == 400
            assert http.post(receiver.url, json={"status": "OK"}).status_code == 400
        assert receiver.wait("a", 0) is True  # arrived before anyone waited: not lost
        assert receiver.wait("a", 0) is False  # consumed
        assert receiver.wait("b", 0) is False
        receiver.wake_all()
        assert receiver.wait("b", 0) is True
    finally:
        receiver.close()


def test_receiver_takes_a_burst_of_webhooks():
    """fal calls back for many jobs at once (a wave of equal jobs ends together)."""
    import asyncio

    receiver = WebhookReceiver("http://127.0.0.1:0/hook")
    n = 300

    async def burst() -> list[int]:
        limits = httpx.Limits(max_connections=n)
        async with httpx.AsyncClient(timeout=10, limits=limits) as http:
            answers = await asyncio.gather(
                *(http.post(receiver.url, json={"request_id": f"r{i}"}) for i in range(n)),
                return_exceptions=True,
            )
        return [a.status_code if isinstance(a, httpx.Response) else 0 for a in answers]

    try:
        assert asyncio.run(burst()) == [200] * n
        assert all(receiver.wait(f"r{i}", 0) for i in range(n))
    finally:
        receiver.close()
