"""fal's Platform API (``https://api.fal.ai/v1``): the request listing and pricing."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx

from wansweep.errors import FailureKind, FalError, FalUnavailable
from wansweep.fal import policy
from wansweep.fal.connection import detail
from wansweep.fal.types import Handle

# Seconds between our submit (on fal's clock, learnt from its Date headers to the second) and
# fal's receipt that still count as one request. Wide enough for a slow network, narrow so
# that an identical request sent at another time is not taken for ours.
MATCH_WINDOW = 30.0


@dataclass(frozen=True)
class Lookup:
    """What fal's records say of a submit whose answer was lost."""

    handle: Handle | None  # the request, found
    absent: bool  # proven never accepted
    why: str


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def _parse_time(text: Any) -> float | None:
    if not isinstance(text, str):
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


class PlatformMixin:
    """Part of :class:`wansweep.fal.queue.FalQueue` (needs ``send``, ``sleep``, ``handle_for``)."""

    def api_get(self, path: str, params: Any, what: str) -> httpx.Response:
        """GET on fal's Platform API, retried per policy; a 200 answer or :class:`FalError`."""
        response = self.send(
            what, lambda: self.http.get(f"{self.config.api_base}{path}", params=params)
        )
        code = response.status_code
        if policy.retry_idempotent(code):
            raise FalUnavailable(f"{what} failed ({code}): {detail(response)}", code)
        if code != 200:
            raise FalError(
                f"{what} answered {code}: {detail(response)}", FailureKind.REJECTED, code
            )
        return response

    def find_submitted(
        self,
        endpoint: str,
        fields: dict[str, Any],
        submitted_at: float,
        settle_after: float,
        window: float | None = None,
        earlier: tuple[str, ...] = (),
    ) -> Lookup:
        """Look for a submit whose answer was lost in fal's request listing.

        fal documents the listing for finished requests only, and it may lag by hours, so "not
        there" proves nothing until a request submitted then would surely have finished and
        been listed (``settle_after`` seconds, on fal's clock). A listed request matches when
        it was received within a few minutes of ``submitted_at`` and its stored input has our
        fields (media URLs are not compared: fal stores data URIs elsewhere, presigned URLs
        differ per submit). A request listed without its payload could be ours: then nothing
        is proven either. ``window``: how long before ``submitted_at`` the submit may have been
        sent (a damaged ledger entry knows only when it was last written). ``earlier``: the
        job's earlier attempts' requests, never this submit (same fields, minutes before)."""
        sent = self.fal_time(submitted_at)
        earliest = sent - (window or MATCH_WINDOW)
        matches, echoes, failed, unknown = [], [], [], 0
        for item in self._listing(endpoint, earliest):
            item_sent = _parse_time(item.get("sent_at"))
            if item_sent is not None and not earliest <= item_sent <= sent + MATCH_WINDOW:
                continue
            if item.get("request_id") in earlier:
                continue
            unbilled = (item.get("status_code") or 0) >= 500  # failed at fal: never billed
            verdict = self._is_ours(endpoint, item, fields)
            if verdict is None:
                unknown += 0 if unbilled else 1  # whoever's it was, it cost nothing
            elif verdict and unbilled:
                failed.append(item)
            elif verdict:
                # our fields in its stored input, or (no payload) only our seed in its result
                (matches if isinstance(item.get("json_input"), dict) else echoes).append(item)
        # A seed is shared by every request that asked for it (another job, run or user): a
        # request whose stored input has our fields outranks any that only echo our seed.
        matches = matches or echoes
        if len(matches) == 1:
            return Lookup(self.handle_for(endpoint, matches[0]["request_id"]), False, "found")
        if matches:
            return Lookup(None, False, f"{len(matches)} listed requests match it")
        if failed:  # taken and failed (unbilled): adopting it lets the job try again at once
            return Lookup(
                self.handle_for(endpoint, failed[0]["request_id"]), False, "found, failed"
            )
        waited = self.fal_time(time.time()) - sent
        if settle_after == math.inf:
            return Lookup(
                None, False, "not listed, and no start deadline is on record: never provably absent"
            )
        if waited < settle_after:
            return Lookup(
                None, False, f"not listed yet ({waited:.0f} s of {settle_after:.0f} s to settle)"
            )
        if unknown:
            return Lookup(None, False, f"{unknown} listed requests have no stored payload")
        return Lookup(None, True, f"not listed {waited:.0f} s after the submit: fal never took it")

    def confirm(self, endpoint: str, request_id: str, fields: dict[str, Any]) -> Handle | None:
        """A request named for this job by something other than fal's own answer (a webhook
        marker): its handle only when fal's records show it carries our fields. "Cannot tell"
        (not listed yet, no payload, no result) is not a confirmation: the listing decides."""
        item = {"request_id": request_id}
        for listed in self._listed_requests(endpoint, {"request_id": request_id}):
            item = listed
        if self._is_ours(endpoint, item, fields) is not True:
            return None
        return self.handle_for(endpoint, request_id)

    def _is_ours(self, endpoint: str, item: dict[str, Any], fields: dict[str, Any]) -> bool | None:
        """Does a listed request carry our fields? None when it cannot be told. Without a
        stored payload, its result (kept by fal for an hour) still echoes the seed."""
        stored = item.get("json_input")
        if isinstance(stored, dict):
            return all(stored.get(k) == v for k, v in fields.items())
        if fields.get("seed") is None or not item.get("request_id"):
            return None
        handle = self.handle_for(endpoint, item["request_id"])
        response = self.send("result", lambda: self.http.get(handle.response_url))
        if response.status_code != 200:
            return None
        try:
            return response.json().get("seed") == fields["seed"]
        except (ValueError, AttributeError):
            return None

    def _listing(self, endpoint: str, since: float):
        """Every listed request of ``endpoint`` that ended after ``since`` (fal's clock)."""
        return self._listed_requests(endpoint, {"start": _iso(since)})

    def _listed_requests(self, endpoint: str, filters: dict[str, Any]):
        cursor: str | None = None
        while True:
            params = {"endpoint_id": endpoint, "limit": 100, "expand": "payloads", **filters}
            if cursor:
                params["cursor"] = cursor
            page = self.api_get("/models/requests/by-endpoint", params, "request listing").json()
            yield from page.get("items") or []
            cursor = page.get("next_cursor")
            if not page.get("has_more") or not cursor:
                return

    def usage(self, endpoints: list[str], start: float, end: float) -> list[dict[str, Any]]:
        """Billed usage per endpoint over [start, end) (fal's clock): fal's usage API, which
        needs a key allowed to read billing (fal: an Admin key)."""
        params: list[tuple[str, Any]] = [("endpoint_id", e) for e in endpoints]
        params += [("start", _iso(start)), ("end", _iso(end)), ("expand", "summary")]
        return self.api_get("/models/usage", params, "usage API").json().get("summary") or []

    def openapi(self, endpoint: str) -> dict[str, Any]:
        """fal's OpenAPI document of one endpoint (its input and output schemas)."""
        response = self.send(
            "OpenAPI document",
            lambda: self.http.get(self.config.openapi_url, params={"endpoint_id": endpoint}),
        )
        if response.status_code != 200:
            raise FalError(
                f"OpenAPI document of {endpoint} answered {response.status_code}: "
                f"{detail(response)}",
                FailureKind.REJECTED,
                response.status_code,
            )
        return response.json()

    def prices(self, endpoints: list[str]) -> dict[str, dict[str, Any]]:
        """fal's Platform API pricing: {endpoint: {unit_price, unit, currency}}."""
        params = [("endpoint_id", e) for e in endpoints]
        response = self.api_get("/models/pricing", params, "pricing API")
        return {p["endpoint_id"]: p for p in response.json().get("prices", [])}
