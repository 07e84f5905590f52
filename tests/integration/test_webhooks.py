"""fal webhooks wake waiting jobs and name lost submits' requests, when fal signed them; lost
webhooks fall back to polling; forged ones are refused and change nothing."""

from __future__ import annotations

import hashlib
import json
import socket
import threading
import time
import uuid
from pathlib import Path

import httpx

from tests.helpers import (
    free_port,
    kill_everything,
    ledger_statuses,
    run_log,
    run_sweep,
    start_run,
    wait_for,
    write_case,
)
from wansweep.fal.webhooks import MAX_BODY, WebhookReceiver
from wansweep.plan.planner import plan
from wansweep.plan.spec import load_spec
from wansweep.run.ledger import Ledger
from wansweep.store import open_store

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
    result = run_sweep(str(flash_case(tmp_path, fallback=600)))
    stats = fal.stats()
    assert result["outcomes"] == {"archived": 6}
    assert stats["webhooks_sent"] == 6 and stats["webhooks_failed"] == 0
    # without webhooks this poll spec checks each job 3+ times in 4 s; with them, once
    assert set(stats["status_polls_by_request"].values()) == {1}


def test_lost_webhooks_fall_back_to_polling(fal, prefect_harness, tmp_path, webhook_env):
    fal.configure(
        latency=f"fixed={LATENCY}", media="tiny", concurrency=10, faults="webhook_drop=1.0"
    )
    result = run_sweep(str(flash_case(tmp_path, fallback=2.0)))
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
    result = run_sweep(str(spec))
    stats = fal.stats()
    assert result["outcomes"] == {"resumed": 6} and stats["submits_accepted"] == 0
    assert set(stats["status_polls_by_request"].values()) == {1}


def signed(fal, request_id: str, timestamp: float | None = None, body: dict | None = None):
    """A delivery the local fal server signs, as fal signs its own."""
    body = body or {"request_id": request_id, "status": "OK", "payload": {}}
    return fal.signed_webhook(request_id, body, timestamp)


def uid() -> str:
    return str(uuid.uuid4())


def test_receiver_takes_only_what_fal_signed(fal, monkeypatch):
    monkeypatch.setenv("WANSWEEP_FAL_JWKS_URL", fal.env["WANSWEEP_FAL_JWKS_URL"])
    receiver = WebhookReceiver("http://127.0.0.1:0/hook")
    marks = []
    receiver.on_marker = lambda job, attempt, rid: marks.append((job, attempt, rid))
    job = "ab" * 12
    try:
        assert receiver.url.startswith("http://127.0.0.1:") and ":0/" not in receiver.url
        hook = receiver.url_for(job, 1)
        with httpx.Client() as http:
            rid = uid()
            headers, content = signed(fal, rid)
            assert http.post(hook, content=content, headers=headers).status_code == 200
            assert receiver.wait(rid, 0) is True and marks == [(job, 1, rid)]
            assert receiver.wait(rid, 0) is False  # consumed

            other = uid()
            stale_headers, stale = signed(fal, other, time.time() - 600)
            future_headers, future = signed(fal, uid(), time.time() + 600)
            refused = {
                "unsigned": (content, {"Content-Type": "application/json"}),
                "tampered body": (content.replace(b"OK", b"ERROR"), headers),
                "stale": (stale, stale_headers),
                "from the future": (future, future_headers),
                "another key": (content, {**headers, "X-Fal-Webhook-Signature": "ab" * 64}),
                "not hex": (content, {**headers, "X-Fal-Webhook-Signature": "zz"}),
            }
            for why, (body, with_headers) in refused.items():
                answer = http.post(hook, content=body, headers=with_headers)
                assert answer.status_code == 401, why
            # signed, but naming no request of fal's form: refused before any key is built
            bad_id = "x/../../../jobs/" + job + "/meta.json"
            headers, content = signed(fal, bad_id)
            assert http.post(hook, content=content, headers=headers).status_code == 400
            assert http.post(hook, content=b"x" * (MAX_BODY + 1)).status_code == 413
            # signed, but its URL names a job with a token this process did not issue
            rid = uid()
            headers, content = signed(fal, rid)
            forged = hook.replace("attempt=1", "attempt=2")
            assert http.post(forged, content=content, headers=headers).status_code == 200
        assert receiver.wait(rid, 0) is True  # it may wake its own request: a status call
        assert marks == [(job, 1, marks[0][2])] and receiver.wait(other, 0) is False
        assert receiver.refused == 8
    finally:
        receiver.close()


def test_receiver_takes_a_burst_of_webhooks(fal, monkeypatch):
    """fal calls back for many jobs at once (a wave of equal jobs ends together)."""
    import asyncio

    monkeypatch.setenv("WANSWEEP_FAL_JWKS_URL", fal.env["WANSWEEP_FAL_JWKS_URL"])
    receiver = WebhookReceiver("http://127.0.0.1:0/hook")
    n = 300
    deliveries = [signed(fal, uid()) for _ in range(n)]

    async def burst() -> list[int]:
        limits = httpx.Limits(max_connections=n)
        async with httpx.AsyncClient(timeout=10, limits=limits) as http:
            answers = await asyncio.gather(
                *(http.post(receiver.url, content=c, headers=h) for h, c in deliveries),
                return_exceptions=True,
            )
        return [a.status_code if isinstance(a, httpx.Response) else 0 for a in answers]

    try:
        assert asyncio.run(burst()) == [200] * n
        assert all(receiver.wait(json.loads(c)["request_id"], 0) for _, c in deliveries)
    finally:
        receiver.close()


def tree(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in folder.rglob("*")
        if p.is_file()
    }


def test_forged_webhooks_during_a_real_run_change_nothing(fal, tmp_path):
    """A `wansweep run` with webhooks on: every job archived through fal's signed webhooks;
    meanwhile unsigned, wrongly signed, stale and path-traversing deliveries are refused and
    write nothing, in the archive or outside it, and no archived sidecar changes."""
    fal.configure(latency="fixed=5", media="tiny", concurrency=2)  # 2 at a time: a while
    spec = write_case(
        tmp_path,
        rows=2,
        endpoints=["flash"],
        grid={"resolution": ["720p"]},
        seeds=[1, 2, 3],
        poll={"webhook_fallback": 600},
    )
    url = f"http://127.0.0.1:{free_port()}/fal-webhook"
    proc = start_run(spec, tmp_path, WANSWEEP_WEBHOOK_URL=url)
    archive = tmp_path / "archive"
    wait_for(lambda: len(list(archive.glob("jobs/*/meta.json"))) >= 2, what="two archived")
    before_archive, before_outside = tree(archive), tree(tmp_path.parent)
    job = next(archive.glob("jobs/*/meta.json")).parent.name
    with httpx.Client() as http:
        rid = uid()
        headers, content = signed(fal, rid, time.time() - 900)  # a replay, long after
        forged = [
            (content, {"Content-Type": "application/json"}),  # unsigned
            (content, {**headers, "X-Fal-Webhook-Signature": "cd" * 64}),  # wrongly signed
            (content, headers),  # stale
        ]
        for target in (f"x/../../../jobs/{job}/meta.json", "../../outside.json", "a" * 200):
            h, c = signed(fal, target)
            forged.append((c, h))  # fal's signature on a request id fal never makes
        for body, with_headers in forged:
            answer = http.post(f"{url}?job={job}&attempt=1", content=body, headers=with_headers)
            assert answer.status_code in (400, 401)
        for n in range(200):  # many distinct unsigned ids: nothing written for any
            http.post(f"{url}?job={job}&attempt={n}", json={"request_id": uid()})
    assert proc.wait(240) == 0, run_log(proc)[-3000:]
    kill_everything(proc)
    after = tree(archive)
    sidecars = [k for k in before_archive if k.endswith("meta.json")]
    assert all(after[k] == before_archive[k] for k in sidecars)  # byte-identical
    assert len([k for k in after if k.endswith("meta.json")]) == 6
    new_outside = set(tree(tmp_path.parent)) - set(before_outside)
    assert all(k.startswith(tmp_path.name + "/") for k in new_outside), new_outside
    markers = [k for k in after if k.startswith("markers/")]
    known = set(fal.requests())
    for key in markers:  # one per attempt, each naming a request fal made
        assert json.loads((archive / key).read_text())["request_id"] in known
    assert len(markers) <= 6 and fal.stats()["webhooks_sent"] >= 6


def test_a_verified_webhook_naming_a_request_fal_does_not_confirm_settles_nothing(
    fal, prefect_harness, tmp_path, webhook_env
):
    """Every answer lost, fal's listing hours behind, its webhooks never arrive; a delivery
    fal signed (the local server's key) names, for the job's own attempt, a request fal's
    records do not know: the marker is written, and it settles nothing."""
    from wansweep.fal import webhooks

    fal.configure(media="tiny", faults="drop_after_accept=1.0,listing_lag=3600,webhook_drop=1.0")
    spec = write_case(
        tmp_path,
        rows=1,
        endpoints=["flash"],
        grid={"resolution": ["720p"]},
        seeds=[1],
        reconcile={"grace": 20, "start_timeout": 600, "settle_after": 900},
    )
    job = accepted_keys(spec)[0]
    forged = {}

    def forge_when_submitted():  # the job waits in its grace period, looking again
        wait_for(lambda: fal.stats()["submits_accepted"] >= 1, what="the submit")
        receiver = next(iter(webhooks._receivers.values()))
        rid = forged["id"] = uid()
        headers, content = signed(fal, rid)
        httpx.post(receiver.url_for(job, 1), content=content, headers=headers).raise_for_status()

    thread = threading.Thread(target=forge_when_submitted)
    thread.start()
    result = run_sweep(str(spec))
    thread.join()
    assert result["outcomes"] == {"ambiguous": 1}
    archive = tmp_path / "archive"
    marker = json.loads((archive / "markers" / job / "1.json").read_text())
    assert marker["request_id"] == forged["id"]  # verified, so written; never confirmed
    entry = Ledger(open_store(str(archive))).get(job)
    assert entry.status == "ambiguous" and entry.request_id is None
    assert fal.stats()["submits_accepted"] == 1


def accepted_keys(spec) -> list[str]:

    sweep_spec = load_spec(spec)
    return [j.job_key for j in plan(sweep_spec, sweep_spec.manifest).jobs]


def test_the_webhook_receiver_has_limits():
    receiver = WebhookReceiver("http://127.0.0.1:0/hook")
    port = int(receiver.address.rsplit(":", 1)[1])
    assert port not in (0, 80)
    url = f"http://127.0.0.1:{port}/hook"
    try:
        raw = socket.create_connection(("127.0.0.1", port))
        raw.sendall(b"POST /hook HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n{}")
        assert b" 400 " in raw.recv(64)  # an answer, not a traceback
        raw.close()
        assert httpx.post(url, json={"request_id": "x" * 10_000}).status_code == 401
        big = json.dumps({"request_id": "r", "pad": "x" * (2 << 20)})
        assert httpx.post(url, content=big).status_code == 413
        idle = socket.create_connection(("127.0.0.1", port))
        idle.settimeout(30)
        assert idle.recv(1) == b""  # an idle connection is closed, not held forever
        assert receiver.refused == 2  # the malformed request never reached the receiver
    finally:
        receiver.close()
