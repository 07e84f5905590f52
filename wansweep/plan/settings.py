"""wansweep's one vocabulary of settings, as a spec or a manifest gives them: which names are
known, how spreadsheet-ish values are read, and how a setting names an arm."""

from __future__ import annotations

import hashlib
from typing import Any

from wansweep.plan import endpoints
from wansweep.plan.profile_parts import seconds_of


def check_setting_names(settings: dict[str, Any], where: str) -> None:
    known = setting_names()
    unknown = set(settings) - known
    if unknown:
        raise ValueError(f"{where}: unknown setting(s) {sorted(unknown)}; known: {sorted(known)}")


def setting_names() -> set[str]:
    """Every setting some endpoint takes: wansweep's own, and each endpoint's extra fields."""
    return set(endpoints.SETTINGS) | {f for p in endpoints.registry().profiles for f in p.extras()}


def normalise_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """Coerce spreadsheet-ish values (5 or "5s" -> "5" seconds, 720 -> "720p", "true" ->
    True) to wansweep's types; what cannot be read stays as given, for the check to name."""
    out = dict(settings)
    seconds = seconds_of(out.get("duration"))
    if seconds is not None:  # what cannot be read as seconds stays, for the check to name
        out["duration"] = str(seconds)
    if isinstance(out.get("resolution"), int) and not isinstance(out["resolution"], bool):
        out["resolution"] = f"{out['resolution']}p"
    for key in endpoints.BOOLEAN_SETTINGS:
        value = out.get(key)
        if isinstance(value, str) and value.strip().lower() in (
            "true",
            "false",
            "1",
            "0",
            "yes",
            "no",
        ):
            out[key] = value.strip().lower() in ("true", "1", "yes")
    return out


def label(key: str, value: Any) -> str:
    short = {
        "resolution": "",
        "duration": "s",
        "enable_prompt_expansion": "expand",
        "multi_shots": "multishot",
        "negative_prompt": "neg",
        "enable_safety_checker": "safety",
    }
    if key == "duration":
        return f"{value}s"
    if key == "resolution":
        return str(value)
    if isinstance(value, bool):
        return f"{short.get(key, key)}-{'on' if value else 'off'}"
    return f"{short.get(key, key)}-{hashlib.sha1(str(value).encode()).hexdigest()[:6]}"
