"""A profile against fal's OpenAPI document of its endpoint
(``https://fal.ai/api/openapi/queue/openapi.json?endpoint_id=<id>``): what differs, field by
field, so a user sees when fal changed a schema before paying for requests it would refuse.

The document's input schema is the JSON body of its POST path (a ``$ref`` into
``components.schemas``), as fal's model pages and the tools built on them read it.
"""

from __future__ import annotations

from typing import Any

from wansweep.plan.endpoints import Profile
from wansweep.plan.profile_parts import FieldSpec

JSON_TYPES = {"string", "integer", "number", "boolean"}


def _resolve(doc: dict[str, Any], node: Any) -> Any:
    """A node with ``$ref`` and single-item ``allOf``/``anyOf`` followed (nullable unions
    ``anyOf: [X, null]`` read as X)."""
    for _ in range(20):  # a cycle is a broken document, not a reason to hang
        if not isinstance(node, dict):
            return node
        if "$ref" in node:
            ref = node["$ref"]
            target: Any = doc
            for part in ref.removeprefix("#/").split("/"):
                target = target.get(part, {}) if isinstance(target, dict) else {}
            node = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
            continue
        for key in ("allOf", "anyOf", "oneOf"):
            options = [o for o in node.get(key, []) if o != {"type": "null"}]
            if len(options) == 1:
                rest = {k: v for k, v in node.items() if k != key}
                node = {**_resolve(doc, options[0]), **rest}
                break
        else:
            return node
    return node


def input_schema(doc: dict[str, Any]) -> tuple[dict[str, dict[str, Any]], set[str]]:
    """The input fields (resolved) and the required ones, of an endpoint's document."""
    for methods in (doc.get("paths") or {}).values():
        post = methods.get("post") if isinstance(methods, dict) else None
        if not post or "requestBody" not in post:
            continue
        content = post["requestBody"].get("content", {}).get("application/json", {})
        schema = _resolve(doc, content.get("schema", {}))
        if isinstance(schema, dict) and "properties" in schema:
            fields = {k: _resolve(doc, v) for k, v in schema["properties"].items()}
            return fields, set(schema.get("required", []))
    raise ValueError("the document has no POST request body with properties")


def differences(profile: Profile, doc: dict[str, Any]) -> list[str]:
    """What the profile says that fal's document does not, one line each (empty: agreed)."""
    fields, required = input_schema(doc)
    out = []
    for name in sorted(set(fields) - set(profile.input)):
        out.append(f"{name}: fal has this field ({_kind(fields[name])}); the profile does not")
    for name in sorted(set(profile.input) - set(fields)):
        out.append(f"{name}: the profile has this field; fal's schema does not")
    for name in sorted(set(fields) & set(profile.input)):
        ours, theirs = profile.input[name], fields[name]
        for what, mine, fals in _facts(ours, theirs, name in required):
            if mine != fals:
                out.append(f"{name}: {what} is {_show(fals)} at fal, {_show(mine)} in the profile")
    return out


def _facts(ours: FieldSpec, theirs: dict[str, Any], required: bool) -> list[tuple]:
    facts = [
        ("required", ours.required, required),
        ("type", ours.type, theirs.get("type") if theirs.get("type") in JSON_TYPES else None),
        ("default", ours.default, theirs.get("default")),
        ("enum", _values(ours.enum), _values(theirs.get("enum"))),
        ("minimum", ours.minimum, _number(theirs.get("minimum"))),
        ("maximum", ours.maximum, _number(theirs.get("maximum"))),
        ("max_length", ours.max_length, theirs.get("maxLength")),
    ]
    if facts[1][2] is None:  # fal gave no plain type: nothing to compare
        facts.pop(1)
    return facts


def _values(values: Any) -> list[Any] | None:
    """An enum's values, order aside."""
    return sorted(values, key=repr) if isinstance(values, list) else None


def _show(value: Any) -> str:
    return ", ".join(repr(v) for v in value) if isinstance(value, list) else repr(value)


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) else None


def _kind(node: dict[str, Any]) -> str:
    kind = node.get("type", "object")
    return f"{kind}, default {node['default']!r}" if "default" in node else str(kind)


def document_of(profile: Profile) -> dict[str, Any]:
    """An OpenAPI document of the endpoint in fal's shape, from its profile (what the local
    fal server publishes)."""
    name = "".join(p.capitalize() for p in profile.alias.replace(".", "-").split("-")) + "Input"
    properties = {}
    for field, spec in profile.input.items():
        node: dict[str, Any] = {"type": spec.type, "title": field.replace("_", " ").title()}
        for key, value in (
            ("default", spec.default if spec.has_default else None),
            ("enum", spec.enum),
            ("minimum", spec.minimum),
            ("maximum", spec.maximum),
            ("maxLength", spec.max_length),
        ):
            if value is not None or (key == "default" and spec.has_default):
                node[key] = value
        properties[field] = node
    required = [f for f, spec in profile.input.items() if spec.required]
    return {
        "openapi": "3.0.4",
        "info": {"title": profile.title, "x-fal-metadata": {"endpointId": profile.id}},
        "components": {
            "schemas": {name: {"type": "object", "properties": properties, "required": required}}
        },
        "paths": {
            f"/{profile.id}": {
                "post": {
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {"schema": {"$ref": f"#/components/schemas/{name}"}}
                        },
                    }
                }
            }
        },
    }
