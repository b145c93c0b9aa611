"""The uvicorn stack the HTTP server runs on; the benchmark floors (benchmarks/floors.py) run on the same.

httptools (uvicorn's C HTTP/1.1 parser) and uvloop (a libuv event loop) are dependencies: against
h11 on asyncio they raised the intake endpoint from ~1,000-1,400 to ~1,900-2,100 requests/s with
the report service stubbed out, and a bare Starlette endpoint from ~2,000-3,100 to ~6,500-7,200.
"""

from __future__ import annotations

import sys
from typing import Literal

UVICORN_HTTP: Literal["httptools"] = "httptools"
# uvloop does not build on Windows; asyncio's loop there.
UVICORN_LOOP: Literal["uvloop", "asyncio"] = "asyncio" if sys.platform == "win32" else "uvloop"
