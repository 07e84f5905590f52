"""Plain data of fal's queue protocol: where a request lives, and how a job waits for it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


@dataclass(frozen=True)
class Handle:
    """Where fal keeps one request: its id and the three URLs fal answered with."""

    request_id: str
    response_url: str
    status_url: str
    cancel_url: str


@dataclass(frozen=True)
class FalResult:
    """A completed request's output, with what fal's answer said beside it: the billing units
    it charged (``X-Fal-Billable-Units``, a decimal string as sent; None when fal sent none) and
    the endpoint that served it when fal says another one did (a model fallback)."""

    output: dict[str, Any]
    billable_units: str | None = None
    served_by: str | None = None


class PollSpec(BaseModel):
    """How a job learns that fal finished it (seconds).

    By default (``stream``) it follows fal's status stream and sees the completion at once;
    a stream silent for ``stream_idle`` s is reconnected after a status check. Where the
    server offers no stream, or with ``stream: false``, it polls: first after ``first`` s,
    each wait ``factor`` times longer, up to ``max``. With fal webhooks
    (WANSWEEP_WEBHOOK_URL), status is checked when the webhook comes, else every
    ``webhook_fallback`` seconds in case it was lost."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    stream: bool = True
    stream_idle: float = Field(30.0, ge=1, le=600)
    first: float = Field(2.0, gt=0, le=600)
    factor: float = Field(1.5, ge=1, le=4)
    max: float = Field(15.0, gt=0, le=600)
    webhook_fallback: float = Field(60.0, gt=0, le=3600)
