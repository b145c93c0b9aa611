"""Property tests of tool inputs over real MCP transports (issue 12: 3 and 5).

One ``incident-monitor serve`` per transport for the whole module, many calls per connection:

- stdio: a real ``mcp`` client of a process holding a full-scope operator token, and raw JSON-RPC lines to a
  second process (the same data dir) serving the default agent;
- Streamable HTTP (uvicorn on 127.0.0.1): real clients of both protocol eras, the full-scope token's
  (2026-07-28) and the default agent's (handshake), and raw frames in either era.

Arguments are drawn from each tool's ``inputSchema`` as ``tools/list`` publishes it to that caller (every tool
a full-scope token sees, and the default agent's): valid ones, values of the wrong type or out of range, names
the tool does not take, missing ones, huge strings, deep nesting, JSON inside strings. Raw frames add what a
client library will not send: arguments that are no object, lone surrogates (``"\\ud800"``), bytes that are not
UTF-8, integers of thousands of digits, NaN, tool names of every shape, ids and params of the wrong shape.
Every generated string starts with CANARY; many carry a secret of a family the redactor knows.

Each answer must be a tool result (``isError`` true or false; errors in the ``code: message`` shape) or a
JSON-RPC -32602 (-32600 for a frame that is no JSON-RPC request): never -32603 or ``internal_error``, never
Python's or pydantic's text, no value sent (CANARY) in an error, no planted secret anywhere; the server lives
on. At the end: each refused call has its audit row, the audit chains verify, no incident came from a refused
call (no self-monitoring incident at all), nothing was delivered, and no secret is in any answer, database
file, WAL or log.

Profiles (``HYPOTHESIS_PROFILE``): ``ci`` (default) runs over 10,000 calls; ``fuzz`` (``make fuzz``) over
ten times as many. ``pytest -s`` prints the counts per transport, tool and family.
"""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AbstractAsyncContextManager, ExitStack, asynccontextmanager, closing
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, TextIO, TypeVar

import anyio
import httpx2
import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal
from hypothesis import Phase, given, settings
from hypothesis import strategies as st
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp.types import CallToolResult

from incident_monitor.policy.principal import local_operator
from incident_monitor.policy.scopes import ALL_SCOPES, DEFAULT_AGENT_SCOPES
from incident_monitor.server.errors import ERROR_SHAPE
from incident_monitor.service import tokens
from incident_monitor.service.monitor import Monitor
from incident_monitor.store.engine import DATABASE_FILENAME
from support.fuzz_profiles import PROFILE
from support.monitors import WEBHOOK_SECRET_VARIABLE, flow_config, new_webhook_secret, toml_text
from support.raw_jsonrpc import Era, RawHttp, RawStdio, tool_call
from support.receivers import WebhookReceiver
from support.secret_samples import SAMPLES
from support.stdio_server import SCRIPT, child_env
from support.surface_helpers import files

CANARY = "cnry7q"  # starts every generated string: an error that contains it echoed what was sent
SECRETS = tuple(sorted({sample.secret for sample in SAMPLES}))
OPERATOR_NAME, AGENT_NAME, LOCAL_AGENT_NAME = "fuzz-operator", "fuzz-agent", "local-agent"
CALLS_PER_EXAMPLE = 13  # sent together over one connection: the server's group commit shares their fsyncs
EXAMPLES = max(20, PROFILE.max_examples // 3)  # ci: 200 examples x 13 calls x 4 tests; fuzz: 16.7 times that
# No shrinking: an example is a batch of calls whose failures are printed whole, and shrinking re-runs slow ones.
GENERATE_ONLY = (Phase.explicit, Phase.generate)
FORBIDDEN = ("Traceback", "pydantic", "ValidationError", "object is not iterable", "Error executing tool")
# Governance tools that run the whole assessment (a second each): called validly by the liveness check only.
SLOW_TOOLS = frozenset({"run_assessment_probes", "build_assessment_report"})
ID_PREFIXES = {"draft_id": "drf_", "incident_id": "inc_", "approval_id": "apr_"}
PLAIN_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")  # an unknown tool's name errors may repeat (docs/architecture.md)

T = TypeVar("T")


# --- strategies from the published input schemas -------------------------------------------------------------

CLIENT_CHARS = st.characters(codec="utf-8")  # what a client can encode: no lone surrogates
JSON_SCALARS = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)


@st.composite
def _planted(draw: st.DrawFn, max_size: int | None) -> str:
    text = CANARY + draw(st.text(CLIENT_CHARS, max_size=24))
    sample = draw(st.none() | st.sampled_from(SAMPLES))
    if sample is not None and (max_size is None or len(text) + len(sample.text) + 2 <= max_size):
        text = f"{text} {sample.text} "
    return text if max_size is None else text[:max_size]


# Strategies are built once per schema and reused: building them per draw costs more than the calls they make.
@cache
def planted(max_size: int | None = None) -> st.SearchStrategy[str]:
    """CANARY, some text, and often a line carrying a secret (dropped when it would not fit ``max_size``)."""
    return _planted(max_size)


@cache
def json_values(max_leaves: int = 12) -> st.SearchStrategy[Any]:
    return st.recursive(
        JSON_SCALARS | planted(),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(planted(40), inner, max_size=4),
        max_leaves=max_leaves,
    )


def nested(depth: int, leaf: Any) -> Any:
    value = leaf
    for level in range(depth):
        value = [value] if level % 2 else {CANARY: value}
    return value


def types_of(schema: dict[str, Any]) -> list[str]:
    kind = schema.get("type", [])
    return kind if isinstance(kind, list) else [kind]


def valid_value(name: str, schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    """A value the schema allows (and the server may still refuse on meaning, e.g. an unknown id)."""
    if "enum" in schema:
        return st.sampled_from([v for v in schema["enum"] if v is not None])
    options: list[st.SearchStrategy[Any]] = []
    for kind in types_of(schema):
        if kind == "string":
            text = planted(schema.get("maxLength"))
            if name in ID_PREFIXES:  # the shape ids have: found or not, never an error that echoes
                text = text | st.text("0123456789abcdef", min_size=16, max_size=16).map(ID_PREFIXES[name].__add__)
            options.append(text)
        elif kind == "integer":
            options.append(st.integers(schema.get("minimum", -(2**31)), schema.get("maximum", 2**31)))
        elif kind == "number":
            options.append(st.floats(allow_nan=False, allow_infinity=False))
        elif kind == "boolean":
            options.append(st.booleans())
        elif kind == "null":
            options.append(st.none())
        elif kind == "array":
            options.append(st.lists(valid_value("", schema.get("items", {})), max_size=4))
        elif kind == "object":
            options.append(st.dictionaries(planted(40), json_values(), max_size=4))
    return st.one_of(options) if options else json_values()


def invalid_value(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    """A value of the wrong type, out of range, too long, too deep, or JSON hidden in a string."""
    kinds = types_of(schema)
    options: list[st.SearchStrategy[Any]] = [json_values(), st.none()]
    if "string" in kinds or "enum" in schema:
        limit = schema.get("maxLength", 200)
        options += [
            st.integers(limit + 1, 3 * limit + 10).map(lambda n: CANARY + "x" * n),
            st.sampled_from([65_537, 120_000, 400_000]).map(lambda n: CANARY + "y" * n),
            planted(),
        ]
    if "integer" in kinds:
        options += [
            st.sampled_from([-1, -(2**63), 2**31, 2**63, 2**64, 10**30, 10**300]),
            st.integers(),
            st.floats(allow_nan=False, allow_infinity=False).filter(lambda f: not f.is_integer()),
            st.integers().map(str),
        ]
    if "array" in kinds or "object" in kinds:
        options += [
            st.integers(33, 120).map(lambda depth: nested(depth, CANARY)),
            # JSON inside a string, which the SDK unpacks for a non-string argument before validating it.
            st.integers(33, 600).map(lambda depth: json.dumps(nested(depth, CANARY))),
            st.sampled_from(['{"k":"' + CANARY + '\\ud800"}', '["' + CANARY + '\\udfff"]', '{"\\udc00":1}']),
        ]
    return st.one_of(options)


@dataclass(frozen=True)
class Call:
    tool: str
    arguments: Any
    family: str


FAMILIES = ("valid", "wrong value", "wrong values", "extra names", "missing or null")


@cache
def _tool_calls(tool: str, schema_json: str) -> st.SearchStrategy[Call]:
    schema = json.loads(schema_json)
    properties: dict[str, dict[str, Any]] = schema.get("properties", {})
    required = set(schema.get("required", ()))
    valid = {name: valid_value(name, sub) for name, sub in properties.items()}
    invalid = {name: invalid_value(sub) for name, sub in properties.items()}
    names = st.sampled_from(sorted(properties)) if properties else st.nothing()
    # A valid call of a slow tool runs the whole assessment (a second): the liveness check makes those.
    families = st.sampled_from(FAMILIES if tool not in SLOW_TOOLS else FAMILIES[1:])
    extra = st.dictionaries(planted(60), json_values(4), min_size=1, max_size=3)

    @st.composite
    def call(draw: st.DrawFn) -> Call:
        arguments = {n: draw(valid[n]) for n in properties if n in required or draw(st.integers(0, 2)) == 0}
        family = draw(families)
        if family in ("wrong value", "wrong values") and properties:
            for name in draw(st.lists(names, min_size=1, max_size=1 if family == "wrong value" else 4)):
                arguments[name] = draw(invalid[name])
        elif family == "extra names" or (family != "valid" and not properties):
            arguments.update({k: v for k, v in draw(extra).items() if k not in properties})
        elif family == "missing or null" and properties:
            name = draw(names)
            if name in arguments and draw(st.booleans()):
                del arguments[name]
            else:
                arguments[name] = None
        return Call(tool, arguments, family)

    return call()


def client_calls(tool: str, schema: dict[str, Any]) -> st.SearchStrategy[Call]:
    """Calls of ``tool`` a real client can send (JSON it can encode), from its published schema."""
    return _tool_calls(tool, json.dumps(schema, sort_keys=True))


SPLICE = "@@SPLICE@@"
LONE_SURROGATES = st.sampled_from(["\\ud800", "\\udbff", "\\udc00", "\\udfff", "\\ud83d", "\\ude00x", "\\udc00\\ud800"])
NOT_UTF8 = st.sampled_from(
    [b"\xff", b"\xfe\xff", b"\xc3", b"\xc3\x28", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xc0\xaf"]
)
BAD_NUMBERS = st.one_of(
    st.integers(21, 6_000).map(lambda n: b"9" * n),
    st.integers(21, 6_000).map(lambda n: b"-1" + b"0" * n),
    st.sampled_from(
        [b"1e400", b"-1e400", b"NaN", b"Infinity", b"-Infinity", b"1.5", b"1e-400", b"-0.0", b"0." + b"0" * 2000 + b"1"]
    ),
)


@dataclass(frozen=True)
class Frame:
    tool: str  # what the ledger counts it under
    name_json: bytes
    arguments_json: bytes | None
    family: str
    name: Any = None  # the name as sent, when it is a string a header can carry
    may_echo_name: bool = False


def spliced(arguments: dict[str, Any], place: str, *, in_string: bool) -> bytes:
    """``arguments`` as JSON with SPLICE at ``place``: inside a string value, as a key, or as the whole value."""
    if place == "key:":
        arguments = {**arguments, **({f"{CANARY}{SPLICE}": 1} if in_string else {f"{CANARY}key": SPLICE})}
    elif in_string:
        arguments = {**arguments, place: f"{CANARY}a{SPLICE}b"}
    else:
        arguments = {**arguments, place: SPLICE}
    return json.dumps(arguments).encode()


NOT_OBJECTS = st.sampled_from([1.5, 0, -1, True, False, "", CANARY, [], [CANARY], [{"a": 1}], 10**30])
DEPTHS = st.integers(33, 5_000)
BRACKETS = st.sampled_from([(b"[", b"]"), (b'{"a":', b"}")])
HUGE_SIZES = st.sampled_from([65_537, 300_000, 1_500_000])
IN_THE_NAME = st.integers(0, 5).map(lambda n: n == 5)
# Numbers (-0.0, 1e-400 are a valid offset of 0) and huge strings (a long context value) may be taken.
ALWAYS_REFUSED = frozenset({"not an object", "lone surrogate", "not UTF-8", "deep", "tool name"})
RAW_FAMILIES = ("not an object", "lone surrogate", "not UTF-8", "deep", "numbers", "huge string", "tool name")
# An unknown tool's name: any text or type; a plain one (lowercase, digits, underscores, no secret) may be repeated.
TOOL_NAMES = st.one_of(
    planted(),
    st.from_regex(PLAIN_NAME, fullmatch=True).map(lambda s: (CANARY + s)[:64]),
    st.text(CLIENT_CHARS, max_size=30),
    st.integers(0, 10**6).map(lambda n: f"{CANARY}{'x' * n}"[:20_000]),
    JSON_SCALARS,
    st.lists(JSON_SCALARS, max_size=2),
    st.just({"name": "get_status"}),
)


@cache
def _raw_frames(tool: str, schema_json: str, envelope: bool) -> st.SearchStrategy[Frame | bytes]:
    schema = json.loads(schema_json)
    calls = client_calls(tool, schema)
    places = st.sampled_from([*schema.get("properties", {}), "key:", f"{CANARY}extra"])
    families = st.sampled_from([*RAW_FAMILIES, "envelope"] if envelope else RAW_FAMILIES)

    @st.composite
    def frame(draw: st.DrawFn) -> Frame | bytes:
        family = draw(families)
        if family == "envelope":
            return draw(ENVELOPES)
        call = draw(calls)
        arguments = call.arguments if isinstance(call.arguments, dict) else {}
        place = draw(places)
        name_json = json.dumps(tool).encode()

        def whole(value: bytes) -> Frame:
            sent = spliced(arguments, place, in_string=False).replace(f'"{SPLICE}"'.encode(), value)
            return Frame(tool, name_json, sent, family, tool)

        def inside(value: bytes) -> Frame:
            sent = spliced(arguments, place, in_string=True).replace(SPLICE.encode(), value)
            return Frame(tool, name_json, sent, family, tool)

        if family == "not an object":
            return Frame(tool, name_json, json.dumps(draw(NOT_OBJECTS)).encode(), family, tool)
        if family == "lone surrogate":
            escape = draw(LONE_SURROGATES).encode()
            if draw(IN_THE_NAME):
                name = json.dumps(f"{CANARY}{SPLICE}").encode().replace(SPLICE.encode(), escape)
                return Frame("(unknown tool)", name, b"{}", family)
            return inside(escape)
        if family == "not UTF-8":
            return inside(draw(NOT_UTF8))
        if family == "deep":
            depth, (opener, closer) = draw(DEPTHS), draw(BRACKETS)
            return whole(opener * depth + json.dumps(CANARY).encode() + closer * depth)
        if family == "numbers":
            return whole(draw(BAD_NUMBERS))
        if family == "huge string":
            return whole(json.dumps(CANARY + "z" * draw(HUGE_SIZES)).encode())
        name = draw(TOOL_NAMES)
        plain = isinstance(name, str) and bool(PLAIN_NAME.fullmatch(name)) and not any(s in name for s in SECRETS)
        return Frame("(unknown tool)", json.dumps(name).encode(), json.dumps(arguments).encode(), family, name, plain)

    return frame()


def raw_frames(tool: str, schema: dict[str, Any], *, envelope: bool) -> st.SearchStrategy[Frame | bytes]:
    """Frames naming ``tool`` a client library would not send (or an unknown tool's, or with ``envelope``
    sometimes a body that is no request at all)."""
    return _raw_frames(tool, json.dumps(schema, sort_keys=True), envelope)


@st.composite
def _envelope(draw: st.DrawFn) -> bytes:
    params = {"name": "get_status", "arguments": {}}
    request: dict[str, Any] = {"jsonrpc": "2.0", "method": "tools/call", "params": params}
    kind = draw(st.sampled_from(["id", "params", "batch"]))
    if kind == "id":
        request["id"] = draw(st.sampled_from([1.5, True, False, None, [], [1], {}, {"id": CANARY}, -0.5]))
    elif kind == "params":
        request["id"] = CANARY
        request["params"] = draw(st.sampled_from([[], [1, 2], CANARY, 5, True]))
    else:
        return json.dumps([{**request, "id": 1}, {**request, "id": 2}]).encode()
    return json.dumps(request).encode()


# JSON that is no JSON-RPC request: an id of the wrong shape, params that are no object, a batch.
ENVELOPES = _envelope()


# --- answers and what breaks them ------------------------------------------------------------------------------


@dataclass
class Answer:
    """A tool result, or a JSON-RPC error (``code``), or nothing at all (``missing``)."""

    is_error: bool = False
    text: str = ""
    structured: Any = None
    code: int | None = None
    missing: bool = False

    @classmethod
    def of_result(cls, result: CallToolResult) -> Answer:
        text = "\n".join(getattr(block, "text", "") for block in result.content)
        return cls(bool(result.is_error), text, result.structured_content)

    @classmethod
    def of_message(cls, message: Any) -> Answer:
        if not isinstance(message, dict):
            return cls(missing=True)
        if "error" in message:
            error = message["error"]
            return cls(True, f"{error.get('message', '')} {json.dumps(error.get('data'))}", code=error.get("code"))
        result = message.get("result", {})
        text = "\n".join(str(block.get("text", "")) for block in result.get("content", []) if isinstance(block, dict))
        return cls(bool(result.get("isError")), text, result.get("structuredContent"))

    @property
    def refused(self) -> bool:
        return self.code is None and not self.missing and self.is_error


def secrets_in(text: str) -> list[str]:
    """The planted secrets found in ``text`` (their first characters only)."""
    return [secret[:8] + "…" for secret in SECRETS if secret in text]


def problem_with(answer: Answer, *, codes: frozenset[int] = frozenset({-32602}), may_echo: bool = False) -> str | None:
    """What is wrong with the answer to a fuzzed call, or None."""
    if answer.missing:
        return "no answer"
    body = answer.text if answer.is_error else f"{answer.text} {json.dumps(answer.structured)}"
    if answer.code is not None and answer.code not in codes:
        return f"JSON-RPC error {answer.code}: {answer.text[:300]}"
    if answer.refused and not ERROR_SHAPE.match(answer.text):
        return f"not the error shape: {answer.text[:300]}"
    if answer.text.startswith("internal_error"):
        return f"an internal error: {answer.text[:300]}"
    if not answer.is_error and answer.structured is None:
        return f"a result without structured content: {answer.text[:300]}"
    if found := [marker for marker in FORBIDDEN if marker in body]:
        return f"Python's or pydantic's text ({found}): {body[:300]}"
    if answer.is_error and CANARY in body and not may_echo:
        return f"echoed a value sent: {body[:300]}"
    if leaked := secrets_in(body):
        return f"a planted secret in the answer ({leaked})"
    return None


@dataclass
class Ledger:
    """What was tried, how it was answered, and what broke; per served data dir, the refusals to find audited."""

    cases: Counter[tuple[str, str]] = field(default_factory=Counter)
    families: Counter[tuple[str, str]] = field(default_factory=Counter)
    answers: Counter[tuple[str, str]] = field(default_factory=Counter)
    refusals: Counter[tuple[str, str]] = field(default_factory=Counter)  # (data dir, principal)
    reports: Counter[str] = field(default_factory=Counter)  # incidents reported, per data dir
    broke: list[str] = field(default_factory=list)
    ran: set[str] = field(default_factory=set)
    seconds: Counter[str] = field(default_factory=Counter)

    def record(self, target: Target, tool: str, family: str, answer: Answer, problem: str | None) -> None:
        self.cases[(target.transport, tool)] += 1
        self.families[(target.transport, family)] += 1
        kind = (
            "missing"
            if answer.missing
            else f"error {answer.code}"
            if answer.code is not None
            else ("refused" if answer.is_error else "ok")
        )
        self.answers[(target.transport, kind)] += 1
        if answer.refused:
            self.refusals[(target.data_dir, target.principal)] += 1
        if tool == "report_incident" and not answer.is_error and answer.code is None and not answer.missing:
            self.reports[target.data_dir] += 1
        if problem:
            self.broke.append(f"{target.name} {tool} [{family}]: {problem}")

    def total(self, transport: str | None = None) -> int:
        return sum(n for (t, _), n in self.cases.items() if transport in (None, t))


# --- the served monitors ----------------------------------------------------------------------------------------


@dataclass
class Target:
    name: str
    transport: str  # "stdio" or "http"
    data_dir: str  # "stdio" or "http": which served data dir keeps its audit rows
    principal: str
    tools: dict[str, dict[str, Any]]  # name -> published input schema
    send_calls: Callable[[list[Call]], list[Answer]] | None = None
    send_frames: Callable[[list[Frame | bytes]], list[Answer]] | None = None


UNLIMITED = {"principal_per_minute": 1_000_000, "principal_burst": 1_000_000}


@dataclass
class World:
    portal: BlockingPortal
    root: Path
    env: dict[str, str]
    config: Path
    receiver: WebhookReceiver
    targets: dict[str, Target] = field(default_factory=dict)
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    raw_stdio: RawStdio | None = None
    raw_http: dict[str, RawHttp] = field(default_factory=dict)
    logs: list[Path] = field(default_factory=list)
    ledger: Ledger = field(default_factory=Ledger)
    sessions: ExitStack = field(default_factory=ExitStack)
    stopped: bool = False

    def enter(self, manager: AbstractAsyncContextManager[T]) -> T:
        """Enter an async context (a client, a connection) in the portal's event loop until ``stop``."""
        return self.sessions.enter_context(self.portal.wrap_async_context_manager(manager))

    def data_dir(self, which: str) -> Path:
        return self.root / f"data-{which}"

    def cli(self, *args: str, which: str) -> subprocess.CompletedProcess[str]:
        location = ["--config", str(self.config), "--data-dir", str(self.data_dir(which))]
        return subprocess.run(
            [str(SCRIPT), *args, *location], env=self.env, capture_output=True, text=True, timeout=120, check=False
        )


def create_tokens(world: World, which: str) -> dict[str, str]:
    monitor = Monitor.open(config_path=world.config, data_dir=world.data_dir(which))
    try:
        operator = local_operator()
        return {
            OPERATOR_NAME: tokens.create_token(monitor, operator, name=OPERATOR_NAME, scopes=sorted(ALL_SCOPES)).secret,
            AGENT_NAME: tokens.create_token(
                monitor, operator, name=AGENT_NAME, scopes=sorted(DEFAULT_AGENT_SCOPES)
            ).secret,
        }
    finally:
        monitor.close()


def serve_http(world: World) -> str:
    """``incident-monitor serve --transport http --port 0``; the base URL it announces."""
    log = world.root / "http-server.log"
    world.logs.append(log)
    command = [str(SCRIPT), "serve", "--transport", "http", "--port", "0", "--config", str(world.config)]
    with log.open("ab") as errlog:
        process = subprocess.Popen(
            [*command, "--data-dir", str(world.data_dir("http"))],
            env=world.env,
            stdin=subprocess.DEVNULL,
            stderr=errlog,
        )
    world.processes.append(process)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if found := re.search(r"serving (http://127\.0\.0\.1:\d+)/mcp", log.read_text(errors="replace")):
            return found.group(1)
        assert process.poll() is None, log.read_text(errors="replace")
        time.sleep(0.1)
    raise AssertionError(f"the HTTP server did not start: {log.read_text(errors='replace')}")


async def gathered(send: Callable[[T], Awaitable[Answer]], items: list[T]) -> list[Answer]:
    """Every item sent at once over one connection; the answers in the items' order."""
    answers = [Answer(missing=True)] * len(items)

    async def run(index: int, item: T) -> None:
        answers[index] = await send(item)

    async with anyio.create_task_group() as group:
        for index, item in enumerate(items):
            group.start_soon(run, index, item)
    return answers


async def published_tools(client: Client) -> dict[str, dict[str, Any]]:
    return {tool.name: tool.input_schema for tool in (await client.list_tools()).tools}


def calls_through(world: World, client: Client) -> Callable[[list[Call]], list[Answer]]:
    async def one(call: Call) -> Answer:
        try:
            return Answer.of_result(await client.call_tool(call.tool, call.arguments))
        except MCPError as exc:
            return Answer(True, f"{exc.error.message} {exc.error.data!r}", code=exc.error.code)

    return lambda calls: world.portal.call(gathered, one, calls)


def frames_over_stdio(raw: RawStdio) -> Callable[[list[Frame | bytes]], list[Answer]]:
    def send(frames: list[Frame | bytes]) -> list[Answer]:
        sent: dict[str, bytes] = {}
        for frame in frames:
            assert isinstance(frame, Frame), "stdio cannot answer a frame with no id: the SDK drops it"
            request_id = raw.next_id()
            sent[request_id] = tool_call(request_id, frame.name_json, frame.arguments_json)
        answers = raw.exchange(sent)
        return [Answer.of_message(answers[request_id]) for request_id in sent]

    return send


def era_of(frame: Frame) -> Era:
    """2026-07-28 carries the tool's name in a header too: only names a header carries exactly go that way."""
    named = isinstance(frame.name, str) and frame.family not in ("lone surrogate", "not UTF-8")
    return "modern" if named and len(frame.arguments_json or b"") % 2 else "legacy"


def frames_over_http(world: World, raw: RawHttp) -> Callable[[list[Frame | bytes]], list[Answer]]:
    async def one(frame: Frame | bytes) -> Answer:
        if isinstance(frame, bytes):  # no JSON-RPC request: answered 400 with id null
            status, messages = await raw.post(frame, raw.headers("legacy", None))
            answer = Answer.of_message(messages[0] if messages else None)
            return answer if status == 400 else Answer(True, f"status {status}: {answer.text}", code=status)
        era = era_of(frame)
        request_id = f"raw-{id(frame)}"
        body = tool_call(request_id, frame.name_json, frame.arguments_json, era=era)
        status, messages = await raw.post(body, raw.headers(era, frame.name))
        mine = [m for m in messages if isinstance(m, dict) and m.get("id") == request_id]
        answer = Answer.of_message(mine[0] if mine else None)
        if status >= 500:
            return Answer(True, f"HTTP {status}", code=status)
        return answer

    return lambda frames: world.portal.call(gathered, one, frames)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("tool-input-fuzz")
    secret = new_webhook_secret()
    env = child_env(XDG_CONFIG_HOME=str(root / "xdg-config"), **{WEBHOOK_SECRET_VARIABLE: secret})
    with (
        pytest.MonkeyPatch.context() as patch,
        WebhookReceiver(secret) as receiver,
        start_blocking_portal() as portal,
    ):
        patch.setenv("XDG_CONFIG_HOME", env["XDG_CONFIG_HOME"])
        patch.setenv(WEBHOOK_SECRET_VARIABLE, secret)
        config = root / "config.toml"
        config.write_text(toml_text(flow_config(receiver.url, http={"rate_limits": UNLIMITED})))
        world = World(portal, root, env, config, receiver)
        try:
            _serve(world, create_tokens(world, "stdio"), create_tokens(world, "http"))
            yield world
        finally:
            stop(world)


def _serve(world: World, stdio_tokens: dict[str, str], http_tokens: dict[str, str]) -> None:
    portal = world.portal
    # HTTP: real clients of both eras, and raw frames as either principal.
    url = serve_http(world)
    for key, mode, label in ((OPERATOR_NAME, "auto", "http operator"), (AGENT_NAME, "legacy", "http agent")):
        headers = {"Authorization": f"Bearer {http_tokens[key]}"}
        http = world.enter(httpx2.AsyncClient(headers=headers, timeout=120))
        client = world.enter(Client(streamable_http_client(f"{url}/mcp", http_client=http), mode=mode))
        era = "2026-07-28" if mode == "auto" else "handshake"
        tools = portal.call(published_tools, client)
        world.targets[label] = Target(
            f"http client ({key}, {era})", "http", "http", key, tools, send_calls=calls_through(world, client)
        )
    raw_client = world.enter(httpx2.AsyncClient(timeout=120))
    for key, label, seen_by in (
        (OPERATOR_NAME, "http raw operator", "http operator"),
        (AGENT_NAME, "http raw agent", "http agent"),
    ):
        raw = RawHttp(raw_client, url, http_tokens[key])
        portal.call(raw.start)
        world.raw_http[key] = raw
        world.targets[label] = Target(
            f"http raw frames ({key}, both eras)",
            "http",
            "http",
            key,
            world.targets[seen_by].tools,
            send_frames=frames_over_http(world, raw),
        )

    serve_stdio = [str(SCRIPT), "serve", "--transport", "stdio", "--config", str(world.config)]
    serve_stdio += ["--data-dir", str(world.data_dir("stdio"))]
    # stdio, a real client: the full-scope operator token.
    log = world.root / "stdio-client-server.log"
    world.logs.append(log)
    errlog = world.enter(_open_log(log))
    env = {**world.env, "INCIDENT_MONITOR_TOKEN": stdio_tokens[OPERATOR_NAME]}
    params = StdioServerParameters(command=serve_stdio[0], args=serve_stdio[1:], env=env)
    client = world.enter(Client(stdio_client(params, errlog=errlog)))
    world.targets["stdio client"] = Target(
        "stdio client (operator token, 2026-07-28)",
        "stdio",
        "stdio",
        OPERATOR_NAME,
        portal.call(published_tools, client),
        send_calls=calls_through(world, client),
    )
    # stdio, raw lines: the default agent (no token) on the same data dir, with the tools it is shown.
    log = world.root / "stdio-raw-server.log"
    world.logs.append(log)
    world.raw_stdio = RawStdio(serve_stdio, world.env, log)
    world.targets["stdio raw"] = Target(
        "stdio raw frames (default agent, handshake)",
        "stdio",
        "stdio",
        LOCAL_AGENT_NAME,
        world.targets["http agent"].tools,
        send_frames=frames_over_stdio(world.raw_stdio),
    )


@asynccontextmanager
async def _open_log(path: Path) -> AsyncIterator[TextIO]:
    with path.open("a", encoding="utf-8") as log:
        yield log


def stop(world: World) -> None:
    """End every session and server (each writes its shutdown checkpoint); safe to call twice."""
    if world.stopped:
        return
    world.stopped = True
    world.sessions.close()  # the clients; the stdio client's server exits with its session
    if world.raw_stdio is not None:
        world.raw_stdio.close()
    for process in world.processes:
        process.terminate()
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# --- each bad shape, one by one ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Shape:
    """A call of a shape the brief names: what the refusal must say, and the audit row it must leave."""

    tool: str
    name_json: bytes
    arguments_json: bytes | None
    says: str  # in the answer's text
    action: str  # of the one audit row (None: an accepted call)
    decision: str = "rejected"

    def frame(self, request_id: str, era: Era) -> bytes:
        return tool_call(request_id, self.name_json, self.arguments_json, era=era)


def _args(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


DEEP_40 = '{"k":' * 39 + '"' + CANARY + '"' + "}" * 39
DEEP_5000 = "[" * 5_000 + "]" * 5_000
REPORT = f'"title":"{CANARY} t","source":"ci","event":"ci.fuzz"'
SHAPES: dict[str, Shape] = {
    "arguments 1.5": Shape(
        "list_incidents", b'"list_incidents"', b"1.5", "(arguments): must be a JSON object", "list_incidents"
    ),
    "arguments a list": Shape("list_incidents", b'"list_incidents"', b"[1,2]", "not an array", "list_incidents"),
    "arguments a string": Shape(
        "list_incidents", b'"list_incidents"', f'"{CANARY}"'.encode(), "not a string", "list_incidents"
    ),
    "arguments null": Shape("list_incidents", b'"list_incidents"', b"null", "", "list_incidents", "allow"),
    "a name it does not take": Shape(
        "list_incidents",
        b'"list_incidents"',
        f'{{"{CANARY}limit":5}}'.encode(),
        "1 argument the tool does not take",
        "list_incidents",
    ),
    "a wrong type": Shape(
        "list_incidents", b'"list_incidents"', f'{{"limit":"{CANARY}"}}'.encode(), "limit:", "list_incidents"
    ),
    "offset 2**63": Shape(
        "list_incidents", b'"list_incidents"', b'{"offset":9223372036854775808}', "offset", "list_incidents"
    ),
    "a negative offset": Shape("list_incidents", b'"list_incidents"', b'{"offset":-1}', "offset:", "list_incidents"),
    "limit 1.5": Shape("list_incidents", b'"list_incidents"', b'{"limit":1.5}', "limit:", "list_incidents"),
    "limit 1e400": Shape(
        "list_incidents", b'"list_incidents"', b'{"limit":1e400}', "limit: Input should be a finite", "list_incidents"
    ),
    "an integer of 5,000 digits": Shape(
        "list_incidents", b'"list_incidents"', b'{"limit":' + b"9" * 5_000 + b"}", "limit:", "list_incidents"
    ),
    "offset NaN": Shape("list_incidents", b'"list_incidents"', b'{"offset":NaN}', "offset:", "list_incidents"),
    "nesting 40 deep": Shape(
        "report_incident",
        b'"report_incident"',
        _args(f'{{{REPORT},"context":{DEEP_40}}}'),
        "context: nests deeper than 32",
        "report_incident",
    ),
    "nesting 5,000 deep": Shape(
        "report_incident",
        b'"report_incident"',
        _args(f'{{{REPORT},"context":{{"k":{DEEP_5000}}}}}'),
        "context: nests deeper",
        "report_incident",
    ),
    "a string of a million characters": Shape(
        "report_incident",
        b'"report_incident"',
        _args(f'{{{REPORT},"detail":"{CANARY}{"d" * 1_000_000}"}}'),
        "detail:",
        "report_incident",
    ),
    "a lone surrogate in a value": Shape(
        "get_draft",
        b'"get_draft"',
        _args(f'{{"draft_id":"{CANARY}\\ud800"}}'),
        "draft_id: holds text that is not valid Unicode",
        "get_draft",
    ),
    "a lone surrogate in a name": Shape(
        "list_incidents",
        b'"list_incidents"',
        _args('{"\\udc00x":1}'),
        "(an argument name): is not valid Unicode",
        "list_incidents",
    ),
    "a lone surrogate deep in context": Shape(
        "report_incident",
        b'"report_incident"',
        _args(f'{{{REPORT},"context":{{"a":[{{"b":"{CANARY}\\udfff"}}]}}}}'),
        "context: holds text",
        "report_incident",
    ),
    "a lone surrogate in JSON inside a string": Shape(
        "report_incident",
        b'"report_incident"',
        _args(
            f'{{{REPORT},"context":' + json.dumps(json.dumps({"k": CANARY}).replace(CANARY, CANARY + "\\ud800")) + "}"
        ),
        "context: holds text",
        "report_incident",
    ),
    "bytes that are not UTF-8": Shape(
        "get_draft",
        b'"get_draft"',
        f'{{"draft_id":"{CANARY}'.encode() + b"\xff\xfe" + b'"}',
        "draft_id: holds text",
        "get_draft",
    ),
    "an id of the wrong shape": Shape(
        "get_draft",
        b'"get_draft"',
        f'{{"draft_id":"{CANARY}"}}'.encode(),
        "draft_id: not an id of this monitor",
        "get_draft",
    ),
    "an unknown tool": Shape(
        "(unknown)",
        b'"delete_everything"',
        b"{}",
        "permission_denied: unknown tool 'delete_everything'",
        "tool:delete_everything",
        "deny",
    ),
    "an unknown tool named with a secret": Shape(
        "(unknown)",
        json.dumps(f"x {SAMPLES[0].secret}").encode(),
        b"{}",
        "unknown tool '(invalid)'",
        "tool:(invalid)",
        "deny",
    ),
    "a tool name with a lone surrogate": Shape(
        "(unknown)", _args(f'"{CANARY}\\ud800"'), b"{}", "unknown tool '(invalid)'", "tool:(invalid)", "deny"
    ),
    "a tool name that is no string": Shape(
        "(unknown)", b"5", b"{}", "unknown tool '(invalid)'", "tool:(invalid)", "deny"
    ),
}
# What a header can carry exactly: 2026-07-28 frames repeat the tool's name in Mcp-Name.
HEADER_SAFE = {
    name for name, shape in SHAPES.items() if shape.name_json.startswith(b'"') and b"\\u" not in shape.name_json
}


def shape_answer(world: World, transport: str, shape: Shape) -> tuple[Answer, str, str]:
    """Send ``shape`` over a raw transport as the default agent; the answer, and the principal and data dir."""
    if transport == "stdio":
        raw = world.raw_stdio
        assert raw is not None
        request_id = raw.next_id()
        return (
            Answer.of_message(raw.exchange({request_id: shape.frame(request_id, "legacy")})[request_id]),
            LOCAL_AGENT_NAME,
            "stdio",
        )
    era: Era = "modern" if transport.endswith("2026-07-28") else "legacy"
    target = world.raw_http[AGENT_NAME]
    name = json.loads(shape.name_json) if era == "modern" else None

    async def post() -> tuple[int, list[Any]]:
        return await target.post(shape.frame("shape-1", era), target.headers(era, name))

    status, messages = world.portal.call(post)
    assert status == 200, (status, messages)
    return Answer.of_message(next((m for m in messages if m.get("id") == "shape-1"), None)), AGENT_NAME, "http"


SHAPE_CASES = [
    pytest.param(transport, name, id=f"{transport}: {name}")
    for transport in ("stdio", "http handshake", "http 2026-07-28")
    for name in SHAPES
    if transport != "http 2026-07-28" or name in HEADER_SAFE
]


@pytest.mark.parametrize(("transport", "name"), SHAPE_CASES)
def test_each_bad_shape_is_one_audited_refusal(world: World, transport: str, name: str) -> None:
    shape = SHAPES[name]
    which = "stdio" if transport == "stdio" else "http"
    head = audit_head(world, which)
    answer, principal, _ = shape_answer(world, transport, shape)
    world.ledger.record(
        world.targets["stdio raw" if which == "stdio" else "http raw agent"], shape.tool, name, answer, None
    )

    assert problem_with(answer, may_echo=shape.action == "tool:delete_everything") is None, answer
    assert shape.says in answer.text, answer.text
    assert answer.is_error is (shape.decision != "allow")
    [row] = [r for r in audit_rows(world, which, after=head) if r.principal == principal]
    assert (row.action, row.decision) == (shape.action, shape.decision)
    assert CANARY not in f"{row.reasons} {row.subject_id} {row.run_id}"
    assert secrets_in(repr(row)) == []


def test_a_frame_that_is_no_request_is_refused_over_http_without_repeating_it(world: World) -> None:
    target = world.raw_http[AGENT_NAME]
    bodies = [
        {"jsonrpc": "2.0", "id": 1.5, "method": "tools/call", "params": {"name": "get_status"}},
        {"jsonrpc": "2.0", "id": {"x": CANARY}, "method": "tools/call", "params": {"name": "get_status"}},
        {"jsonrpc": "2.0", "id": True, "method": "tools/call", "params": {"name": "get_status"}},
        {"jsonrpc": "2.0", "id": "x", "method": "tools/call", "params": [CANARY]},
        [{"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "get_status"}}],
    ]
    for era in ("legacy", "modern"):
        for body in bodies:

            async def post(body: Any = body, era: Era = era) -> tuple[int, list[Any]]:
                return await target.post(json.dumps(body).encode(), target.headers(era, "get_status"))

            status, [message] = world.portal.call(post)
            world.ledger.record(
                world.targets["http raw agent"], "(no request)", "envelope", Answer.of_message(message), None
            )
            # Before: the handshake era answered params of the wrong shape with pydantic's text quoting the value,
            # and took an id of the wrong shape for a notification (202, no answer at all).
            assert (status, message["id"], message["error"]["code"]) == (400, None, -32600), message
            assert CANARY not in json.dumps(message) and "pydantic" not in json.dumps(message)


# --- the property tests -----------------------------------------------------------------------------------------


def run_batches(world: World, test: str, target_names: list[str], check: Callable[[], None]) -> None:
    """Run the Hypothesis test, print what was tried and broke, and fail on anything that broke."""
    world.ledger.ran.add(test)
    before = len(world.ledger.broke)
    started = time.monotonic()
    try:
        check()
    finally:
        world.ledger.seconds[test] += time.monotonic() - started
        report(world, test, target_names)
    assert_alive(world, target_names)
    assert world.ledger.broke[before:] == []
    for which in sorted({world.targets[name].data_dir for name in target_names}):
        # While the servers run: the WAL holds the latest pages (a checkpoint at shutdown folds it away).
        assert secrets_in(files(world.data_dir(which))) == [], f"a planted secret in the {which} data dir"


def report(world: World, test: str, target_names: list[str]) -> None:
    ledger = world.ledger
    transports = sorted({world.targets[name].transport for name in target_names})
    for transport in transports:
        per_tool = {tool: n for (t, tool), n in sorted(ledger.cases.items()) if t == transport}
        per_family = {family: n for (t, family), n in sorted(ledger.families.items()) if t == transport}
        answers = {kind: n for (t, kind), n in sorted(ledger.answers.items()) if t == transport}
        print(
            f"\ntool input fuzz [{test}] {transport}: {ledger.total(transport)} calls so far; broke "
            f"{len(ledger.broke)}; {ledger.seconds[test]:.0f} s\n  per tool {per_tool}\n  per family {per_family}"
            f"\n  answers {answers}"
        )


def assert_alive(world: World, target_names: list[str]) -> None:
    """Every server still answers: a valid call over each target (the slow tools' valid runs are made here)."""
    for process in world.processes:
        assert process.poll() is None, "the HTTP server died"
    if world.raw_stdio is not None:
        assert world.raw_stdio.alive(), "the stdio server died"
    for name in target_names:
        target = world.targets[name]
        if target.send_calls is not None:
            calls = [Call(tool, {}, "valid") for tool in ("get_status", *sorted(SLOW_TOOLS & set(target.tools)))]
            answers = target.send_calls(calls)
        else:
            assert target.send_frames is not None
            answers = target.send_frames([Frame("get_status", b'"get_status"', b"{}", "valid", "get_status")])
        for answer in answers:
            assert problem_with(answer) is None and not answer.is_error, (target.name, answer)


def batches(
    world: World, names: list[str], per_tool: Callable[[str, dict[str, Any]], st.SearchStrategy[T]]
) -> st.SearchStrategy[tuple[str, list[T]]]:
    """A target and CALLS_PER_EXAMPLE of its calls, sent together: its tools in a random order (each about
    as often as the others; Hypothesis would otherwise favour the first), each call drawn from its schema."""
    strategies = {name: {t: per_tool(t, s) for t, s in world.targets[name].tools.items()} for name in names}
    orders = {name: st.permutations(sorted(world.targets[name].tools)) for name in names}
    targets = st.sampled_from(names)

    @st.composite
    def batch(draw: st.DrawFn) -> tuple[str, list[T]]:
        name = draw(targets)
        order = draw(orders[name])
        return name, [draw(strategies[name][order[i % len(order)]]) for i in range(CALLS_PER_EXAMPLE)]

    return batch()


def fuzz_clients(world: World, test: str, names: list[str]) -> None:
    @settings(PROFILE, max_examples=EXAMPLES, phases=GENERATE_ONLY)
    @given(batch=batches(world, names, client_calls))
    def check(batch: tuple[str, list[Call]]) -> None:
        name, calls = batch
        target = world.targets[name]
        assert target.send_calls is not None
        problems = []
        for call, answer in zip(calls, target.send_calls(calls), strict=True):
            problem = problem_with(answer)
            world.ledger.record(target, call.tool, call.family, answer, problem)
            if problem:
                problems.append(f"{call.tool}({json.dumps(call.arguments)[:300]}): {problem}")
        assert problems == []

    run_batches(world, test, names, check)


def fuzz_frames(world: World, test: str, names: list[str], *, envelope: bool) -> None:
    @settings(PROFILE, max_examples=EXAMPLES, phases=GENERATE_ONLY)
    @given(batch=batches(world, names, lambda tool, schema: raw_frames(tool, schema, envelope=envelope)))
    def check(batch: tuple[str, list[Frame | bytes]]) -> None:
        name, sent = batch
        target = world.targets[name]
        assert target.send_frames is not None
        problems = []
        for frame, answer in zip(sent, target.send_frames(sent), strict=True):
            if isinstance(frame, bytes):
                problem = problem_with(answer, codes=frozenset({-32600}))
                if problem is None and answer.code != -32600:
                    problem = f"a frame that is no request was answered as one: {answer.text[:200]}"
                world.ledger.record(target, "(no request)", "envelope", answer, problem)
            else:
                problem = problem_with(answer, may_echo=frame.may_echo_name)
                if problem is None and frame.family in ALWAYS_REFUSED and not answer.is_error:
                    problem = f"accepted: {answer.text[:200]}"
                world.ledger.record(target, frame.tool, frame.family, answer, problem)
            if problem:
                shown = (
                    frame if isinstance(frame, bytes) else frame.name_json[:100] + b" " + (frame.arguments_json or b"")
                )
                problems.append(f"{shown[:300]!r}: {problem}")
        assert problems == []

    run_batches(world, test, names, check)


def test_real_clients_over_stdio(world: World) -> None:
    fuzz_clients(world, "stdio clients", ["stdio client"])


def test_real_clients_over_http(world: World) -> None:
    fuzz_clients(world, "http clients", ["http operator", "http agent"])


def test_raw_frames_over_stdio(world: World) -> None:
    fuzz_frames(world, "stdio frames", ["stdio raw"], envelope=False)


def test_raw_frames_over_http(world: World) -> None:
    fuzz_frames(world, "http frames", ["http raw operator", "http raw agent"], envelope=True)


# --- after the fuzz ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AuditRow:
    principal: str
    action: str
    decision: str
    reasons: str
    subject_id: str | None
    run_id: str | None


def read_only(world: World, which: str) -> sqlite3.Connection:
    """The served database, read without writing (opening a Monitor would append a checkpoint row)."""
    return sqlite3.connect(f"file:{world.data_dir(which) / DATABASE_FILENAME}?mode=ro", uri=True)


def audit_rows(world: World, which: str, after: int = 0) -> list[AuditRow]:
    with closing(read_only(world, which)) as database:
        query = "SELECT principal, action, decision, reasons, subject_id, run_id FROM audit_events WHERE seq > ?"
        return [AuditRow(*row) for row in database.execute(query + " ORDER BY seq", (after,))]


def audit_head(world: World, which: str) -> int:
    with closing(read_only(world, which)) as database:
        return int(database.execute("SELECT coalesce(max(seq), 0) FROM audit_events").fetchone()[0])


def incident_fingerprints(world: World, which: str) -> list[str]:
    with closing(read_only(world, which)) as database:
        return [fingerprint for (fingerprint,) in database.execute("SELECT fingerprint FROM incidents")]


def test_after_the_fuzz_every_refusal_is_audited_and_nothing_paged_or_leaked(world: World) -> None:
    stop(world)
    ledger = world.ledger
    all_ran = ledger.ran >= {"stdio clients", "http clients", "stdio frames", "http frames"}
    print(
        f"\ntool input fuzz: {ledger.total()} calls (stdio {ledger.total('stdio')}, http {ledger.total('http')}), "
        f"broke {len(ledger.broke)}; {sum(ledger.seconds.values()):.0f} s of fuzzing; "
        f"{EXAMPLES} examples of {CALLS_PER_EXAMPLE} calls per test"
    )
    if all_ran:
        assert ledger.total() >= 10_000

    for which in ("stdio", "http"):
        rows = audit_rows(world, which)
        for principal in (OPERATOR_NAME, AGENT_NAME, LOCAL_AGENT_NAME):
            # One row per refused call: the tool results that were errors, and no more.
            refused = [r for r in rows if r.principal == principal and r.decision != "allow"]
            assert len(refused) == ledger.refusals[(which, principal)], (
                which,
                principal,
                Counter(r.action for r in refused),
            )
            # A refusal keeps no value sent, but an unknown tool's plain name (``tool:<name>``, docs/architecture.md)
            # and the caller's run_id (redacted; it links the refusal to its run's timeline, docs/self-monitoring.md).
            stored = [r for r in refused if CANARY in f"{r.reasons} {r.subject_id}"]
            stored += [
                r for r in refused if CANARY in r.action and not PLAIN_NAME.fullmatch(r.action.removeprefix("tool:"))
            ]
            assert stored == [], f"a refusal's audit row keeps a value sent: {stored[:3]}"
        assert secrets_in(repr(rows)) == [], f"a planted secret in a {which} audit row"
        assert [r for r in rows if r.decision == "error"] == [], "a call failed inside the server"
        fingerprints = incident_fingerprints(world, which)
        assert [f for f in fingerprints if f.startswith("selfmon:")] == [], "a malformed call paged someone"
        assert len(fingerprints) <= ledger.reports[which], "an incident that no accepted report made"
        verified = world.cli("audit", "verify", which=which)
        assert verified.returncode == 0, verified.stdout + verified.stderr

    assert world.receiver.deliveries == [], "something was delivered"
    for which in ("stdio", "http"):
        telemetry = world.data_dir(which) / "telemetry.jsonl"
        assert not telemetry.exists() or telemetry.read_text() == "", "something was delivered"
        assert (world.data_dir(which) / DATABASE_FILENAME).exists()
        assert secrets_in(files(world.data_dir(which))) == [], f"a planted secret in the {which} data dir"
    logs = "\n".join(log.read_text(errors="replace") for log in world.logs)
    assert secrets_in(logs) == [], "a planted secret in a server log"
    assert "Traceback" not in logs, logs[logs.index("Traceback") - 2000 :][:6000]
