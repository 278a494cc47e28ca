"""Turn the repo's event contracts (JSON Schema 2020-12, services/contracts/events) into the JSON Schema
draft 4 documents the EventBridge schema registry accepts, describing the whole event as it travels."""

from __future__ import annotations

from typing import Any, Mapping

DRAFT_4 = "http://json-schema.org/draft-04/schema#"
# Keywords that mean the same in draft 4 and 2020-12. Anything else (const, $defs, $ref,
# exclusiveMinimum as a number, if/then/else, ...) is refused rather than registered with a
# different meaning; `const` alone is translated to its draft 4 spelling.
_SAME_IN_DRAFT_4 = frozenset({
    "type", "properties", "required", "additionalProperties", "title", "description", "format", "pattern",
    "minLength", "maxLength", "minimum", "maximum", "enum", "items", "minItems", "maxItems", "uniqueItems",
    "default", "anyOf", "oneOf", "allOf", "not",
})
_DROPPED = frozenset({"$schema", "$id"})  # identify the repo's file, not the registered schema


def to_draft_4(schema: Mapping[str, Any], *, where: str) -> dict[str, Any]:
    """A copy of ``schema`` in draft 4 terms. Raises ValueError naming ``where`` and the keyword it cannot carry."""
    converted: dict[str, Any] = {}
    for keyword, value in schema.items():
        if keyword in _DROPPED:
            continue
        if keyword == "const":
            converted["enum"] = [value]
        elif keyword not in _SAME_IN_DRAFT_4:
            raise ValueError(f"{where}: keyword {keyword!r} has no JSON Schema draft 4 equivalent, which the "
                             f"EventBridge schema registry needs; use only {', '.join(sorted(_SAME_IN_DRAFT_4 | {'const'}))}")
        elif keyword == "properties":
            converted[keyword] = {name: to_draft_4(sub, where=f"{where}.properties.{name}") for name, sub in value.items()}
        elif keyword in ("items", "not"):
            converted[keyword] = to_draft_4(value, where=f"{where}.{keyword}")
        elif keyword in ("anyOf", "oneOf", "allOf"):
            converted[keyword] = [to_draft_4(sub, where=f"{where}.{keyword}[{i}]") for i, sub in enumerate(value)]
        elif keyword == "additionalProperties" and isinstance(value, dict):
            converted[keyword] = to_draft_4(value, where=f"{where}.additionalProperties")
        else:
            converted[keyword] = value
    return converted


def registry_schema(*, detail_type: str, source: str, envelope: Mapping[str, Any], data: Mapping[str, Any]) -> dict[str, Any]:
    """The whole EventBridge event of one detail-type: EventBridge's own fields, the services' envelope as
    ``detail``, and the event's contract as ``detail.data``."""
    detail = to_draft_4(envelope, where="envelope")
    detail["properties"]["data"] = to_draft_4(data, where=detail_type)
    string = {"type": "string"}
    return {
        "$schema": DRAFT_4,
        "title": detail_type,
        "description": data.get("description", detail_type),
        "type": "object",
        "properties": {
            "version": string,
            "id": string,
            "detail-type": {"type": "string", "enum": [detail_type]},
            "source": {"type": "string", "enum": [source]},
            "account": string,
            "time": {"type": "string", "format": "date-time"},
            "region": string,
            "resources": {"type": "array", "items": string},
            "detail": detail,
        },
        "required": ["detail-type", "source", "detail"],
    }
