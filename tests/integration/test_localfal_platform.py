"""The local server's Platform API as fal documents it: the request listing (finished requests
only, sorted by end time, filters, paging, lag, missing payloads), usage, start timeouts,
cancel of a running request, webhook retries and its own clock."""

from __future__ import annotations

import base64
import json
import time
from email.utils import parsedate_to_datetime

import fal_client
import httpx
import pytest

from tests.helpers import FLASH, data_uri, make_image, wait_for


def listing(fal, **params):
    r = httpx.get(
        f"{fal.url}/v1/models/requests/by-endpoint",
        params={"endpoint_id": FLASH, "expand": "payloads", **params},
        headers={"Authorization": f"Key {fal.env['FAL_KEY']}"},
    )
    return r


def body(prompt: str, **extra):
    return {"prompt": prompt, "image_url": data_uri(make_image()), "resolution": "720p", **extra}


def test_only_finished_requests_are_listed_with_data_uris_moved_to_storage(fal):
    since = str(time.time())
    fal.configure(latency="queue=30")
    queued = fal_client.submit(FLASH, arguments=body("queued"))
    assert all(i["request_id"] != queued.request_id for i in listing(fal).json()["items"])
    fal.configure(latency="zero")
    sent = body("listed", seed=5)
    handle = fal_client.submit(FLASH, arguments=sent)
    handle.get(interval=0.05)
    items = listing(fal, start=since).json()["items"]
    assert [i["request_id"] for i in items] == [handle.request_id]  # the queued one is not
    stored = items[0]["json_input"]
    assert stored["image_url"].startswith("https://") and stored["image_url"] != sent["image_url"]
    assert {k: v for k, v in stored.items() if k != "image_url"} == {
        k: v for k, v in sent.items() if k != "image_url"
    }
    fal_client.cancel(FLASH, queued.request_id)


def test_cooperative_listing_shows_queued_requests_as_sent(fal):
    fal.configure(latency="queue=30", listing="cooperative")
    sent = body("cooperative")
    handle = fal_client.submit(FLASH, arguments=sent)
    items = listing(fal).json()["items"]
    assert items[0]["request_id"] == handle.request_id and items[0]["json_input"] == sent
    fal_client.cancel(FLASH, handle.request_id)


def test_filters_paging_and_limits(fal):
    ids = []
    for n in range(5):
        h = fal_client.submit(FLASH, arguments=body(f"page {n}", seed=n))
        h.get(interval=0.05)
        ids.append(h.request_id)
    assert listing(fal, limit=101).status_code == 422
    seen, cursor = [], None
    while True:
        page = listing(fal, limit=2, **({"cursor": cursor} if cursor else {})).json()
        seen += [i["request_id"] for i in page["items"]]
        cursor = page["next_cursor"]
        if not page["has_more"]:
            break
        base64.urlsafe_b64decode(cursor)  # an opaque cursor, as fal's
    assert [i for i in seen if i in ids] == list(reversed(ids))  # newest end first
    assert len(seen) == len(set(seen))  # pages do not overlap
    assert [i["request_id"] for i in listing(fal, request_id=ids[2]).json()["items"]] == [ids[2]]

    def listed(**filters) -> set[str]:
        return {i["request_id"] for i in listing(fal, limit=100, **filters).json()["items"]}

    assert not listed(status="error") & set(ids) and set(ids) <= listed(status="success")
    assert listing(fal, status="queued").status_code == 422


def test_listing_lag_and_missing_payloads(fal):
    fal.configure(faults="listing_lag=2,listing_payloads=1.0")
    h = fal_client.submit(FLASH, arguments=body("lagging"))
    h.get(interval=0.05)

    def mine():
        return listing(fal, request_id=h.request_id).json()["items"]

    assert mine() == []
    wait_for(mine, timeout=30, what="the lagging listing")
    assert mine()[0]["json_input"] is None


@pytest.mark.parametrize(
    "header, honoured",
    [("X-Fal-Request-Timeout", True), ("X-Fal-Request-Start-Timeout", False)],
)
def test_only_fals_documented_start_deadline_ends_an_unstarted_request(fal, header, honoured):
    """fal documents X-Fal-Request-Timeout; any other name is a header fal does not know, so
    the local server ignores it, as fal would: a client that sent only that would hold a
    request with no deadline (and could never prove a lost submit absent)."""
    since = time.time()
    fal.configure(latency="flash=1", concurrency=1)
    running = fal_client.submit(FLASH, arguments=body(f"first {header}"))
    key = {"Authorization": f"Key {fal.env['FAL_KEY']}"}
    waiting = httpx.post(
        f"{fal.url}/{FLASH}", json=body(f"second {header}"), headers={**key, header: "1"}
    ).json()
    wait_for(
        lambda: httpx.get(waiting["status_url"], headers=key).json()["status"] == "COMPLETED",
        timeout=30,
        what="the second request to end",
    )
    result = httpx.get(waiting["response_url"], headers=key)
    running.get(interval=0.05)
    usage = usage_summary(fal, since)
    if honoured:
        assert result.status_code == 504 and result.headers["x-fal-request-timeout-type"] == "user"
        assert usage[FLASH]["quantity"] == 5  # the first one only
    else:
        assert result.status_code == 200 and usage[FLASH]["quantity"] == 10
    recorded = fal.requests()[waiting["request_id"]]["headers"]
    assert recorded[header.lower()] == "1"


def usage_summary(fal, since: float) -> dict:
    r = httpx.get(
        f"{fal.url}/v1/models/usage",
        params={"expand": "summary", "start": str(since)},
        headers={"Authorization": f"Key {fal.env['FAL_KEY']}"},
    )
    return {row["endpoint_id"]: row for row in r.raise_for_status().json()["summary"]}


def test_usage_bills_videos_flagged_422s_and_cancelled_running_requests_that_finish(fal):
    since = time.time()
    fal.configure(latency="flash=0.4")
    done = fal_client.submit(FLASH, arguments=body("billed", duration="5"))
    done.get(interval=0.05)
    fal.configure(latency="flash=1")
    running = fal_client.submit(FLASH, arguments=body("cancel me", duration="10"))
    wait_for(
        lambda: isinstance(running.status(), fal_client.InProgress), timeout=30, what="running"
    )
    running.cancel()
    assert isinstance(running.get(interval=0.05), dict)  # it finished all the same
    fal.configure(latency="zero", faults="failed=1.0")
    failed = fal_client.submit(FLASH, arguments=body("fails"))
    with pytest.raises(fal_client.client.FalClientHTTPError):
        failed.get(interval=0.05)
    fal.configure(faults="flagged=1.0")
    flagged = fal_client.submit(FLASH, arguments=body("flagged", duration="15"))
    with pytest.raises(fal_client.client.FalClientHTTPError):
        flagged.get(interval=0.05)
    row = usage_summary(fal, since)[FLASH]
    assert row["quantity"] == 5 + 10 + 15 and row["unit"] == "units"
    assert row["cost"] == pytest.approx(30 * row["unit_price"])


def test_webhooks_are_retried_until_delivered(fal):
    from http.server import BaseHTTPRequestHandler, HTTPServer
    from threading import Thread

    calls = []

    class Flaky(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            data = self.rfile.read(int(self.headers["Content-Length"]))
            calls.append(json.loads(data))
            self.send_response(503 if len(calls) < 3 else 200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Flaky)
    Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    handle = fal_client.submit(FLASH, arguments=body("hook"), webhook_url=url)
    wait_for(lambda: len(calls) >= 3, timeout=60, what="three webhook deliveries")
    assert {c["request_id"] for c in calls} == {handle.request_id}
    server.shutdown()


def test_the_server_clock_can_run_off_this_machines(fal):
    fal.configure(clock_offset=-300)
    r = listing(fal)
    served = parsedate_to_datetime(r.headers["date"]).timestamp()
    assert served == pytest.approx(time.time() - 300, abs=30)  # 300 off, not a busy second


def test_config_is_validated(fal):
    for bad in ({"concurrency": -1}, {"listing": "helpful"}, {"latency": "fast"}, {"x": 1}):
        r = httpx.post(f"{fal.url}/_local/config", json=bad)
        assert r.status_code == 422, bad
