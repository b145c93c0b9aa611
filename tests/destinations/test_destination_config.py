"""Config for the github, linear and mcp_tool destinations: the docs/destinations.md examples load, errors name keys."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from incident_monitor.config import DESTINATION_KINDS, MonitorConfig, load_config
from incident_monitor.destinations.registry import ADAPTERS
from incident_monitor.errors import ConfigError
from support.paths import ROOT

DOCS_TOML = re.findall(r"```toml\n(.*?)```", (ROOT / "docs" / "destinations.md").read_text(), re.S)


def readme_destination(kind: str) -> dict[str, object]:
    for block in DOCS_TOML:
        parsed = tomllib.loads(block)
        for destination in parsed.get("destinations", []):
            if destination["kind"] == kind:
                return destination
    raise AssertionError(f"docs/destinations.md has no example for kind {kind}")


def test_every_kind_has_an_adapter() -> None:
    assert set(DESTINATION_KINDS) == set(ADAPTERS)
    assert {"github", "linear", "mcp_tool", "webhook", "telemetry"} <= set(DESTINATION_KINDS)


@pytest.mark.parametrize("kind", ["github", "linear", "mcp_tool", "webhook"])
def test_the_readme_example_of_each_destination_loads(kind: str) -> None:
    config = MonitorConfig.model_validate({"destinations": [readme_destination(kind)]})
    assert config.destinations[0].kind == kind
    assert config.destinations[0].approval_required_by_default is True


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            '[[destinations]]\nid = "gh"\nkind = "github"\nrepo = "acme"\ntoken = "env:T"\n',
            "destinations[0].repo: repo must be 'owner/repo'",
        ),
        (
            '[[destinations]]\nid = "gh"\nkind = "github"\nrepo = "a/b"\ntoken = "ghp_literal0123456789"\n',
            "destinations[0].token: must be a reference of the form 'env:VARIABLE_NAME'",
        ),
        (
            '[[destinations]]\nid = "lin"\nkind = "linear"\nteam_id = "t"\nauth = "password"\n',
            "destinations[0].auth: Input should be 'api_key' or 'oauth'",
        ),
        (
            '[[destinations]]\nid = "m"\nkind = "mcp_tool"\nserver = "s"\ncommand = "x"\ntool = "drop"\n'
            'allowed_tools = ["create"]\n',
            "tool 'drop' is not in allowed_tools (create)",
        ),
        (
            '[[destinations]]\nid = "m"\nkind = "mcp_tool"\nserver = "s"\ncommand = "x"\ntool = "t"\n'
            'allowed_tools = ["t"]\narguments = { a = "$draft.nope" }\n',
            "arguments.a: unknown reference $draft.nope",
        ),
    ],
)
def test_mistakes_name_the_key_and_the_fix(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, text))
    assert expected in caught.value.message
    assert "ghp_literal0123456789" not in caught.value.message


# --- reading a config loads no adapter ----------------------------------------------------------------

# Adapters, their HTTP and MCP clients and the egress transport load when a destination is built or sends,
# never because the config (or the policy layer that reads it) was imported.
NOT_LOADED_BY_CONFIG = (
    "incident_monitor.destinations.webhook",
    "incident_monitor.destinations.telemetry",
    "incident_monitor.destinations.github",
    "incident_monitor.destinations.linear",
    "incident_monitor.destinations.mcp_tool",
    "incident_monitor.destinations.registry",
    "incident_monitor.egress.transport",
    "mcp.client",
    "httpx2",
    "httpcore2",
    "standardwebhooks",
)


@pytest.mark.parametrize("module", ["incident_monitor.config", "incident_monitor.policy.route_decision"])
def test_importing_the_config_or_policy_loads_no_adapter_and_no_client(module: str) -> None:
    probe = f"import json, sys, {module}; print(json.dumps(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True)
    loaded = set(json.loads(done.stdout))
    assert "incident_monitor.destinations.settings" in loaded
    assert sorted(loaded.intersection(NOT_LOADED_BY_CONFIG)) == []


def test_the_registry_imports_an_adapter_only_when_one_of_its_kind_is_built(tmp_path: Path) -> None:
    probe = (
        "import json, sys; from pathlib import Path; from incident_monitor.destinations import registry; "
        "from incident_monitor.destinations.settings import TelemetryConfig; "
        "registry.build_adapters([TelemetryConfig(id='t')], Path('.')); print(json.dumps(sorted(sys.modules)))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True)
    loaded = set(json.loads(done.stdout))
    assert "incident_monitor.destinations.telemetry" in loaded
    assert not loaded.intersection({f"incident_monitor.destinations.{k}" for k in ("webhook", "github", "mcp_tool")})
