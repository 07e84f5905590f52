"""The parts of an endpoint profile (:mod:`wansweep.plan.endpoints`): a field of fal's input
schema, how seconds are spelled, and the price."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from wansweep.plan.schema import Problem

STRICT = ConfigDict(extra="forbid", allow_inf_nan=False)


class FieldSpec(BaseModel):
    """One input field as fal publishes it."""

    model_config = STRICT
    type: Literal["string", "integer", "number", "boolean"]
    required: bool = False
    default: Any = None
    enum: list[Any] | None = None
    minimum: float | None = None
    maximum: float | None = None
    max_length: int | None = None
    advised_length: int | None = None  # past it: a warning, not a refusal

    @property
    def has_default(self) -> bool:
        return "default" in self.model_fields_set

    def problems(self, name: str, value: Any) -> list[Problem]:
        """What fal would refuse in ``value`` (its 422 detail), and what it advises against."""
        kinds = {"string": str, "integer": int, "number": (int, float), "boolean": bool}
        a_bool_for_a_number = isinstance(value, bool) and self.type != "boolean"
        if a_bool_for_a_number or not isinstance(value, kinds[self.type]):
            return [Problem(name, f"{self.type}_type", f"Input should be a valid {self.type}")]
        if self.enum is not None and value not in self.enum:
            opts = ", ".join(repr(v) for v in self.enum)
            return [Problem(name, "enum", f"Input should be {opts} (got {value!r})")]
        out = []
        if self.minimum is not None and value < self.minimum:
            out.append(
                Problem(name, "greater_than_equal", f"Input should be >= {_num(self.minimum)}")
            )
        if self.maximum is not None and value > self.maximum:
            out.append(Problem(name, "less_than_equal", f"Input should be <= {_num(self.maximum)}"))
        if self.max_length is not None and isinstance(value, str) and len(value) > self.max_length:
            out.append(
                Problem(
                    name,
                    "string_too_long",
                    f"String should have at most {self.max_length} characters (got {len(value)})",
                )
            )
        elif self.advised_length and isinstance(value, str) and len(value) > self.advised_length:
            out.append(
                Problem(
                    name,
                    "string_long",
                    f"{len(value)} characters; fal advises at most {self.advised_length}",
                    "warning",
                )
            )
        return out

    def allowed(self) -> str:
        """The values it takes, as a user reads them."""
        if self.enum is not None:
            return ", ".join(str(v) for v in self.enum)
        if self.type == "boolean":
            return "true, false"
        bounds = [f">= {_num(self.minimum)}" if self.minimum is not None else ""]
        bounds.append(f"<= {_num(self.maximum)}" if self.maximum is not None else "")
        return f"{self.type} " + " and ".join(b for b in bounds if b) if any(bounds) else self.type


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


class DurationMap(BaseModel):
    """Seconds (wansweep's duration) as the endpoint spells them, or a fixed length."""

    model_config = STRICT
    field: str | None = None
    as_: Literal["string", "seconds", "integer"] = Field("string", alias="as")
    fixed: float | None = Field(None, gt=0)  # Wan 2.1: 81 frames at 16 fps, 5.0625 s

    @model_validator(mode="after")
    def _one(self) -> DurationMap:
        if (self.field is None) == (self.fixed is None):
            raise ValueError("duration: give field (with as) or fixed seconds")
        return self

    def encode(self, seconds: int) -> Any:
        return {"string": str(seconds), "seconds": f"{seconds}s", "integer": seconds}[self.as_]


class Rate(BaseModel):
    model_config = STRICT
    when: dict[str, Any] = {}
    usd: float = Field(ge=0)


class Pricing(BaseModel):
    """USD of one request: ``base.usd`` for the first ``base.seconds``, then the first matching
    rate per unit (a second of video, or one video)."""

    model_config = STRICT
    unit: Literal["second", "video"]
    base: dict[str, float] | None = None
    rates: list[Rate] = Field(min_length=1)
    source: str | None = None


def same(value: Any, wanted: Any) -> bool:
    return str(value).lower() == str(wanted).lower()


def seconds_of(value: Any) -> int | float | None:
    """5, 5.0, "5", "5s" -> 5; "5.0625" -> 5.0625; anything else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str) and (m := re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*s?\s*", value)):
        value = float(m.group(1))
    if isinstance(value, (int, float)) and value > 0:
        return int(value) if float(value).is_integer() else float(value)
    return None
