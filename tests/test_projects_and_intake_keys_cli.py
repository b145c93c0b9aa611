"""Monitored projects in the config, and the operator's ``intake-keys`` commands."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from conftest import flow_config
from incident_monitor.config import MonitorConfig

SCRIPT = Path(sys.executable).with_name("incident-monitor")
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


def cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INCIDENT_MONITOR_")}
    location = ["--data-dir", str(tmp_path / "data"), "--config", str(write_config(tmp_path))]
    return subprocess.run(
        [str(SCRIPT), *args, *location], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def test_intake_keys_create_list_disable(tmp_path: Path) -> None:
    created = cli(tmp_path, "intake-keys", "create", "--project", "shop", "--source", "ci")
    assert created.returncode == 0, created.stderr
    secret = created.stdout.strip()
    assert secret.startswith("imk_") and "\n" not in secret
    assert "shown only once" in created.stderr and "project 'shop', source 'ci'" in created.stderr

    listed = cli(tmp_path, "intake-keys", "list", "--json")
    [key] = json.loads(listed.stdout)
    assert (key["project_id"], key["source_id"], key["status"]) == ("shop", "ci", "active")
    assert key["scopes"] == ["incident_monitor:report"]
    assert "key_hash" not in key and secret not in listed.stdout

    disabled = cli(tmp_path, "intake-keys", "disable", key["key_id"])
    assert disabled.returncode == 0 and "disabled" in disabled.stdout
    human = cli(tmp_path, "intake-keys", "list")
    assert "disabled" in human.stdout and secret not in human.stdout


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["create", "--project", "blog"], "unknown project 'blog'"),
        (["create", "--project", "shop", "--source", "laptop"], "'laptop' is not a source of project 'shop'"),
        (["disable", "ik_missing"], "no intake key 'ik_missing'"),
    ],
)
def test_intake_key_mistakes_are_clear(tmp_path: Path, args: list[str], expected: str) -> None:
    done = cli(tmp_path, "intake-keys", *args)
    assert done.returncode != 0
    assert expected in done.stderr
