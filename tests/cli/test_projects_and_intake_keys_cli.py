"""Monitored projects in the config, and the operator's ``intake-keys`` commands."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from incident_monitor.config import MonitorConfig
from support.cli_helpers import Done, isolate, run_cli, table_rows
from support.monitors import flow_config

PROJECT = {"id": "shop", "name": "Shop", "sources": ["ci"], "allowed_destinations": ["telemetry"]}


@pytest.mark.parametrize(
    ("projects", "expected"),
    [
        (
            [{**PROJECT, "allowed_destinations": ["pager"]}],
            "projects[0].allowed_destinations: unknown destination 'pager'",
        ),
        ([PROJECT, PROJECT], "project ids must be unique; repeated: shop"),
        ([{**PROJECT, "id": "Shop Front"}], "String should match pattern"),
        ([{**PROJECT, "owner": "me"}], "Extra inputs are not permitted"),
    ],
)
def test_projects_are_validated_at_load(projects: list[dict[str, Any]], expected: str) -> None:
    with pytest.raises(ValidationError) as refused:
        MonitorConfig.model_validate(flow_config(projects=projects))
    assert expected in str(refused.value)


def test_projects_enter_the_policy_version_only_when_configured() -> None:
    without = MonitorConfig.model_validate(flow_config())
    assert without.policy_version == MonitorConfig.model_validate(flow_config(projects=[])).policy_version
    with_project = MonitorConfig.model_validate(flow_config(projects=[PROJECT]))
    narrowed = MonitorConfig.model_validate(flow_config(projects=[{**PROJECT, "allowed_destinations": []}]))
    assert len({without.policy_version, with_project.policy_version, narrowed.policy_version}) == 3


def write_config(tmp_path: Path) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(
        '[[destinations]]\nid = "telemetry"\nkind = "telemetry"\npath = "telemetry.jsonl"\n\n'
        '[[projects]]\nid = "shop"\nname = "Shop"\nsources = ["ci", "canary"]\n',
        encoding="utf-8",
    )
    return path


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Callable[..., Done]:
    """``incident-monitor ARGS --data-dir … --config …`` in process."""
    isolate(monkeypatch, tmp_path)
    location = ["--data-dir", str(tmp_path / "data"), "--config", str(write_config(tmp_path))]
    return lambda *args: run_cli(capsys, [*args, *location])


def test_intake_keys_create_list_disable(cli: Callable[..., Done]) -> None:
    created = cli("intake-keys", "create", "--project", "shop", "--source", "ci")
    assert created.returncode == 0, created.stderr
    secret = created.stdout.strip()
    assert secret.startswith("imk_") and "\n" not in secret
    assert "shown only once" in created.stderr and "project 'shop', source 'ci'" in created.stderr

    listed = cli("intake-keys", "list", "--json")
    [key] = json.loads(listed.stdout)
    assert (key["project_id"], key["source_id"], key["status"]) == ("shop", "ci", "active")
    assert key["scopes"] == ["incident_monitor:report"]
    assert "key_hash" not in key and secret not in listed.stdout

    disabled = cli("intake-keys", "disable", key["key_id"])
    assert disabled.returncode == 0 and "disabled" in disabled.stdout
    human = cli("intake-keys", "list")
    assert table_rows(human.stdout) == [[key["key_id"], "disabled", "shop", "ci", "never"]]
    assert secret not in human.stdout


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["create", "--project", "blog"], "unknown project 'blog'"),
        (["create", "--project", "shop", "--source", "laptop"], "'laptop' is not a source of project 'shop'"),
        (["disable", "ik_missing"], "no intake key 'ik_missing'"),
    ],
)
def test_intake_key_mistakes_are_clear(cli: Callable[..., Done], args: list[str], expected: str) -> None:
    done = cli("intake-keys", *args)
    assert done.returncode != 0
    assert expected in done.stderr
