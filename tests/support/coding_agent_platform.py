"""The examples' reference coding-agent platform (seed 002) doubles as the tests' platform."""

from __future__ import annotations

import sys

from support.paths import EXAMPLES

sys.path.insert(0, str(EXAMPLES))
from coding_agent_platform import CodingAgentPlatform, Request, Run

__all__ = ["CodingAgentPlatform", "Request", "Run"]
