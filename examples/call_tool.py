"""Call one Incident Monitor tool over Streamable HTTP with the `mcp` SDK's client, and print its result.

    python examples/call_tool.py TOOL [name=value ...] [--get FIELD] [--url URL | --stdio]
    python examples/call_tool.py --list [--url URL | --stdio]

``--stdio`` starts ``incident-monitor serve --transport stdio`` instead (as a local agent's client does;
``INCIDENT_MONITOR_CONFIG``, ``_DATA_DIR`` and ``_TOKEN`` pass through). ``--list`` prints the tool names.

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
from mcp import Client, StdioServerParameters
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


async def call(url: str | None, token: str | None, tool: str | None, arguments: dict[str, Any]) -> tuple[bool, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx2.AsyncClient(headers=headers, timeout=60) as http:
        if url is None:
            server = StdioServerParameters(
                command="incident-monitor", args=["serve", "--transport", "stdio"], env={**os.environ}
            )
            transport: Any = server
        else:
            transport = streamable_http_client(url, http_client=http)
        async with Client(transport) as client:
            if tool is None:
                return True, [t.name for t in (await client.list_tools()).tools]
            result = await client.call_tool(tool, arguments)
    if result.is_error:
        return False, " ".join(getattr(block, "text", "") for block in result.content)
    return True, result.structured_content


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tool", nargs="?")
    parser.add_argument("arguments", nargs="*", help="name=value pairs")
    parser.add_argument("--get", default=None, help="print only this field of the result (a.b for nested ones)")
    parser.add_argument("--url", default="http://127.0.0.1:8000/mcp")
    parser.add_argument("--stdio", action="store_true", help="start the server over stdio instead of --url")
    parser.add_argument("--list", action="store_true", help="print the names of the tools you may call")
    args = parser.parse_args(argv)
    if args.tool is None and not args.list:
        parser.error("name a TOOL, or pass --list")
    token = os.environ.get("INCIDENT_MONITOR_TOKEN")
    tool = None if args.list else args.tool
    url = None if args.stdio else args.url
    ok, result = anyio.run(call, url, token, tool, tool_arguments(args.arguments))
    if args.list:
        print("\n".join(result))
        return 0
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
