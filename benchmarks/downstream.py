"""The downstream guard's overhead: server-memory's ``read_graph`` through the monitor vs called directly.

    python -m benchmarks.downstream [--quick] [--calls N]

Both sides in one run on the same machine (the ratio style of benchmarks/run.py): the governed side is
``incident-monitor serve --transport stdio`` with server-memory as a ``[[downstream]]`` (scope gate,
governed_call with its audit row, redaction and cap, then the downstream call); the floor is a stdio
session with server-memory itself. Target: governed calls/s >= 0.7x the direct ones.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.run import ROOT, SERVER_SCRIPT, Result, measure, ratio_result, stdio_session

NODE_BIN = ROOT / "tools" / "node" / "node_modules" / ".bin"
TARGET = 0.7
GRAPH = [
    {"type": "entity", "name": f"service-{i}", "entityType": "service", "observations": [f"owned by team {i % 7}"]}
    for i in range(20)
]

CONFIG = """
[[downstream]]
id = "memory"
command = "{node_bin}/mcp-server-memory"
env = {{ MEMORY_FILE_PATH = "{memory}", PATH = "{node_bin}:/usr/bin:/bin" }}
read_tools = ["read_graph", "search_nodes", "open_nodes"]
"""


def prepare(work: Path) -> dict[str, str]:
    memory = work / "memory.jsonl"
    memory.write_text("".join(json.dumps(e) + "\n" for e in GRAPH))
    (work / "config.toml").write_text(CONFIG.format(node_bin=NODE_BIN, memory=memory))
    env = {
        "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
        "HOME": str(work),
        "INCIDENT_MONITOR_CONFIG": str(work / "config.toml"),
        "INCIDENT_MONITOR_DATA_DIR": str(work / "data"),
        "MEMORY_FILE_PATH": str(memory),
    }
    token = subprocess.run(
        [str(SERVER_SCRIPT), "tokens", "create", "--name", "bench", "--scopes", "read,downstream_read"],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    return {**env, "INCIDENT_MONITOR_TOKEN": token}


async def read_graph_calls(command: list[str], tool: str, env: dict[str, str], log: Path, calls: int) -> tuple:
    async with stdio_session(command, env, log) as client:

        async def call(_: int) -> None:
            result = await client.call_tool(tool, {})
            if result.is_error or "service-19" not in str(result.content):
                raise RuntimeError(f"{tool} failed: {result.content}")

        await call(0)  # warm-up: the first call pays for imports and the graph file
        return await measure([call], calls)


async def bench(work: Path, calls: int) -> Result:
    env = prepare(work)
    governed = await read_graph_calls(
        [str(SERVER_SCRIPT), "serve", "--transport", "stdio"], "memory__read_graph", env, work / "governed.log", calls
    )
    direct = await read_graph_calls(
        [str(NODE_BIN / "mcp-server-memory")], "read_graph", env, work / "direct.log", calls
    )
    return ratio_result("read_graph via the guard, stdio", governed, direct, "server-memory called directly", TARGET)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.downstream", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="30 calls a side: proves the harness")
    parser.add_argument("--calls", type=int, default=None)
    args = parser.parse_args(argv)
    calls = args.calls or (30 if args.quick else 500)
    work = Path(tempfile.mkdtemp(prefix="incident-monitor-bench-downstream-"))
    try:
        result = asyncio.run(bench(work, calls))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    assert result.floor is not None
    print(
        f"{result.name}: {result.governed.calls_per_s} calls/s governed, {result.floor.calls_per_s} direct, "
        f"median {result.governed.median_ms} vs {result.floor.median_ms} ms; ratio {result.ratio} "
        f"(target {result.target}) {'PASS' if result.passed else 'MISS'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
