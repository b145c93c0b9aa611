"""Parse an untrusted JSON body within limits: nesting depth, object keys, string sizes, valid Unicode.

``json.loads`` recurses in C once per nesting level and raises ``RecursionError`` near the interpreter's
limit, so the depth is measured first, on the raw bytes, without recursion: strings are cut out with one
linear regex, every byte but brackets is deleted, and the running depth is a C-level ``accumulate``.
Failures are ``BodyRejected`` with a message that names the limit and never the offending value.
"""

from __future__ import annotations

import json
import math
import re
from itertools import accumulate
from typing import Any

MAX_DEPTH = 32
MAX_KEYS = 1_000  # object members in the whole body
MAX_STRING_CHARS = 65_536  # per string, keys included

# A JSON string (or an unterminated one, to the end): possessive, so each byte is looked at once.
_STRING = re.compile(rb'"(?:[^"\\]++|\\.)*+"?', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_OPENERS = frozenset(b"[{")


class BodyRejected(Exception):
    """The body breaks a limit; ``message`` says which and how to fix it (never the value)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def nesting_depth(raw: bytes) -> int:
    """The deepest ``[``/``{`` nesting outside strings (for well-formed JSON; a bound for the rest)."""
    brackets = _STRING.sub(b"", raw).translate(None, _NOT_BRACKETS)
    return max(accumulate((1 if c in _OPENERS else -1 for c in brackets), initial=0))


def _reject_constant(name: str) -> Any:
    raise BodyRejected("numbers must be finite (NaN and Infinity are not JSON); send a number or a string")


def _finite_float(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise BodyRejected("numbers must be finite; send a smaller number or a string")
    return number


def _check_string(text: str, what: str) -> None:
    if len(text) > MAX_STRING_CHARS:
        raise BodyRejected(f"a {what} is over {MAX_STRING_CHARS} characters; send less detail")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise BodyRejected(f"a {what} holds a lone surrogate (\\ud800-\\udfff); send valid Unicode") from None


class _Counter:
    """``object_pairs_hook`` that counts members and checks keys as the C parser builds each object."""

    def __init__(self) -> None:
        self.keys = 0

    def __call__(self, pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        self.keys += len(pairs)
        if self.keys > MAX_KEYS:
            raise BodyRejected(f"the body has over {MAX_KEYS} object keys; send less detail")
        for key, value in pairs:
            _check_string(key, "key")
            if isinstance(value, str):
                _check_string(value, "string")
        return dict(pairs)


def _check_array_strings(value: Any) -> None:
    """Strings directly inside arrays (object members are checked by the hook); depth is at most MAX_DEPTH."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            for element in item:
                if isinstance(element, str):
                    _check_string(element, "string")
                elif isinstance(element, (list, dict)):
                    stack.append(element)
        elif isinstance(item, dict):
            stack.extend(v for v in item.values() if isinstance(v, (list, dict)))


def parse_json_body(raw: bytes) -> Any:
    """The parsed body, or ``BodyRejected`` (not JSON, too deep, too many keys, a string too long or not Unicode)."""
    if nesting_depth(raw) > MAX_DEPTH:
        raise BodyRejected(f"the body nests deeper than {MAX_DEPTH} levels; send a flatter object")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BodyRejected("the body is not UTF-8; send JSON encoded as UTF-8") from None
    try:
        value = json.loads(
            text, object_pairs_hook=_Counter(), parse_constant=_reject_constant, parse_float=_finite_float
        )
    except BodyRejected:
        raise
    except (ValueError, RecursionError):
        # ValueError covers malformed JSON and integers over Python's digit limit; RecursionError cannot
        # happen after the depth check, but a parse failure is a 400 whatever its kind.
        raise BodyRejected("the body must be JSON: {project_id, source_id, report: {...}}") from None
    if isinstance(value, str):
        _check_string(value, "string")
    _check_array_strings(value)
    return value
