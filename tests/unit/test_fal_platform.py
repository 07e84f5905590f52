"""fal's Platform API as wansweep reads it (wansweep.fal.platform), against an in-process fake of
what fal documents: the request listing (by endpoint, newest first, at most 100 a page, cursor
paging, payloads only when asked for), pricing, billed usage, OpenAPI documents and a request's
result. These answers decide whether a lost submit is paid for again, so each reading is pinned."""

from __future__ import annotations

import math
import os
import time
from datetime import UTC, datetime

import httpx
import pytest

from wansweep.errors import FailureKind, FalError, FalUnavailable
from wansweep.fal import FalConfig, FalQueue

QUEUE, API, OPENAPI = "https://queue.test", "https://api.test/v1", "https://docs.test/openapi.json"
FLASH, STANDARD = "wan/v2.6/image-to-video/flash", "wan/v2.6/image-to-video"
FIELDS = {"prompt": "a harbour", "seed": 7, "resolution": "720p"}
SENT = float(int(time.time()) - 3600)  # an hour ago: long settled; whole seconds as fal lists them
SETTLE = 600.0


def stamp(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def moment(text: str) -> float:
    """A time as fal reads one: ISO 8601; one without a zone is UTC (fal's clock)."""
    dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return (dt if dt.tzinfo else dt.replace(tzinfo=UTC)).timestamp()


class FakeFal:
    """fal's answers, in-process. ``requests``: what the listing holds; ``results``: results fal
    still keeps, by request id; ``billed``: (endpoint, ended_at, cost) for the usage API."""

    def __init__(self):
        self.requests: list[dict] = []
        self.results: dict[str, dict] = {}
        self.billed: list[tuple[str, float, float]] = []
        self.prices = {FLASH: 0.05, STANDARD: 0.1}
        self.page_size = 100  # fal may answer fewer than ``limit``
        self.faults: list[tuple[int, dict]] = []  # answered first, whatever was asked
        self.unreachable: set[str] = set()  # hosts no connection reaches
        self.listing_calls: list[httpx.QueryParams] = []
        self.pricing_body: dict | None = None  # an answer of fal's own, when set

    def add(self, request_id, endpoint=FLASH, sent_at=SENT, status=200, stored=True, **fields):
        self.requests.append(
            {
                "request_id": request_id,
                "endpoint_id": endpoint,
                "sent_at": sent_at,
                "ended_at": sent_at + 60,
                "status_code": status,
                "json_input": {**FIELDS, "image_url": "https://v3.fal.media/x.png", **fields}
                if stored
                else None,
            }
        )

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.host in self.unreachable:
            raise httpx.ConnectError("connection refused", request=request)
        if self.faults:
            status, body = self.faults.pop(0)
            return httpx.Response(status, json=body)
        url, q = str(request.url.copy_with(query=None)), request.url.params
        if url == OPENAPI:
            return self.openapi(q.get("endpoint_id", ""))
        if request.headers.get("authorization") != "Key secret-key":
            return httpx.Response(401, json={"detail": "No credentials"})
        if url == f"{API}/models/requests/by-endpoint":
            return self.listing(q)
        if url == f"{API}/models/pricing":
            return self.pricing(q)
        if url == f"{API}/models/usage":
            return self.usage(q)
        if url.startswith(f"{QUEUE}/wan/v2.6/requests/"):
            result = self.results.get(url.rsplit("/", 1)[1])
            return httpx.Response(200, json=result) if result else httpx.Response(404)
        return httpx.Response(404, json={"detail": "Not Found"})

    def listing(self, q: httpx.QueryParams) -> httpx.Response:
        self.listing_calls.append(q)
        assert len(self.listing_calls) < 20, "the same listing was paged through again and again"
        limit = int(q.get("limit", 50))
        if not 1 <= limit <= 100:
            return httpx.Response(422, json={"detail": "limit must be between 1 and 100"})
        offset = int(q.get("cursor") or 0)
        start = moment(q["start"]) if q.get("start") else None
        endpoints, ids = set(q.get_list("endpoint_id")), set(q.get_list("request_id"))
        rows = sorted(
            (
                r
                for r in self.requests
                if (not endpoints or r["endpoint_id"] in endpoints)
                and (not ids or r["request_id"] in ids)
                and (start is None or r["ended_at"] >= start)
            ),
            key=lambda r: -r["ended_at"],
        )
        payloads = "payloads" in q.get_list("expand")
        page = rows[offset : offset + min(limit, self.page_size)]
        more = offset + len(page) < len(rows)
        items = [
            {
                **{k: v for k, v in r.items() if k != "json_input"},
                "sent_at": stamp(r["sent_at"]),
                "ended_at": stamp(r["ended_at"]),
                **({"json_input": r["json_input"]} if payloads else {}),
            }
            for r in page
        ]
        cursor = str(offset + len(page)) if more else None
        return httpx.Response(200, json={"items": items, "next_cursor": cursor, "has_more": more})

    def pricing(self, q: httpx.QueryParams) -> httpx.Response:
        if self.pricing_body is not None:
            return httpx.Response(200, json=self.pricing_body)
        wanted = q.get_list("endpoint_id") or list(self.prices)
        prices = [
            {"endpoint_id": e, "unit_price": self.prices[e], "unit": "units", "currency": "USD"}
            for e in wanted
            if e in self.prices
        ]
        return httpx.Response(200, json={"prices": prices, "next_cursor": None, "has_more": False})

    def usage(self, q: httpx.QueryParams) -> httpx.Response:
        start = moment(q["start"]) if q.get("start") else -math.inf
        end = moment(q["end"]) if q.get("end") else math.inf
        endpoints = set(q.get_list("endpoint_id"))
        summary: dict[str, dict] = {}
        for endpoint, ended_at, cost in self.billed:
            if start <= ended_at < end and (not endpoints or endpoint in endpoints):
                row = summary.setdefault(endpoint, {"endpoint_id": endpoint, "cost_total": 0.0})
                row["cost_total"] += cost
        body: dict = {"next_cursor": None, "has_more": False}
        if "summary" in q.get_list("expand"):  # fal's default is the hourly time series only
            body["summary"] = list(summary.values())
        else:
            body["time_series"] = []
        return httpx.Response(200, json=body)

    def openapi(self, endpoint: str) -> httpx.Response:
        if endpoint not in self.prices:
            return httpx.Response(404, json={"detail": f"Endpoint '{endpoint}' not found"})
        return httpx.Response(
            200, json={"openapi": "3.0.4", "info": {"x-fal-metadata": {"endpointId": endpoint}}}
        )


@pytest.fixture
def fake():
    return FakeFal()


@pytest.fixture
def queue(fake, monkeypatch):
    q = FalQueue(FalConfig(QUEUE, API, "secret-key", OPENAPI), attempts=3, backoff=0.0)
    headers = dict(q.http.headers)
    q.http.close()
    q.http = httpx.Client(transport=httpx.MockTransport(fake), headers=headers)
    monkeypatch.setattr(q, "sleep", lambda s: None)  # retries never wait here
    yield q
    q.close()


def lookup(queue, fields=FIELDS, settle=SETTLE):
    return queue.find_submitted(FLASH, fields, SENT, settle)


# ------------------------------------------------------------------ the request listing


def test_a_lost_submit_is_found_on_a_later_page_of_the_listing(fake, queue):
    fake.page_size = 2
    fake.add("ours")
    for n in range(5):  # other jobs' requests, ended later: listed before ours
        fake.add(f"other{n}", sent_at=SENT + 1 + n, seed=100 + n)
    found = lookup(queue)
    assert found.handle.request_id == "ours" and found.why == "found"
    assert len(fake.listing_calls) == 3  # every page, then no more


def test_a_request_of_another_endpoint_with_the_same_fields_is_never_taken_for_ours(fake, queue):
    # a sweep sends the same row to both endpoints: only our endpoint's listing can hold ours
    fake.add("standard-twin", endpoint=STANDARD)
    found = lookup(queue)
    assert found.handle is None and found.absent


def test_the_listing_is_asked_for_payloads_so_another_prompt_is_not_taken_for_ours(fake, queue):
    # both results echo seed 7: only the stored inputs tell the prompts apart
    fake.add("ours")
    fake.add("same-seed-other-prompt", sent_at=SENT + 2, prompt="a mountain")
    fake.results.update({"ours": {"seed": 7}, "same-seed-other-prompt": {"seed": 7}})
    found = lookup(queue)
    assert found.handle.request_id == "ours" and found.why == "found"


def test_an_endpoints_long_history_is_not_paged_through(fake, queue):
    # fal lists from the start of the window on: a week of earlier requests costs nothing
    for n in range(250):
        fake.add(f"old{n}", sent_at=SENT - 7 * 86400 + n)
    fake.add("ours")
    assert lookup(queue).handle.request_id == "ours"
    assert len(fake.listing_calls) == 1


@pytest.fixture
def far_east_clock():
    before = os.environ.get("TZ")
    os.environ["TZ"] = "JST-9"
    time.tzset()
    yield
    if before is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = before
    time.tzset()


def test_the_listing_window_is_right_whatever_this_machines_time_zone(fake, queue, far_east_clock):
    # a window sent in local time would start nine hours late and miss ours: paid twice
    fake.add("ours")
    found = lookup(queue)
    assert found.handle.request_id == "ours" and not found.absent


def test_a_request_listed_without_its_payload_is_recognised_by_the_seed_its_result_echoes(
    fake, queue
):
    fake.add("ours", stored=False)
    fake.add("other-seed", sent_at=SENT + 1, stored=False, seed=8)
    fake.results.update({"ours": {"seed": 7, "video": {}}, "other-seed": {"seed": 8}})
    found = lookup(queue)
    assert found.handle.request_id == "ours" and found.why == "found"
    assert found.handle.response_url == f"{QUEUE}/wan/v2.6/requests/ours"


def test_a_payload_less_request_whose_result_is_gone_proves_nothing(fake, queue):
    fake.add("maybe-ours", stored=False)  # fal keeps a result for an hour: this one is gone
    found = lookup(queue)
    assert found.handle is None and not found.absent
    assert found.why == "1 listed requests have no stored payload"


# ------------------------------------------------------------------------------ confirm


def test_a_request_a_webhook_named_is_confirmed_only_when_fal_lists_our_fields(fake, queue):
    fake.add("ours")
    fake.add("not-ours", sent_at=SENT + 5, prompt="a mountain")  # listed before ours
    handle = queue.confirm(FLASH, "ours", FIELDS)
    assert handle.request_id == "ours"
    assert handle.status_url == f"{QUEUE}/wan/v2.6/requests/ours/status"
    assert queue.confirm(FLASH, "not-ours", FIELDS) is None


def test_a_named_request_not_listed_yet_is_confirmed_by_its_results_seed_or_not_at_all(fake, queue):
    fake.results.update({"echoes-ours": {"seed": 7}, "echoes-another": {"seed": 8}})
    assert queue.confirm(FLASH, "echoes-ours", FIELDS).request_id == "echoes-ours"
    assert queue.confirm(FLASH, "echoes-another", FIELDS) is None
    assert queue.confirm(FLASH, "no-result", FIELDS) is None  # cannot tell is no confirmation


# ----------------------------------------------------------------------- pricing, usage


def test_prices_are_fals_own_for_the_endpoints_asked(queue):
    assert queue.prices([FLASH]) == {
        FLASH: {"endpoint_id": FLASH, "unit_price": 0.05, "unit": "units", "currency": "USD"}
    }


@pytest.mark.parametrize("body", [{"prices": []}, {"next_cursor": None}], ids=["empty", "none"])
def test_an_answer_that_prices_nothing_prices_no_endpoint(fake, queue, body):
    fake.pricing_body = body
    assert queue.prices([FLASH]) == {}


def test_billed_usage_is_fals_summary_for_the_endpoints_asked_over_the_window(fake, queue):
    start, end = SENT, SENT + 3600
    fake.billed += [
        (FLASH, start + 10, 0.5),
        (FLASH, start + 100, 0.25),
        (FLASH, start - 100, 1.0),  # before the window
        (FLASH, end, 2.0),  # at its end: outside
        (STANDARD, start + 10, 4.0),  # another endpoint
    ]
    assert queue.usage([FLASH], start, end) == [{"endpoint_id": FLASH, "cost_total": 0.75}]


def test_an_endpoints_openapi_document_is_fals_own_and_an_unknown_one_is_refused(queue):
    assert queue.openapi(FLASH)["info"]["x-fal-metadata"]["endpointId"] == FLASH
    with pytest.raises(FalError) as refused:
        queue.openapi("wan/v9/unknown")
    assert refused.value.kind is FailureKind.REJECTED and refused.value.status_code == 404
    assert (
        "OpenAPI document of wan/v9/unknown answered 404: Endpoint 'wan/v9/unknown' not found"
        in str(refused.value)
    )


# ------------------------------------------------------------------------------ failures

CALLS = {
    "request listing": lambda q: lookup(q),
    "pricing API": lambda q: q.prices([FLASH]),
    "usage API": lambda q: q.usage([FLASH], SENT, SENT + 3600),
}


@pytest.mark.parametrize("name", list(CALLS))
def test_a_refused_call_is_a_rejection_naming_the_call_and_fals_reason(fake, queue, name):
    # a key fal refuses is no outage: the caller tells the user to fix the key (by its code)
    fake.faults.append((401, {"detail": "Invalid key"}))
    with pytest.raises(FalError) as refused:
        CALLS[name](queue)
    assert not isinstance(refused.value, FalUnavailable)
    assert refused.value.kind is FailureKind.REJECTED and refused.value.status_code == 401
    assert f"{name} answered 401: Invalid key" in str(refused.value)


def test_a_call_fal_keeps_answering_503_to_is_unavailable_with_its_code(fake, queue):
    fake.faults += [(503, {"detail": "busy"})] * queue.attempts
    with pytest.raises(FalUnavailable) as busy:
        queue.prices([FLASH])
    assert busy.value.status_code == 503  # an answer came: fal is reachable, only busy
    assert "pricing API failed (503): busy" in str(busy.value)


@pytest.mark.parametrize(
    "name, host, call",
    [
        ("request listing", "api.test", lambda q: lookup(q)),
        ("pricing API", "api.test", lambda q: q.prices([FLASH])),
        ("usage API", "api.test", lambda q: q.usage([FLASH], SENT, SENT + 3600)),
        ("OpenAPI document", "docs.test", lambda q: q.openapi(FLASH)),
        ("result", "queue.test", lambda q: q.confirm(FLASH, "named", FIELDS)),
    ],
)
def test_fal_out_of_reach_is_unavailable_and_says_which_call(fake, queue, name, host, call):
    fake.unreachable.add(host)
    with pytest.raises(FalUnavailable) as unreachable:
        call(queue)
    assert unreachable.value.status_code is None  # no answer at all: no route to fal
    assert str(unreachable.value).startswith(f"{name}: ConnectError")


def test_a_request_with_our_fields_outranks_others_that_only_echo_our_seed(fake, queue):
    # payload storage was off for an earlier run's requests of the same seed: their results
    # echo it, but only the one whose stored input has our fields is this submit
    fake.add("ours")
    fake.add("stranger", sent_at=SENT + 1, stored=False, prompt="another job's")
    fake.results.update({"stranger": {"seed": 7, "video": {}}})
    found = lookup(queue)
    assert found.handle.request_id == "ours" and found.why == "found"


def test_two_requests_that_only_echo_our_seed_prove_nothing(fake, queue):
    fake.add("one", stored=False)
    fake.add("two", sent_at=SENT + 1, stored=False)
    fake.results.update({"one": {"seed": 7}, "two": {"seed": 7}})
    found = lookup(queue)
    assert found.handle is None and not found.absent and "2 listed" in found.why
