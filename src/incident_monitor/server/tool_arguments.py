"""A ``tools/call``'s arguments checked for what pydantic lets through or fails on, before it sees them.

- Not a JSON object (``1.5``, a list, a string): unchecked, ``dict(arguments)`` failed with Python's own
  text. ``null`` or no arguments at all are an empty object (MCP makes arguments optional).
- A name the tool does not take: pydantic ignores it, so a misspelt ``risk_level`` would quietly lower
  a report's severity and its approval requirement.
- Text that is not Unicode: a lone surrogate (``"\\ud800"``), or ``INVALID_TEXT`` where the wire held one
  or bytes that are not UTF-8 (server/frame_repair.py). It can be neither hashed, stored nor logged.
- Nesting deeper than ``MAX_DEPTH`` (the intake body's limit): redaction cuts it there anyway, and
  serialising far less than the parsers accept already fails.

Each problem is one line naming the argument (a name the tool takes; never one the caller made up, nor
any value) and the fix, in ``describe_invalid_arguments``' shape. ``auditable`` is what the audit row's
digest is computed over when the arguments themselves cannot be hashed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection
from typing import Any

from incident_monitor.server.frame_repair import INVALID_TEXT
from incident_monitor.server.json_limits import MAX_DEPTH

_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
_JSON_TYPES = {str: "a string", bool: "a boolean", int: "a number", float: "a number", list: "an array"}


def is_invalid_text(text: str) -> bool:
    return text.startswith(INVALID_TEXT) or (not text.isascii() and _LONE_SURROGATE.search(text) is not None)


def _scan(value: Any) -> tuple[int, bool]:
    """How deep ``value`` nests (a scalar is 0, ``{}`` is 1) and whether any key or string in it is not Unicode.

    Iterative, so arguments nested thousands deep cannot exhaust the stack."""
    deepest, invalid = 0, False
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            invalid = invalid or is_invalid_text(item)
        elif isinstance(item, dict | list):
            depth += 1
            deepest = max(deepest, depth)
            if isinstance(item, dict):
                invalid = invalid or any(isinstance(k, str) and is_invalid_text(k) for k in item)
                stack.extend((v, depth) for v in item.values())
            else:
                stack.extend((v, depth) for v in item)
    return deepest, invalid


def argument_problems(tool: str, arguments: Any, accepted: Collection[str], *, other_names: bool = False) -> list[str]:
    """One line per problem (``  - field: what is wrong; the fix``); none when pydantic may take it from here.

    With ``other_names`` (a downstream tool, whose server decides what it takes) names outside ``accepted``
    are checked too instead of refused, and never named."""
    if arguments is None:
        return []
    if not isinstance(arguments, dict):
        kind = _JSON_TYPES.get(type(arguments), "not an object")
        return [f"  - (arguments): must be a JSON object of named arguments, not {kind}; send {{}} for none"]
    problems: list[str] = []
    unknown = 0
    for name, value in arguments.items():
        if isinstance(name, str) and is_invalid_text(name):
            problems.append("  - (an argument name): is not valid Unicode; send UTF-8 text")
            continue
        known = isinstance(name, str) and name in accepted
        if not known and not other_names:
            unknown += 1
            continue
        field = name if known else "(an argument its schema does not list)"
        depth, invalid = _scan(value)
        if invalid:
            problems.append(
                f"  - {field}: holds text that is not valid Unicode (a lone surrogate \\ud800-\\udfff, or bytes "
                "that are not UTF-8); send UTF-8 text"
            )
        if depth + 1 > MAX_DEPTH:  # the arguments object is the first level
            problems.append(f"  - {field}: nests deeper than {MAX_DEPTH} levels; send a flatter value")
    if unknown:
        takes = ", ".join(sorted(accepted)) or "no arguments"
        problems.append(
            f"  - ({unknown} argument{'s' if unknown > 1 else ''} the tool does not take; names not repeated): "
            f"{tool} takes {takes}"
        )
    return problems


def auditable(arguments: Any) -> Any:
    """The arguments, or a stand-in the audit digest can be computed over: their JSON text with every
    non-ASCII character escaped when they hold a lone surrogate, a fixed text when they nest too deep."""
    depth, invalid = _scan(arguments)
    if depth > MAX_DEPTH:
        return f"(arguments nested over {MAX_DEPTH} levels)"
    if not invalid:
        return arguments
    try:
        return json.dumps(arguments, ensure_ascii=True, sort_keys=True, default=repr)
    except TypeError:  # keys that are not strings (only an in-process caller can send them)
        return "(arguments not JSON)"
