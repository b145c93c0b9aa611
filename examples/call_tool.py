"""Call one Incident Monitor tool over Streamable HTTP with the `mcp` SDK's client, and print its result.

    python examples/call_tool.py TOOL [name=value ...] [--get FIELD] [--url URL]

Arguments are ``name=value`` pairs; a value that parses as JSON (numbers, lists, ``true``) is sent as
JSON, anything else as a string. The bearer token comes from ``INCIDENT_MONITOR_TOKEN``. The structured
result is printed as JSON, or with ``--get FIELD`` just that field (for shell variables). A tool error
is printed to stderr and the exit status is 1.

    DRAFT=$(python examples/call_tool.py report_incident title="Smoke test failed" source=ci \\
        event=ci.smoke.failed --get draft_id)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

import anyio
import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client


def tool_arguments(pairs: list[str]) -> dict[str, Any]:
    arguments: dict[str, Any] = {}
    for pair in pairs:
        name, sep, raw = pair.partition("=")
        if not sep or not name:
            raise SystemExit(f"argument {pair!r}: write it as name=value")
        try:
            arguments[name] = json.loads(raw)
        except json.JSONDecodeError:
            arguments[name] = raw
    return arguments


async def call(url: str, token: str | None, tool: str, arguments: dict[str, Any]) -> tuple[bool, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=60) as http,
        Client(streamable_http_client(url, http_client=http)) as client,
    ):
        result = await client.call_tool(tool, arguments)
    if result.is_error:
        return False, " ".join(getattr(block, "text", "") for block in result.content)
    return True, result.structured_content


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tool")
    parser.add_argument("arguments", nargs="*", help="name=value pairs")
    parser.add_argument("--get", default=None, help="print only this field of the result (a.b for nested ones)")
    parser.add_argument("--url", default="http://127.0.0.1:8000/mcp")
    args = parser.parse_args(argv)
    token = os.environ.get("INCIDENT_MONITOR_TOKEN")
    ok, result = anyio.run(call, args.url, token, args.tool, tool_arguments(args.arguments))
    if not ok:
        print(result, file=sys.stderr)
        return 1
    if args.get is not None:
        value: Any = result
        for key in args.get.split("."):  # receipt.status reaches into a nested result
            value = value.get(key) if isinstance(value, dict) else None
        if value is None:
            print(f"{args.tool} returned no field {args.get!r}; it returned: {json.dumps(result)}", file=sys.stderr)
            return 1
        print(value if isinstance(value, str) else json.dumps(value))
        return 0
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
