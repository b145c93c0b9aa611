from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# The examples' webhook receiver doubles as the tests' receiver.
sys.path.insert(0, str(ROOT / "examples"))


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
