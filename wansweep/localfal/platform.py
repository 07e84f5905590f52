"""The local server's Platform API: the request listing, pricing and billed usage.

The listing behaves as fal documents it, pessimistically (the default): only finished requests,
sorted by end time, filtered by ``endpoint_id``, ``status``, ``request_id`` and a ``start``/
``end`` window on the end time, ``limit`` at most 100 with cursor paging; a request appears only
``listing_lag`` seconds after it ended; its payload may be missing (``listing_payloads``) and a
data-URI input comes back as the storage URL fal moved it to. ``--listing cooperative`` lists
queued and running requests at once with their payloads, for rehearsals that want that.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from wansweep.localfal.queue import FalRequest, iso
from wansweep.plan.endpoints import profile, registry

STATUS_FILTERS = {
    "success": range(200, 300),
    "error": range(500, 600),
    "user_error": range(400, 500),
}


class PlatformRoutes:
    """Part of :class:`~wansweep.localfal.server.LocalFal`: ``/v1/models/...``."""

    async def list_requests(self, request: Request) -> Response:
        """``GET /v1/models/requests/by-endpoint``."""
        if not self._authorized(request):
            return self._unauthorized()
        q = request.query_params
        try:
            limit = int(q.get("limit", 50))
            offset = int(base64.urlsafe_b64decode(q["cursor"]).decode()) if q.get("cursor") else 0
            start, end = _parse_time(q.get("start")), _parse_time(q.get("end"))
        except ValueError:
            return JSONResponse({"detail": "invalid limit, cursor, start or end"}, 422)
        if not 1 <= limit <= 100:
            return JSONResponse({"detail": "limit must be between 1 and 100"}, 422)
        status = q.get("status")
        if status is not None and status not in STATUS_FILTERS:
            return JSONResponse({"detail": f"status must be one of {sorted(STATUS_FILTERS)}"}, 422)
        endpoints = set(q.getlist("endpoint_id"))
        ids = set(q.getlist("request_id"))
        cooperative = self.config.listing == "cooperative"
        now = self.now()
        if cooperative:
            rows = [j for j in self.jobs.values() if _window(j.sent_at, start, end)]
            rows.sort(key=lambda j: j.sent_at, reverse=True)
        else:
            lag = self.config.faults.listing_lag
            rows = [
                j
                for j in self.jobs.values()
                if j.ended_at is not None
                and now >= j.ended_at + lag
                and _window(j.ended_at, start, end)
                and (status is None or (j.status_code or 0) in STATUS_FILTERS[status])
            ]
            rows.sort(key=lambda j: j.ended_at, reverse=True)
        rows = [
            j
            for j in rows
            if (not endpoints or j.endpoint in endpoints) and (not ids or j.request_id in ids)
        ]
        expand = "payloads" in q.getlist("expand")  # the exact value, as fal reads it
        page = [self._listed(j, expand, cooperative) for j in rows[offset : offset + limit]]
        more = offset + limit < len(rows)
        cursor = base64.urlsafe_b64encode(str(offset + limit).encode()).decode() if more else None
        return JSONResponse({"items": page, "next_cursor": cursor, "has_more": more})

    def _listed(self, j: FalRequest, expand: bool, cooperative: bool) -> dict[str, Any]:
        item = {
            "request_id": j.request_id,
            "endpoint_id": j.endpoint,
            "sent_at": iso(j.sent_at),
            "started_at": iso(j.started_at),
            "ended_at": iso(j.ended_at),
            "status_code": j.status_code,
            "duration": round(j.ended_at - j.started_at, 3)
            if j.ended_at and j.started_at
            else None,
        }
        if expand:
            stored = cooperative or j.payload_stored
            item["json_input"] = (
                (j.payload if cooperative else _as_stored(j.payload)) if stored else None
            )
            item["json_output"] = (j.output if not j.error else j.error["body"]) if stored else None
        return item

    async def openapi(self, request: Request) -> Response:
        """An endpoint's OpenAPI document, as fal publishes it (public: no key), made from the
        same profile the server validates requests with."""
        from wansweep.plan.openapi import document_of

        endpoint = request.query_params.get("endpoint_id", "")
        if endpoint not in registry().ids:
            return JSONResponse({"detail": f"Endpoint '{endpoint}' not found"}, 404)
        return JSONResponse(document_of(profile(endpoint)))

    async def pricing(self, request: Request) -> Response:
        if not self._authorized(request):
            return self._unauthorized()
        known = registry().ids
        wanted = request.query_params.getlist("endpoint_id") or known
        prices = [
            {"endpoint_id": e, "unit_price": self.unit_price(e), "unit": "units", "currency": "USD"}
            for e in wanted
            if e in known
        ]
        return JSONResponse({"prices": prices, "next_cursor": None, "has_more": False})

    async def usage(self, request: Request) -> Response:
        """``GET /v1/models/usage``: what was billed, per endpoint (``expand=summary``) and per
        hour (``time_series``), from what this server did: a produced video, a 422 after GPU
        time (a flagged input) and a cancelled-while-running request that finished."""
        if not self._authorized(request):
            return self._unauthorized()
        q = request.query_params
        try:
            start, end = _parse_time(q.get("start")), _parse_time(q.get("end"))
        except ValueError:
            return JSONResponse({"detail": "invalid start or end"}, 422)
        endpoints = set(q.getlist("endpoint_id"))
        expand = set(q.getlist("expand")) or {"time_series"}
        buckets: dict[tuple[str, str], dict[str, Any]] = {}
        summary: dict[str, dict[str, Any]] = {}
        for j in self.jobs.values():
            if j.billed_units is None or not _window(j.ended_at, start, end):
                continue
            billed_as = j.served_by or j.endpoint
            if endpoints and billed_as not in endpoints:
                continue
            price = j.unit_price
            hour = iso(j.ended_at - j.ended_at % 3600)
            for row in (
                buckets.setdefault((hour, billed_as), _usage_row(billed_as, price)),
                summary.setdefault(billed_as, _usage_row(billed_as, price)),
            ):
                row["quantity"] = round(row["quantity"] + j.billed_units, 8)
                row["cost"] = round(row["cost"] + j.billed_units * price, 6)
                row["cost_total"] = row["cost"]
        body: dict[str, Any] = {"next_cursor": None, "has_more": False}
        if "time_series" in expand:
            series: dict[str, list] = {}
            for (hour, _), row in sorted(buckets.items()):
                series.setdefault(hour, []).append(row)
            body["time_series"] = [{"bucket": h, "results": r} for h, r in series.items()]
        if "summary" in expand:
            body["summary"] = list(summary.values())
        return JSONResponse(body)


def _usage_row(endpoint: str, price: float) -> dict[str, Any]:
    return {
        "endpoint_id": endpoint,
        "unit": "units",
        "quantity": 0.0,
        "unit_price": price,
        "cost": 0.0,
        "cost_total": 0.0,
        "currency": "USD",
    }


def _as_stored(payload: dict[str, Any]) -> dict[str, Any]:
    """The input as fal keeps it: data URIs were uploaded to fal's storage and replaced by a URL."""
    out = {}
    for key, value in payload.items():
        if isinstance(value, str) and value.startswith("data:"):
            digest = hashlib.sha256(value.encode()).hexdigest()[:32]
            value = f"https://v3.fal.media/files/local/{digest}"
        out[key] = value
    return out


def _window(ts: float | None, start: float | None, end: float | None) -> bool:
    return ts is not None and (start is None or ts >= start) and (end is None or ts < end)


def _parse_time(text: str | None) -> float | None:
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        from datetime import datetime

        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
