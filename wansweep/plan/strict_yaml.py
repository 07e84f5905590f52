"""YAML read strictly: a key given twice in one mapping is an error naming both lines; and
what a model refuses in it said key by key (a spec, an endpoint profile)."""

from __future__ import annotations

from collections.abc import Hashable
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from wansweep.errors import SpecError


class _StrictLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (YAML would keep the last
    silently: `budget_usd: 0.01` then `budget_usd: 1000` is a budget of $1,000)."""

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            if not isinstance(key, Hashable):
                break  # the safe loader refuses it below, naming it
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"key {key!r} is given twice (lines {seen[key]} and {line})",
                    key_node.start_mark,
                )
            seen[key] = line
        return super().construct_mapping(node, deep)


def strict_yaml(text: str) -> Any:
    """YAML as the safe loader reads it, with a repeated key an error naming both lines."""
    return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 (a SafeLoader)


def invalid(what: str, path: str | Path, exc: ValidationError) -> SpecError:
    """A file's model errors as one :class:`SpecError`, a line per key and what it wants."""
    lines = [f"{what} {path} is invalid:"]
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        lines.append(f"  - {key}: {err['msg']}")
    return SpecError("\n".join(lines))
