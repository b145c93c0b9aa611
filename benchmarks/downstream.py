"""The downstream guard's overhead: server-memory's ``read_graph`` through the monitor vs called directly.

    python -m benchmarks.downstream [--quick] [--calls N]

Both sides in one run on the same machine (the ratio style of benchmarks/run.py): the governed side is
``incident-monitor serve --transport stdio`` with server-memory as a ``[[downstream]]`` (scope gate,
governed_call with its audit row, redaction and cap, then the downstream call); the floor is a stdio
session with server-memory itself. Both sessions stay open; each round runs 1 client, then 8 calls in flight,
on each side in turn, so both see the same machine. Target: governed calls/s >= 0.7x the direct ones.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path

import psutil
from mcp import Client

from benchmarks.run import ROOT, SERVER_SCRIPT, Figures, Result, measure, stdio_session

NODE_BIN = ROOT / "tools" / "node" / "node_modules" / ".bin"
TARGET = 0.7
CONCURRENT = 8  # calls in flight on one stdio session (an agent running tools in parallel)
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
        # Another checkout's code against this one's (before -> after comparisons), when given.
        **({"PYTHONPATH": os.environ["PYTHONPATH"]} if os.environ.get("PYTHONPATH") else {}),
    }
    token = subprocess.run(
        [str(SERVER_SCRIPT), "tokens", "create", "--name", "bench", "--scopes", "read,downstream_read"],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    return {**env, "INCIDENT_MONITOR_TOKEN": token}


def read_graph_call(client: Client, tool: str) -> Callable[[int], Awaitable[None]]:
    async def call(_: int) -> None:
        result = await client.call_tool(tool, {})
        if result.is_error or "service-19" not in str(result.content):
            raise RuntimeError(f"{tool} failed: {result.content}")

    return call


def merged(rounds: list[tuple[list[float], float]]) -> tuple[list[float], float]:
    """Every round's latencies, and their walls summed: calls/s over all the rounds of one side."""
    return [x for latencies, _ in rounds for x in latencies], sum(wall for _, wall in rounds)


def cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


def server_processes() -> dict[str, psutil.Process]:
    """Our server, the server-memory it guards, and the one called directly (children of this process)."""
    found: dict[str, psutil.Process] = {}
    for child in psutil.Process().children():
        command = " ".join(child.cmdline())
        if "serve" in command and "stdio" in command:
            found["monitor"] = child
            guarded = [c for c in child.children(recursive=True) if "mcp-server-memory" in " ".join(c.cmdline())]
            found["guarded server-memory"] = guarded[0]
        elif "mcp-server-memory" in command:
            found["direct server-memory"] = child
    return found


async def bench(work: Path, calls: int, rounds: int) -> list[Result]:
    """Both sessions open at once; per round, 1 client then 8 in flight, governed and direct alternating.

    Also the CPU time each server process spent per call (psutil), which bounds throughput on a shared machine
    whatever the wall clock says.
    """
    env = prepare(work)
    governed_command = [str(SERVER_SCRIPT), "serve", "--transport", "stdio"]
    direct_command = [str(NODE_BIN / "mcp-server-memory")]
    per_round = max(1, calls // rounds)
    figures: dict[tuple[str, int], list[tuple[list[float], float]]] = {}
    cpu: dict[tuple[str, int], dict[str, float]] = {}
    async with (
        stdio_session(governed_command, env, work / "governed.log") as governed,
        stdio_session(direct_command, env, work / "direct.log") as direct,
    ):
        sides = {"governed": (governed, "memory__read_graph"), "direct": (direct, "read_graph")}
        for client, tool in sides.values():  # warm-up: imports, the graph file, the downstream session
            for _ in range(20):
                await read_graph_call(client, tool)(0)
        processes = server_processes()
        for _ in range(rounds):
            for concurrency in (1, CONCURRENT):
                for side, (client, tool) in sides.items():
                    before = {name: cpu_seconds(p) for name, p in processes.items()}
                    result = await measure([read_graph_call(client, tool)] * concurrency, per_round)
                    figures.setdefault((side, concurrency), []).append(result)
                    spent = cpu.setdefault((side, concurrency), {})
                    for name, p in processes.items():
                        spent[name] = spent.get(name, 0.0) + cpu_seconds(p) - before[name]
    results = []
    for concurrency, label in ((1, "1 client"), (CONCURRENT, f"{CONCURRENT} concurrent")):
        g = Figures.of(*merged(figures[("governed", concurrency)]))
        f = Figures.of(*merged(figures[("direct", concurrency)]))
        assert g.calls_per_s and f.calls_per_s
        ratio = round(g.calls_per_s / f.calls_per_s, 3)
        result = Result(
            f"read_graph via the guard, stdio, {label}",
            g,
            f,
            "server-memory called directly",
            ratio,
            "calls/s governed ÷ direct",
            f">= {TARGET}x direct",
            ratio >= TARGET,
        )
        n = per_round * rounds
        governed_cpu, direct_cpu = cpu[("governed", concurrency)], cpu[("direct", concurrency)]
        result.extra["cpu_ms_per_call"] = {
            "monitor (governed side)": round(governed_cpu["monitor"] / n * 1000, 3),
            "server-memory behind the monitor": round(governed_cpu["guarded server-memory"] / n * 1000, 3),
            "server-memory called directly": round(direct_cpu["direct server-memory"] / n * 1000, 3),
        }
        results.append(result)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.downstream", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="40 calls a side and concurrency, 2 rounds: the harness")
    parser.add_argument("--calls", type=int, default=None, help="per side and concurrency, over all rounds (1,000)")
    parser.add_argument("--rounds", type=int, default=None, help="governed and direct alternating (5)")
    args = parser.parse_args(argv)
    calls = args.calls or (40 if args.quick else 1000)
    rounds = args.rounds or (2 if args.quick else 5)
    work = Path(tempfile.mkdtemp(prefix="incident-monitor-bench-downstream-"))
    try:
        results = asyncio.run(bench(work, calls, rounds))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for result in results:
        assert result.floor is not None
        print(
            f"{result.name}: {result.governed.calls_per_s} calls/s governed, {result.floor.calls_per_s} direct, "
            f"median {result.governed.median_ms} vs {result.floor.median_ms} ms, p99 {result.governed.p99_ms} vs "
            f"{result.floor.p99_ms} ms; ratio {result.ratio} (target {result.target}) "
            f"{'PASS' if result.passed else 'MISS'}; CPU ms per call: {result.extra['cpu_ms_per_call']}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
