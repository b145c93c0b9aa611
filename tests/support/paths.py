"""Where things are: the repository root, its examples and the pinned Node tools."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src" / "incident_monitor"
EXAMPLES = ROOT / "examples"
NODE_TOOLS = ROOT / "tools" / "node" / "node_modules"
TESTS = ROOT / "tests"
