"""The JSON schemas an agent reads in ``tools/list``, made small and self-contained.

pydantic writes nested models and enums as ``$ref`` into ``$defs``, gives every property a
``title`` that repeats its name, and writes ``X | None`` as ``anyOf``; some clients cannot follow
``$ref`` at all, and every byte here is paid by the agent in every session. The schemas are
rewritten once, at registration:

- every schema: ``$ref`` inlined (no ``$defs``), no ``title``, ``X or null`` as a nullable type,
  no ``additionalProperties: true`` (the default);
- input: an optional argument whose default is null is simply optional (not ``X or null``);
- output: no ``default`` and no ``required`` (every field of a result is always present, null when
  empty); no ``type`` where the rest says it (an ``enum`` of strings, a nested object's
  ``properties``, an array's ``items``); no ``format: date-time`` (timestamps are the ``*_at``
  fields, ISO 8601); a value set an agent already reads where it chooses a value (an ``enum`` on an
  input of a read tool: severities, incident and draft states, the list filters) is a plain string,
  not that enum again (``listed``; see server/tools.py).

Argument and result validation still run on the pydantic models, never on these schemas.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# Keywords whose value is a map of name → schema (the names are data, never keywords).
_SCHEMA_MAPS = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")
# Keywords whose value is one schema, or a list of schemas.
_SCHEMA_VALUES = ("items", "additionalProperties", "not", "if", "then", "else", "contains", "propertyNames")
_SCHEMA_LISTS = ("anyOf", "allOf", "oneOf", "prefixItems")
_DEFS_PREFIX = "#/$defs/"
_NULL = {"type": "null"}
# (type, has properties, has items) where the keywords already say the type.
_IMPLIED_TYPES = {("object", True, False), ("array", False, True)}


class SchemaCycleError(ValueError):
    """A model refers to itself: it cannot be inlined (and an agent-facing schema should not recurse)."""


@dataclass(frozen=True)
class _Pass:
    definitions: dict[str, Any]
    output: bool
    listed: frozenset[tuple[Any, ...]] = frozenset()

    @property
    def dropped(self) -> frozenset[str]:
        return frozenset({"title", "$defs", "default", "required"} if self.output else {"title", "$defs"})


def compact_schema(
    schema: dict[str, Any], *, output: bool = False, listed: frozenset[tuple[Any, ...]] = frozenset()
) -> dict[str, Any]:
    """``schema`` rewritten as the module docstring says (an input schema unless ``output``); in an output,
    an ``enum`` whose values are one of the ``listed`` sets becomes a plain string."""
    compacted = _compact(schema, _Pass(schema.get("$defs", {}), output, listed), ())
    if not output:
        return _optional_without_null(compacted)
    # MCP requires the result itself to say "type": "object"; nested objects are known by their properties.
    return {**compacted, "type": "object"}


def _compact(node: Any, run: _Pass, resolving: tuple[str, ...]) -> Any:
    if not isinstance(node, dict):
        return node
    ref = node.get("$ref")
    if isinstance(ref, str):
        name = ref.removeprefix(_DEFS_PREFIX)
        if not ref.startswith(_DEFS_PREFIX) or name not in run.definitions:
            raise ValueError(f"unresolvable $ref {ref!r}")
        if name in resolving:
            raise SchemaCycleError(f"$ref cycle through {' -> '.join((*resolving, name))}")
        target = _compact(run.definitions[name], run, (*resolving, name))
        # Keywords beside the $ref (a field's description or default) win over the definition's.
        siblings = {k: v for k, v in node.items() if k != "$ref"}
        return {**target, **_compact(siblings, run, resolving)}
    if run.output and _listed_enum(node, run.listed):
        node = {k: v for k, v in node.items() if k != "enum"} | {"type": "string"}
    result: dict[str, Any] = {}
    for key, value in node.items():
        if key in run.dropped or (key == "additionalProperties" and value is True):
            continue
        if key in _SCHEMA_MAPS and isinstance(value, dict):
            result[key] = {name: _compact(sub, run, resolving) for name, sub in value.items()}
        elif key in _SCHEMA_VALUES:
            result[key] = _compact(value, run, resolving)
        elif key in _SCHEMA_LISTS and isinstance(value, list):
            options = [_compact(sub, run, resolving) for sub in value]
            nullable = _nullable(options) if key == "anyOf" else None
            if nullable is not None:
                result.update(nullable)
            else:
                result[key] = options
        else:
            result[key] = value
    if run.output and _enum_of_strings(result):
        del result["type"]
    if run.output and result.get("format") == "date-time":
        del result["format"]  # an annotation only; every timestamp is named *_at and is ISO 8601
    if run.output and (str(result.get("type")), "properties" in result, "items" in result) in _IMPLIED_TYPES:
        del result["type"]
    return result


def _nullable(options: list[Any]) -> dict[str, Any] | None:
    """``anyOf: [X, {"type": "null"}]`` as X with ``"null"`` among its types, when X names one type."""
    if len(options) != 2 or _NULL not in options:
        return None
    (other,) = [o for o in options if o != _NULL]
    if not isinstance(other, dict) or not isinstance(other.get("type"), str):
        return None
    merged = {**other, "type": [other["type"], "null"]}
    if "enum" in merged:
        merged["enum"] = [*merged["enum"], None]
    return merged


def enum_values(node: Any) -> tuple[Any, ...] | None:
    """The values of an ``enum`` of strings (a value set), else None."""
    if not isinstance(node, dict) or not isinstance(node.get("enum"), list):
        return None
    values = tuple(node["enum"])
    return values if all(isinstance(v, str) for v in values) else None


def _listed_enum(node: dict[str, Any], listed: frozenset[tuple[Any, ...]]) -> bool:
    values = enum_values(node)
    return values is not None and values in listed and node.get("type", "string") == "string"


def _enum_of_strings(node: dict[str, Any]) -> bool:
    values, types = node.get("enum"), node.get("type")
    if not isinstance(values, list) or types not in ("string", ["string", "null"]):
        return False
    return all(isinstance(v, str) or (v is None and types != "string") for v in values)


def _optional_without_null(schema: dict[str, Any]) -> dict[str, Any]:
    """``X or null, default null`` for an optional argument becomes ``X``: the argument is simply
    left out (the server still accepts an explicit null)."""
    if "properties" not in schema:
        return schema
    required = set(schema.get("required", ()))
    properties: dict[str, Any] = {}
    for name, sub in schema["properties"].items():
        types = sub.get("type")
        if name not in required and sub.get("default", ...) is None and isinstance(types, list):
            sub = {k: v for k, v in sub.items() if k != "default"}
            kept = [t for t in types if t != "null"]
            sub["type"] = kept[0] if len(kept) == 1 else kept
            if "enum" in sub:
                sub["enum"] = [v for v in sub["enum"] if v is not None]
        properties[name] = sub
    return {**schema, "properties": properties}
