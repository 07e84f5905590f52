"""Fault injection for the local server: which faults fire, and the broken answers they give."""

from __future__ import annotations

import json
from typing import Any

from starlette.responses import JSONResponse, Response


class Dropped(Exception):
    """Raised after a partial answer so the server closes the connection mid-response."""


def ingress_error(code: int) -> Response:
    """An nginx-style error page, as fal's ingress answers when the app is unreachable."""
    html = f"<html><head><title>{code}</title></head><body><center><h1>{code}</h1></center><hr><center>nginx</center></body></html>"
    return Response(html, status_code=code, media_type="text/html")


def fal_error(code: int, detail: str, error_type: str, rid: str | None = None) -> JSONResponse:
    """An error answered by fal's app (JSON, ``X-Fal-Error-Type``)."""
    headers = {"X-Fal-Error-Type": error_type}
    if rid:
        headers["x-fal-request-id"] = rid
    return JSONResponse({"detail": detail, "error_type": error_type}, code, headers=headers)


class DroppedResponse(Response):
    """Sends the answer's headers and half its body, then breaks the connection."""

    def __init__(self, answer: dict[str, Any]):
        super().__init__()
        self.answer = json.dumps(answer).encode()

    async def __call__(self, scope, receive, send) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(self.answer)).encode()),
                ],
            }
        )
        await send(
            {
                "type": "http.response.body",
                "body": self.answer[: len(self.answer) // 2],
                "more_body": True,
            }
        )
        raise Dropped("connection dropped after accept (fault injection)")
