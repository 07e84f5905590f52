"""fal's endpoints as data: one profile per endpoint (configs/endpoints/*.yaml, and a user's own
folder in ``WANSWEEP_ENDPOINTS``), read into :class:`Profile`.

A profile is the one place an endpoint's facts live: its input schema as fal publishes it, how
wansweep's one vocabulary of settings maps onto it, its output field and its price. The
planner, the local fal server and the pricing all read the same profile, so a request the
planner accepts is one the local server accepts, and its estimate is the profile's price.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from wansweep.errors import SpecError
from wansweep.plan.profile_parts import DurationMap, FieldSpec, Pricing, same, seconds_of
from wansweep.plan.schema import Problem
from wansweep.plan.strict_yaml import invalid, strict_yaml

PACKAGED = Path(__file__).resolve().parents[2] / "configs" / "endpoints"
USER_FOLDER_ENV = "WANSWEEP_ENDPOINTS"

# wansweep's settings, the same words for every endpoint; a profile's `map` says which field
# each one becomes there (see configs/endpoints/README.md)
SETTINGS = (
    "duration",
    "resolution",
    "aspect_ratio",
    "negative_prompt",
    "enable_prompt_expansion",
    "multi_shots",
    "generate_audio",
    "enable_safety_checker",
)
MEDIA = ("image", "audio")  # from the manifest's columns, never from a spec
BOOLEAN_SETTINGS = (
    "enable_prompt_expansion",
    "multi_shots",
    "generate_audio",
    "enable_safety_checker",
)


class Profile(BaseModel):
    """One fal endpoint, as wansweep calls it (see configs/endpoints/README.md)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, populate_by_name=True)
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9._/-]*$")
    alias: str = Field(pattern=r"^[a-z0-9][a-z0-9.-]*$")
    family: str
    title: str
    checked: str
    sources: list[str] = Field(min_length=1)
    notes: str = ""
    input: dict[str, FieldSpec]
    map: dict[str, Any]
    output: str = "video"
    pricing: Pricing
    unkeyed_at_default: list[str] = []
    locked: list[str] = []  # fields always sent at their default: the price assumes it
    path: str = ""

    @model_validator(mode="after")
    def _consistent(self) -> Profile:
        unknown = set(self.map) - set(SETTINGS) - set(MEDIA) - {"seed"}
        if unknown:
            raise ValueError(f"map: unknown setting(s) {sorted(unknown)}; known: {list(SETTINGS)}")
        if "image" not in self.map:
            raise ValueError("map: image is required (an image-to-video endpoint)")
        if "duration" not in self.map:
            raise ValueError("map: duration is required (a field, or fixed seconds)")
        for setting, target in self.map.items():
            name = self.duration.field if setting == "duration" else target
            if name is not None and name not in self.input:
                raise ValueError(f"map.{setting}: {name!r} is not a field of input")
        if "prompt" not in self.input:
            raise ValueError("input: prompt is required")
        for rate in self.pricing.rates:
            if set(rate.when) - set(SETTINGS):
                raise ValueError(f"pricing: a rate's when names {sorted(rate.when)}; use settings")
        return self

    # ---- the mapping -------------------------------------------------------------------

    @property
    def duration(self) -> DurationMap:
        value = self.map["duration"]
        return DurationMap.model_validate(value if isinstance(value, dict) else {"field": value})

    def field_of(self, setting: str) -> str | None:
        """The endpoint's field for a wansweep setting (None: it has none)."""
        if setting == "duration":
            return self.duration.field
        target = self.map.get(setting)
        return target if isinstance(target, str) else None

    @property
    def takes_seed(self) -> bool:
        return self.field_of("seed") is not None

    def extras(self) -> list[str]:
        """The endpoint's own fields a spec sets by their name (Kling's cfg_scale)."""
        mapped = {self.field_of(s) for s in (*SETTINGS, *MEDIA, "seed")}
        return [f for f in self.input if f not in mapped and f not in self.locked and f != "prompt"]

    def settable(self) -> list[str]:
        """Every setting name a spec may give this endpoint."""
        return [s for s in SETTINGS if s in self.map] + self.extras()

    def describe(self, setting: str) -> str:
        """A setting and the values the endpoint takes for it."""
        if setting == "duration":
            return f"duration ({', '.join(self.seconds_allowed())} s)"
        spec = self.input[self.field_of(setting) or setting]
        return f"{setting} ({spec.allowed()})"

    def seconds_allowed(self) -> list[str]:
        d = self.duration
        if d.fixed is not None:
            return [str(seconds_of(d.fixed))]
        spec = self.input[d.field]
        if spec.enum is not None:
            return [str(seconds_of(v)) for v in spec.enum]
        low, high = int(spec.minimum or 1), int(spec.maximum or 60)
        return [f"{low}-{high}"]

    def complete(self, given: dict[str, Any]) -> dict[str, Any]:
        """Every setting stated: ``given`` over the endpoint's defaults (in wansweep's words),
        so no request is left to fal's defaults. Not checked: see :meth:`refusals`."""
        out: dict[str, Any] = {f: self.input[f].default for f in self.locked}
        for setting in self.settable():
            if setting == "duration":
                d = self.duration
                default = d.fixed if d.fixed is not None else self.input[d.field].default
                out["duration"] = None if default is None else str(seconds_of(default))
                continue
            spec = self.input[self.field_of(setting) or setting]
            if spec.has_default:
                out[setting] = spec.default
        out.update(given)
        return {k: v for k, v in out.items() if v is not None}

    def refusals(self, settings: dict[str, Any]) -> list[Problem]:
        """Each setting this endpoint cannot honour, saying what it takes (empty: all fine)."""
        out = []
        held = {f for f in self.locked if settings.get(f) == self.input[f].default}
        for setting in sorted(set(settings) - set(self.settable()) - held):
            takes = ", ".join(self.describe(s) for s in self.settable()) or "no settings"
            why = (
                "is held at its default (the price assumes it)"
                if setting in self.locked
                else f"has no such setting; it takes {takes}"
            )
            out.append(Problem(setting, "not_taken", f"{self.alias} {why}"))
        for setting in self.settable():
            if setting not in settings:
                spec = self.input.get(self.field_of(setting) or setting)
                if setting in SETTINGS and spec and spec.enum and not spec.has_default:
                    # fal documents no default: left out, the request would be fal's choice
                    msg = f"fal documents no default for it at {self.alias}: state one of "
                    out.append(Problem(setting, "not_stated", msg + spec.allowed()))
                continue
            value = settings[setting]
            if setting == "duration":
                seconds, d = seconds_of(value), self.duration
                bad = seconds is None or (
                    seconds != d.fixed
                    if d.fixed is not None
                    else bool(self.input[d.field].problems(d.field, d.encode(seconds)))
                )
                if bad:
                    allowed = ", ".join(self.seconds_allowed())
                    out.append(
                        Problem(setting, "not_taken", f"{value!r}: {self.alias} takes {allowed} s")
                    )
                continue
            field = self.field_of(setting) or setting
            if any(p.severity == "error" for p in self.input[field].problems(field, value)):
                allowed = self.input[field].allowed()
                out.append(
                    Problem(setting, "not_taken", f"{value!r}: {self.alias} takes {allowed}")
                )
        return out

    def request_fields(self, prompt: str, settings: dict[str, Any], seed: int | None) -> dict:
        """The request body but its media URLs, in the endpoint's own field names."""
        body: dict[str, Any] = {"prompt": prompt}
        for setting, value in settings.items():
            if setting == "duration":
                d = self.duration
                if d.field is not None:
                    body[d.field] = d.encode(seconds_of(value))
            else:
                body[self.field_of(setting) or setting] = value
        if seed is not None and self.takes_seed:
            body[self.field_of("seed")] = seed
        return body

    def key_fields(self, fields: dict[str, Any]) -> dict[str, Any]:
        """The request fields a job key is made of: all but fields fal added after archives
        were keyed, while at their default (so those archives are not paid again)."""
        return {
            k: v
            for k, v in fields.items()
            if not (k in self.unkeyed_at_default and v == self.input[k].default)
        }

    def settings_of(self, payload: dict[str, Any]) -> dict[str, Any]:
        """A request read back into wansweep's words, the endpoint's defaults filled in (the
        local server makes the video the request asks for)."""
        given = {}
        for setting in SETTINGS:
            field = self.field_of(setting)
            if field is not None and field in payload:
                given[setting] = payload[field]
        if "duration" in given:
            given["duration"] = str(seconds_of(given["duration"]))
        return self.complete(given)

    def check(self, payload: dict[str, Any]) -> list[Problem]:
        """A request's fields against fal's schema, as fal's 422 names them (media unread)."""
        problems = [
            Problem(name, "extra_forbidden", "Extra inputs are not permitted")
            for name in sorted(set(payload) - set(self.input))
        ]
        for name, spec in self.input.items():
            if name not in payload:
                if spec.required:
                    problems.append(Problem(name, "missing", "Field required"))
                continue
            if payload[name] is None and not spec.required:
                continue
            problems += spec.problems(name, payload[name])
            if spec.required and payload[name] == "":
                problems.append(Problem(name, "missing", "Field required"))
        multi, expand = self.field_of("multi_shots"), self.field_of("enable_prompt_expansion")
        if multi and expand and payload.get(multi) and payload.get(expand) is False:
            problems.append(
                Problem(multi, "inactive", f"{multi} only acts when {expand} is true", "warning")
            )
        return problems

    # ---- money --------------------------------------------------------------------------

    def seconds(self, settings: dict[str, Any]) -> int | float:
        d = self.duration
        return seconds_of(d.fixed if d.fixed is not None else settings["duration"])

    def base_rate(self) -> float:
        """The one unit price fal's pricing API gives for the endpoint, as the local server
        gives it: the cheapest resolution's rate at the endpoint's other defaults (Wan 2.6
        flash: $0.05, 720p with audio; silent requests then bill fewer units)."""
        defaults = self.complete({})
        rates = [
            r.usd
            for r in self.pricing.rates
            if all(same(defaults.get(k), v) for k, v in r.when.items() if k != "resolution")
        ]
        return min(rates or [r.usd for r in self.pricing.rates])

    def estimate(self, settings: dict[str, Any]) -> float:
        """USD of one request with these (complete) settings, from the profile's prices."""
        p = self.pricing
        rate = next(
            (r.usd for r in p.rates if all(same(settings.get(k), v) for k, v in r.when.items())),
            None,
        )
        if rate is None:
            raise SpecError(
                f"{self.path or self.alias}: no price for {settings}; add a rate to its pricing"
            )
        if p.unit == "video":
            return round(rate + (p.base or {}).get("usd", 0.0), 6)
        seconds = self.seconds(settings)
        if p.base:
            extra = max(0, seconds - int(p.base["seconds"]))
            return round(p.base["usd"] + rate * extra, 6)
        return round(rate * seconds, 6)


@dataclass(frozen=True)
class Registry:
    """Every profile by id and by alias."""

    profiles: tuple[Profile, ...]

    def get(self, name: str) -> Profile:
        name = name.strip()
        for p in self.profiles:
            if name in (p.id, p.alias):
                return p
        known = ", ".join(p.alias for p in self.profiles)
        raise ValueError(f"unknown endpoint {name!r}; use an endpoint id or one of: {known}")

    @property
    def ids(self) -> list[str]:
        return [p.id for p in self.profiles]


def load_profile(path: Path) -> Profile:
    """One profile file, checked; :class:`SpecError` naming the file and each wrong key."""
    try:
        data = strict_yaml(path.read_text())  # a key given twice is refused, as in a spec
    except yaml.YAMLError as exc:
        raise SpecError(f"endpoint profile {path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise SpecError(f"endpoint profile {path}: expected a mapping at the top level")
    try:
        return Profile.model_validate({**data, "path": str(path)})
    except ValidationError as exc:
        raise invalid("endpoint profile", path, exc) from None


@lru_cache(maxsize=8)
def _registry(user_folder: str) -> Registry:
    profiles: dict[str, Profile] = {}
    folders = [PACKAGED] + [Path(f).expanduser() for f in user_folder.split(os.pathsep) if f]
    for folder in folders:
        if not folder.is_dir():
            raise SpecError(f"{USER_FOLDER_ENV}: {folder} is not a folder of endpoint profiles")
        for path in sorted(folder.glob("*.yaml")):
            p = load_profile(path)
            # a later folder's profile replaces one with the same id or alias
            for key, old in list(profiles.items()):
                if old.id == p.id or old.alias == p.alias:
                    del profiles[key]
            profiles[p.id] = p
    return Registry(tuple(sorted(profiles.values(), key=lambda p: (p.family, p.id))))


def registry() -> Registry:
    """The packaged profiles, then those of ``WANSWEEP_ENDPOINTS`` (folders, ``:``-separated)."""
    return _registry(os.environ.get(USER_FOLDER_ENV, ""))


def profile(name: str) -> Profile:
    """The profile of an endpoint id or alias (ValueError naming the known ones)."""
    return registry().get(name)
