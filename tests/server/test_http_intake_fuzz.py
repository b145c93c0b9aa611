"""Property tests of the raw intake body against a real server (uvicorn on 127.0.0.1, one keep-alive client):
arbitrary bytes, arbitrary JSON, deep nesting, wrong types, huge strings and lone surrogates, each sent
with no key, a made-up key, an agent token or a valid key. Whatever is sent: no 5xx, no dropped
connection, and a refusal never contains what was sent (every generated string carries a canary).

Profiles (``HYPOTHESIS_PROFILE``): ``ci`` (default) runs a few thousand cases in all; ``fuzz``
(``make fuzz``) runs many more. Each test prints its "tried / broke" counts (``pytest -s``).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import httpx2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from incident_monitor.policy.principal import local_operator
from incident_monitor.service import intake_keys
from incident_monitor.service.monitor import Monitor
from support.fuzz_profiles import PROFILE
from support.http_helpers import http_server
from support.intake import INTAKE, PROJECTS
from support.monitors import MonitorFactory, flow_config

CANARY = "cnry7Q"  # prefixed to every generated string: an answer that contains it echoed what was sent
KEY_HEADER = "x-incident-monitor-intake-key"

# Cheaper families get more cases: together a few thousand per CI run.
HEAVY = settings(PROFILE, max_examples=max(50, PROFILE.max_examples // 4))


def canaried(text: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return text.map(lambda s: CANARY + s)


# Any text, lone surrogates included (Hypothesis draws them from category Cs when asked).
ANY_TEXT = st.text(st.characters(codec=None, exclude_categories=()), max_size=40)
STRINGS = canaried(ANY_TEXT)
JSON_VALUES: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | STRINGS,
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(STRINGS, inner, max_size=6),
    max_leaves=40,
)
# Half the cases carry a valid key (only those reach the parser); Hypothesis favours early entries.
KEYS = st.sampled_from(["valid key", "none", "valid key", "made-up key", "valid key", "agent token"])


@pytest.fixture
def monitor(make_monitor: MonitorFactory, webhook_secret: str) -> Monitor:
    unlimited = {
        "intake_key_per_minute": 1_000_000,
        "intake_key_burst": 1_000_000,
        "unauthenticated_per_minute": 1_000_000,
        "unauthenticated_burst": 1_000_000,
    }
    return make_monitor(flow_config(projects=PROJECTS, http={"rate_limits": unlimited}))


class Target:
    """One server, one keep-alive client; counts what was tried and what broke."""

    def __init__(self, url: str, client: httpx2.Client, valid_key: str) -> None:
        self.url = url
        self.client = client
        self.keys = {
            "none": None,
            "made-up key": "imk_" + "F" * 43,
            "agent token": "imt_" + "G" * 43,
            "valid key": valid_key,
        }
        self.tried: Counter[str] = Counter()
        self.statuses: Counter[int] = Counter()
        self.broke: list[str] = []

    def post(self, raw: bytes, key: str) -> None:
        secret = self.keys[key]
        headers = {"content-type": "application/json", **({KEY_HEADER: secret} if secret else {})}
        self.tried[key] += 1
        try:
            response = self.client.post(f"{self.url}{INTAKE}", content=raw, headers=headers)
        except httpx2.TransportError as exc:  # a reset or dropped connection
            self.broke.append(f"dropped connection ({type(exc).__name__}) for {raw[:80]!r}")
            raise
        self.statuses[response.status_code] += 1
        problem = None
        if response.status_code >= 500:
            problem = f"{response.status_code} {response.text[:200]}"
        elif response.status_code >= 400 and CANARY in response.text:
            problem = f"echoed a sent value: {response.text[:200]}"
        elif response.status_code >= 400 and "error" not in response.json():
            problem = f"not the JSON error shape: {response.text[:200]}"
        if problem:
            self.broke.append(f"{problem} for {raw[:80]!r}")
            raise AssertionError(problem)

    def report(self, family: str) -> None:
        total = sum(self.tried.values())
        print(
            f"\nintake fuzz [{family}]: tried {total} ({dict(self.tried)}), broke {len(self.broke)}; "
            f"statuses {dict(sorted(self.statuses.items()))}"
        )


@pytest.fixture
def target(monitor: Monitor) -> Iterator[Target]:
    valid = intake_keys.create_intake_key(monitor, local_operator(), project_id="shop").secret
    with http_server(monitor) as url, httpx2.Client(timeout=60) as client:
        yield Target(url, client, valid)


def run(target: Target, family: str, test: Callable[[], None]) -> None:
    try:
        test()
    finally:
        target.report(family)
    assert target.broke == []


def shaped(project: Any = "shop", source: Any = "ci", **report: Any) -> dict[str, Any]:
    return {"project_id": project, "source_id": source, "report": report}


def test_arbitrary_bytes(target: Target) -> None:
    @settings(PROFILE)
    @given(raw=st.binary(max_size=2_000).map(lambda b: CANARY.encode() + b), key=KEYS)
    def check(raw: bytes, key: str) -> None:
        target.post(raw, key)

    run(target, "arbitrary bytes", check)


def test_arbitrary_json(target: Target) -> None:
    @settings(PROFILE)
    @given(value=JSON_VALUES, key=KEYS)
    def check(value: Any, key: str) -> None:
        target.post(json.dumps(value).encode(), key)

    run(target, "arbitrary JSON", check)


def test_deep_nesting(target: Target) -> None:
    brackets = st.lists(st.sampled_from([("[", "]"), ('{"k":', "}"), ('{"report":', "}")]), min_size=1, max_size=3)

    @settings(HEAVY)
    @given(depth=st.integers(1, 5_000), kinds=brackets, key=KEYS)
    def check(depth: int, kinds: list[tuple[str, str]], key: str) -> None:
        openers = "".join(kinds[i % len(kinds)][0] for i in range(depth))
        closers = "".join(kinds[i % len(kinds)][1] for i in reversed(range(depth)))
        target.post(f"{openers}{json.dumps(CANARY)}{closers}".encode(), key)

    run(target, "deep nesting", check)


def test_wrong_types_in_the_right_shape(target: Target) -> None:
    @settings(PROFILE)
    @given(
        project=st.one_of(st.just("shop"), JSON_VALUES),
        source=st.one_of(st.just("ci"), JSON_VALUES),
        title=st.one_of(STRINGS, JSON_VALUES),
        event=st.one_of(STRINGS, JSON_VALUES),
        level=st.one_of(st.sampled_from(["error", "critical", "info"]), JSON_VALUES),
        extra=st.dictionaries(STRINGS, JSON_VALUES, max_size=3),
        key=KEYS,
    )
    def check(project: Any, source: Any, title: Any, event: Any, level: Any, extra: Any, key: str) -> None:
        body = shaped(project, source, title=title, event=event, level=level, **extra)
        target.post(json.dumps(body).encode(), key)

    run(target, "wrong types", check)


def test_huge_strings(target: Target) -> None:
    @settings(HEAVY)
    @given(
        size=st.integers(1_000, 400_000),
        field=st.sampled_from(["title", "detail", "event", "fingerprint", "context-key", "context-value"]),
        key=KEYS,
    )
    def check(size: int, field: str, key: str) -> None:
        huge = CANARY + "x" * size
        report: dict[str, Any] = {"title": "t", "event": "ci.fuzz", "level": "error"}
        if field == "context-key":
            report["context"] = {huge: 1}
        elif field == "context-value":
            report["context"] = {"k": huge}
        else:
            report[field] = huge
        target.post(json.dumps(shaped(**report)).encode(), key)

    run(target, "huge strings", check)


def test_lone_surrogates(target: Target) -> None:
    surrogate = st.integers(0xD800, 0xDFFF).map(lambda c: f"\\u{c:04x}")
    where = st.sampled_from(["project_id", "source_id", "title", "detail", "context-key", "route_tag", "raw-utf8"])

    @settings(PROFILE)
    @given(escape=surrogate, place=where, prefix=ANY_TEXT, key=KEYS)
    def check(escape: str, place: str, prefix: str, key: str) -> None:
        marker = "@@LONE@@"
        report: dict[str, Any] = {"title": "t", "event": "ci.fuzz", "level": "error"}
        body = shaped(**report)
        value = CANARY + prefix + marker
        if place in ("project_id", "source_id"):
            body[place] = value
        elif place == "context-key":
            body["report"]["context"] = {value: 1}
        elif place == "route_tag":
            body["report"]["route_tags"] = [value]
        else:
            body["report"]["title" if place == "raw-utf8" else place] = value
        text = json.dumps(body, ensure_ascii=False)
        if place == "raw-utf8":  # the surrogate as raw (invalid) UTF-8 bytes, not as an escape
            raw = text.encode("utf-8", "surrogatepass").replace(
                marker.encode(), chr(int(escape[2:], 16)).encode("utf-8", "surrogatepass")
            )
        else:
            raw = text.replace(marker, escape).encode("utf-8", "surrogatepass")
        target.post(raw, key)

    run(target, "lone surrogates", check)
