"""fal's Platform API (``https://api.fal.ai/v1``): the request listing and pricing."""

from __future__ import annotations

import hashlib
import json
import time
from datetime import UTC, datetime
from typing import Any

import httpx

from wansweep.errors import FailureKind, FalError, FalUnavailable
from wansweep.fal import policy
from wansweep.fal.connection import detail
from wansweep.lifecycle import Handle


def body_digest(body: dict[str, Any]) -> str:
    """Digest of a request body; matches a listed request's json_input to our submit."""
    return hashlib.sha256(
        json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()


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
        self, endpoint: str, digest: str, since: float, grace: float = 20.0
    ) -> Handle | None:
        """Look for our request in fal's request listing, by input digest.

        The listing may lag behind the queue: "not there" is believed only once the submit is
        ``grace`` seconds old (we wait out the rest, then look again)."""
        found = self._find_in_listing(endpoint, digest, since)
        if found is None and (left := since + grace - time.time()) > 0:
            self.sleep(left)
            found = self._find_in_listing(endpoint, digest, since)
        return found

    def _find_in_listing(self, endpoint: str, digest: str, since: float) -> Handle | None:
        start = datetime.fromtimestamp(since - 120, UTC).isoformat().replace("+00:00", "Z")
        cursor: str | None = None
        while True:
            params = {"endpoint_id": endpoint, "start": start, "limit": 100, "expand": "payloads"}
            if cursor:
                params["cursor"] = cursor
            page = self.api_get("/models/requests/by-endpoint", params, "request listing").json()
            for item in page.get("items", []):
                if item.get("json_input") is not None and body_digest(item["json_input"]) == digest:
                    return self.handle_for(endpoint, item["request_id"])
            cursor = page.get("next_cursor")
            if not page.get("has_more") or not cursor:
                return None

    def prices(self, endpoints: list[str]) -> dict[str, dict[str, Any]]:
        """fal's Platform API pricing: {endpoint: {unit_price, unit, currency}}."""
        params = [("endpoint_id", e) for e in endpoints]
        response = self.api_get("/models/pricing", params, "pricing API")
        return {p["endpoint_id"]: p for p in response.json().get("prices", [])}
