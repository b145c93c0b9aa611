"""The redaction prefilter changes no output (policy/redaction.py, issue 18).

Redaction skips the passes that cannot match a text. Here every output is compared with the reference:
the same module with the prefilter switched off (every pass on every text), on the secrets corpus, on
every string the other redaction tests use, on Hypothesis-generated mixes of both, and on texts built to
sit on the prefilter's edges. The facts the prefilter's soundness rests on are checked one by one.
"""

from __future__ import annotations

import ast
import base64
import re
import string
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from incident_monitor.policy import redaction
from incident_monitor.policy.redaction import contains_secret, redact_adjacent, redact_json, redact_text
from support.fuzz_profiles import PROFILE
from support.secret_samples import SAMPLES

# --------------------------------------------------------------------------------------------------
# The reference
# --------------------------------------------------------------------------------------------------


@contextmanager
def _every_pass() -> Iterator[None]:
    # The decoded-run cache is shared by both ways: cleared on the way in and out, so neither reuses an
    # answer the other computed.
    redaction._decodes_to_secret.cache_clear()
    redaction._prefilter = False
    try:
        yield
    finally:
        redaction._prefilter = True
        redaction._decodes_to_secret.cache_clear()


def _assert_same(function: Callable[..., Any], *args: Any) -> Any:
    redaction._decodes_to_secret.cache_clear()
    fast = function(*args)
    with _every_pass():
        reference = function(*args)
    assert fast == reference, f"{function.__name__}{args!r}"
    return fast


def _assert_same_text(text: str) -> None:
    _assert_same(redact_text, text)
    _assert_same(contains_secret, text)


# --------------------------------------------------------------------------------------------------
# The corpus: secret samples and every string literal of the other redaction tests
# --------------------------------------------------------------------------------------------------

_TESTS = Path(__file__).parent
_REDACTION_TESTS = ("test_redaction.py", "test_free_text_redaction.py", "test_encoded_redaction.py")


def _literals(path: Path) -> set[str]:
    return {
        node.value
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value
    }


TEST_LITERALS = sorted(set().union(*(_literals(_TESTS / name) for name in _REDACTION_TESTS)))
SECRET_TEXTS = sorted({sample.text for sample in SAMPLES} | {sample.secret for sample in SAMPLES})

ENCODERS: dict[str, Callable[[str], str]] = {
    "base64": lambda t: base64.b64encode(t.encode()).decode(),
    "base64url": lambda t: base64.urlsafe_b64encode(t.encode()).decode().rstrip("="),
    "url": lambda t: quote(t, safe=""),
    "hex": lambda t: t.encode().hex(),
}
# Texts on the prefilter's edges: each guard's literal alone and inside words, the field names' parts,
# and the characters whose case-insensitive matches lowercase to something else.
EDGES = (
    "PRIVATE KEY",
    "-----BEGIN PRIVATE KEY-----",
    "://",
    "x://a:b@",
    "https://u:p@h",
    "https://hooks.slack.com/services/T0/B0/XYZ",
    "https://discord.com/api/webhooks/1/abc",
    "/api/webhooks/",
    "cookie: a=b",
    "COOKIE: a=b",
    "coo\u212aie: a=b",  # KELVIN SIGN
    "cook\u0130e: a=b",  # LATIN CAPITAL LETTER I WITH DOT ABOVE
    "cook\u0131e: a=b",  # LATIN SMALL LETTER DOTLESS I
    "set-cookie:x",
    "Bearer abc.def.ghi",
    "BEARER abcdefgh1",
    "bearer\tA1b2C3d4",
    "password=hunter22",
    "pa\u017f\u017fword=hunter22",  # LATIN SMALL LETTER LONG S
    "PASSWORD: hunter22",
    "to\u212aen=abc123",
    "api\u212aey=abc123",
    "S\u0130G=abc123",
    "s\u0131g=abc123",
    "sig=abc",
    "dsn: x",
    "conn_str=x",
    "connection_string=x",
    "Credentials: x",
    "--password hunter2",
    "-token abc",
    "--Auth-Token abc",
    "<password>x</password>",
    "<a>b</a>",
    "AP6A1b2C3d4E5 artifactory",
    "jfrog AP",
    "0123456789abcdef0123456789abcdef-us12",
    "-us1",
    "12345678:AAHA1b2C3d4E5A1b2C3d4E5A1b2C3d4E5dq",
    "AC" + "0" * 32,
    "SK" + "f" * 32,
    "AKC",
    "EAAA",
    "sq0",
    ".eyJ",
    "pypi-AgE",
    "SG.",
    "hf_",
    "npm_",
    "xox",
    "k_live_",
    "sk-",
    "ghp_",
    "M" + "A" * 24 + ".",
    "MTk4NjIyNDgzNDcxOTI1MjQ4.Cl2FMQ.A1b2C3d4E5A1b2C3d4E5ZnCjm1X",
    "\u03a3",
    "\u0391\u03a3 password=x",
    "[REDACTED]",
    "password: [REDACTED]",
)


@pytest.mark.parametrize("text", SECRET_TEXTS + TEST_LITERALS + list(EDGES))
def test_corpus_redacts_as_every_pass_would(text: str) -> None:
    _assert_same_text(text)


@pytest.mark.parametrize("encoding", ENCODERS)
def test_encoded_corpus_redacts_as_every_pass_would(encoding: str) -> None:
    for text in SECRET_TEXTS + list(EDGES):
        _assert_same_text(f"see {ENCODERS[encoding](text)} here")


def test_edges_in_context_redact_as_every_pass_would() -> None:
    for text in EDGES:
        for before, after in (("", ""), ("x", "y"), (" ", " "), ('"', '"'), ("=", ";"), ("\n", "\\n"), ("_", "-")):
            _assert_same_text(before + text + after)


def test_json_and_seams_redact_as_every_pass_would() -> None:
    for text in SECRET_TEXTS + list(EDGES):
        _assert_same(redact_json, {"context": {text: [text, {"value": text, "name": "token"}]}, "password": text})
        half = len(text) // 2
        _assert_same(redact_adjacent, [text[:half], text[half:]])
        _assert_same(redact_adjacent, [f"title {text[:half]}", text[half:]], [f"title {text[:half]}", text[half:]])


# --------------------------------------------------------------------------------------------------
# Hypothesis: mixes of the corpus, its fragments, separators and encodings
# --------------------------------------------------------------------------------------------------

_PIECES = SECRET_TEXTS + list(EDGES) + [literal for literal in TEST_LITERALS if len(literal) <= 400]
_FRAGMENTS = sorted(
    {piece[i : i + n] for piece in SECRET_TEXTS + list(EDGES) for i in range(0, len(piece), 5) for n in (3, 9)}
)
_SEPARATORS = [*" \n\t=:\"';,&/-_.@%<>[]", ": ", '\\"']
_CHARS = string.ascii_letters + string.digits + "+/=_-.:@%<>\"' \n\u212a\u0130\u0131\u017f\u03a3"

_pieces = st.one_of(
    st.sampled_from(_PIECES),
    st.sampled_from(_FRAGMENTS),
    st.sampled_from(_SEPARATORS),
    st.text(alphabet=_CHARS, max_size=40),
    st.builds(lambda encode, text: encode(text), st.sampled_from(list(ENCODERS.values())), st.sampled_from(_PIECES)),
)
_texts = st.lists(_pieces, max_size=8).map("".join)
_MANY = settings(PROFILE, max_examples=max(PROFILE.max_examples, 3_000))


@_MANY
@given(_texts)
def test_generated_text_redacts_as_every_pass_would(text: str) -> None:
    _assert_same_text(text)


@settings(PROFILE, max_examples=max(PROFILE.max_examples // 2, 500))
@given(_texts, _texts, st.dictionaries(_texts, _texts, max_size=3))
def test_generated_json_and_seams_redact_as_every_pass_would(left: str, right: str, mapping: dict[str, str]) -> None:
    _assert_same(redact_adjacent, [left, right])
    _assert_same(redact_json, {"context": mapping, "refs": [left, right]})


# --------------------------------------------------------------------------------------------------
# The facts the prefilter rests on
# --------------------------------------------------------------------------------------------------


def test_ordinary_text_skips_every_pass_in_clear(monkeypatch: pytest.MonkeyPatch) -> None:
    def must_not_run(*args: Any) -> str:
        raise AssertionError("a pass ran on text no pass can match")

    monkeypatch.setattr(redaction, "_redact_exact_passes", must_not_run)
    monkeypatch.setattr(redaction, "_redact_fields", must_not_run)
    for text in ("checkout failed 42", "TypeError at step 3: cannot read property of undefined in cart.js line 42"):
        assert redact_text(text) == text
        assert not contains_secret(text)


def test_a_secret_still_takes_the_passes() -> None:
    assert redact_text("call failed: Authorization: Bearer abc.def") == "call failed: Authorization: Bearer [REDACTED]"


def test_every_sensitive_name_and_suffix_holds_a_field_name_part() -> None:
    # A part has no underscore, so in a normalised name it comes from adjacent characters of the key:
    # lowercased, the text around the key holds it.
    assert "_" not in redaction._FIELD_NAME_PARTS.pattern
    for name in sorted(redaction._SENSITIVE_NAMES) + list(redaction._SENSITIVE_SUFFIXES):
        assert redaction._FIELD_NAME_PARTS.search(name), name


_NAME_SHAPES = st.sampled_from(sorted(redaction._SENSITIVE_NAMES) + ["db" + s for s in redaction._SENSITIVE_SUFFIXES])


def _respell(name: str, data: st.DataObject) -> str:
    # camelCase, other separators, random case and the characters that lowercase to ASCII letters.
    parts = name.split("_")
    separator = data.draw(st.sampled_from(["_", "-", ".", " ", "", "__"]))
    if not separator:
        parts = [parts[0]] + [part.capitalize() for part in parts[1:]]
    spelled = separator.join(parts)
    exotic = {"k": "\u212a", "i": "\u0130"}
    return "".join(data.draw(st.sampled_from([c, c.upper(), exotic.get(c, c)])) if c.isalpha() else c for c in spelled)


@settings(PROFILE, max_examples=max(PROFILE.max_examples, 1_000))
@given(_NAME_SHAPES, st.data())
def test_a_sensitive_key_lowercased_holds_a_field_name_part(name: str, data: st.DataObject) -> None:
    key = _respell(name, data)
    if redaction.is_sensitive_key(key):
        assert redaction._FIELD_NAME_PARTS.search(f"x {key}: y".lower())
        _assert_same_text(f'{{"{key}": "s3cr3t-value"}} and {key}=s3cr3t-value')


def test_case_insensitive_guards_are_in_every_case_insensitive_match_lowercased() -> None:
    # "cook" and "bear" guard _COOKIE_HEADER and _BARE_BEARER (both re.IGNORECASE) on the lowercased text:
    # every character re matches case-insensitively to one of their letters must lowercase to that letter.
    every_character = "".join(chr(c) for c in range(sys.maxunicode + 1) if not 0xD800 <= c <= 0xDFFF)
    for letter in sorted(set("cookbear")):
        matches = set(re.findall(f"(?i){letter}", every_character))
        assert {c for c in matches if c.lower() != letter} == set(), letter


def _without_lookarounds(pattern: str) -> str:
    # A superset of the pattern's matches, in syntax Hypothesis can draw from.
    depth_free = re.sub(r"\(\?<!\\w(?:[^()]|\([^()]*\))*\)", "", pattern)
    return re.sub(r"\(\?[!=][^()]*\)|\\b|(?<=\})\+", "", depth_free)


@pytest.mark.parametrize("entry", range(len(redaction._TOKEN_PATTERNS)))
def test_every_token_match_holds_its_anchor_and_candidate(entry: int) -> None:
    pattern, _, anchors, candidate = redaction._TOKEN_PATTERNS[entry]
    superset = _without_lookarounds(pattern.pattern)
    assert "(?<" not in superset and "(?!" not in superset

    @settings(PROFILE, max_examples=100)
    @given(st.from_regex(superset, fullmatch=True))
    def holds(match: str) -> None:
        if anchors:
            assert any(anchor in match for anchor in anchors)
        if candidate is not None:
            assert re.search(candidate, match)
        assert redaction._CANDIDATES.search(match)

    holds()


@pytest.mark.parametrize(
    ("pattern", "guard"),
    [
        (redaction._URL_CREDENTIALS.pattern + "@", lambda t: "://" in t and "@" in t),
        *((p.pattern, lambda t, a=anchor: a in t) for p, anchor in redaction._WEBHOOK_URLS),
        (redaction._XML_ELEMENT.pattern.replace("(?P=tag)", "[A-Za-z_][\\w.-]*"), lambda t: "</" in t),
        (redaction._ARTIFACTORY_PASSWORD.pattern, lambda t: "AP" in t),
    ],
)
def test_other_passes_matches_hold_their_guard_and_candidate(pattern: str, guard: Callable[[str], bool]) -> None:
    superset = re.sub(r"^\(\?<!\[[^\]]*\]\)", "", _without_lookarounds(pattern))

    @settings(PROFILE, max_examples=100)
    @given(st.from_regex(superset, fullmatch=True))
    def holds(match: str) -> None:
        assert guard(match)
        assert redaction._CANDIDATES.search(match)

    holds()
