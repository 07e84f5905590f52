"""The local server's Platform API: the request listing and pricing."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from wansweep import schema
from wansweep.localfal.queue import iso


class PlatformRoutes:
    """Part of :class:`~wansweep.localfal.server.LocalFal`: ``/v1/models/...``."""

    async def list_requests(self, request: Request) -> Response:
        """``GET /v1/models/requests/by-endpoint``: recent requests, newest first."""
        if not self._authorized(request):
            return self._unauthorized()
        q = request.query_params
        endpoint = q.get("endpoint_id")
        start = _parse_time(q.get("start"))
        end = _parse_time(q.get("end"))
        limit = min(int(q.get("limit", 50)), 1000)
        offset = int(q.get("cursor") or 0)
        expand = "payloads" in q.get("expand", "")
        rows = [
            j
            for j in self.jobs.values()
            if (endpoint is None or j.endpoint == endpoint)
            and (start is None or j.sent_at >= start)
            and (end is None or j.sent_at <= end)
        ]
        rows.sort(key=lambda j: j.sent_at, reverse=True)
        page = rows[offset : offset + limit]
        items = []
        for j in page:
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
                item["json_input"] = j.payload
                item["json_output"] = j.output if not j.error else j.error["body"]
            items.append(item)
        more = offset + limit < len(rows)
        return JSONResponse(
            {"items": items, "next_cursor": str(offset + limit) if more else None, "has_more": more}
        )

    async def pricing(self, request: Request) -> Response:
        if not self._authorized(request):
            return self._unauthorized()
        from wansweep.pricing import PriceTable

        table = PriceTable.load()
        wanted = request.query_params.getlist("endpoint_id") or list(schema.ENDPOINTS)
        prices = [
            {
                "endpoint_id": e,
                "unit_price": table.unit_price(e, "720p"),
                "unit": "second",
                "currency": "USD",
            }
            for e in wanted
            if e in schema.ENDPOINTS
        ]
        return JSONResponse({"prices": prices})


def _parse_time(text: str | None) -> float | None:
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        from datetime import datetime

        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
