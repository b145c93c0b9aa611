"""``incident-monitor destinations ping ID``: the coding-agent platform's "Test connection" (GET /ping), saying
what failed (issue 15)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from support.cli_helpers import Workspace, isolate
from support.coding_agent import TOKEN, TOKEN_VARIABLE
from support.coding_agent_platform import CodingAgentPlatform


@pytest.fixture
def platform() -> Iterator[CodingAgentPlatform]:
    with CodingAgentPlatform(token=TOKEN) as started:
        yield started


@pytest.fixture
def ws(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, platform: CodingAgentPlatform
) -> Workspace:
    isolate(monkeypatch, tmp_path)
    monkeypatch.setenv(TOKEN_VARIABLE, TOKEN)
    config = tmp_path / "config.toml"
    config.write_text(
        f"""
[[destinations]]
id = "coding-agent"
kind = "coding_agent"
base_url = "{platform.url}"
token = "env:{TOKEN_VARIABLE}"
allow_insecure_http = true
allow_private_networks = true

[[destinations]]
id = "telemetry"
kind = "telemetry"
""",
        encoding="utf-8",
    )
    return Workspace(data_dir=tmp_path / "data", config=config, capsys=capsys)


def test_ping_reports_a_reachable_platform(ws: Workspace, platform: CodingAgentPlatform) -> None:
    done = ws.run("destinations", "ping", "coding-agent")
    assert done.returncode == 0
    assert done.stdout.strip() == "destination coding-agent: ok — GET /ping answered 200: reachable, token valid"
    assert [r.path for r in platform.requests] == ["/ping"]


def test_ping_says_the_token_was_refused(ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TOKEN_VARIABLE, "wrong-token-0000000000")
    done = ws.run("destinations", "ping", "coding-agent")
    assert done.returncode == 1
    assert "FAILED" in done.stdout and "refused our bearer token" in done.stdout
    assert "wrong-token" not in done.stdout + done.stderr


def test_ping_names_an_unknown_destination(ws: Workspace) -> None:
    done = ws.run("destinations", "ping", "telemetry")
    assert done.returncode != 0
    assert "'telemetry' is not a configured coding_agent destination" in done.stderr
