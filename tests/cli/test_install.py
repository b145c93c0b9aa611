"""The wheel as a user installs it: only the package inside, and a working ``incident-monitor`` from it.

Builds the wheel offline (``pip wheel --no-build-isolation`` with the dev extras' hatchling), installs it
into a fresh venv (its dependencies from the package index), then runs ``--version``, ``init`` and a
stdio ``tools/list`` through the client entry ``init`` printed, started from another directory.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import anyio
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client

from incident_monitor import __version__
from support.paths import ROOT

DIST_INFO = re.compile(r"^incident_monitor_mcp-[^/]+\.dist-info/")
BIN = "Scripts" if os.name == "nt" else "bin"


def run(*argv: str | Path, timeout: float = 600, **kwargs: object) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [str(a) for a in argv], capture_output=True, text=True, timeout=timeout, check=False, **kwargs
    )  # type: ignore[call-overload]
    assert done.returncode == 0, f"{argv} failed:\n{done.stdout}\n{done.stderr}"
    return done


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    run(sys.executable, "-m", "pip", "wheel", ROOT, "--no-deps", "--no-build-isolation", "--quiet", "-w", out)
    [built] = out.glob("incident_monitor_mcp-*.whl")
    return built


def test_the_wheel_holds_only_the_package_and_its_metadata(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()

    strays = [n for n in names if not (n.startswith("incident_monitor/") or DIST_INFO.match(n))]
    assert strays == []
    assert [n for n in names if n.endswith((".orig", ".pyc", ".rej", "~"))] == []
    assert "incident_monitor/cli/__init__.py" in names
    assert "incident_monitor/cli/init_config.toml" in names  # init's template travels with the code
    assert not any(n.startswith("incident_monitor/") and "/tests/" in n for n in names)


def test_a_fresh_venv_with_the_wheel_runs_init_and_serves_stdio_from_another_directory(
    wheel: Path, tmp_path: Path
) -> None:
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", venv)
    python = venv / BIN / "python"
    run(python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", wheel)
    script = venv / BIN / "incident-monitor"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("INCIDENT_MONITOR_", "VIRTUAL_ENV", "PYTHON"))},
        "XDG_CONFIG_HOME": str(tmp_path / "config-home"),
        "XDG_DATA_HOME": str(tmp_path / "data-home"),
    }
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    assert run(script, "--version", env=env).stdout.strip() == f"incident-monitor {__version__}"
    printed = run(script, "init", env=env, cwd=elsewhere).stdout
    entry = json.loads(re.findall(r"^\{\n.*?^\}$", printed, flags=re.M | re.S)[0])["mcpServers"]["incident-monitor"]
    assert entry["command"] == str(script)

    async def list_tools() -> set[str]:
        params = StdioServerParameters(command=entry["command"], args=entry["args"], env=env, cwd=str(elsewhere))
        with (tmp_path / "server.log").open("w") as log, anyio.fail_after(120):
            async with Client(stdio_client(params, errlog=log)) as client:
                return {t.name for t in (await client.list_tools()).tools}

    tools = anyio.run(list_tools)

    assert {"report_incident", "get_status", "request_approval", "publish_draft"} <= tools
    assert "decide_approval" not in tools  # the local agent cannot approve
    assert list(elsewhere.iterdir()) == []  # nothing written where the client started the server
