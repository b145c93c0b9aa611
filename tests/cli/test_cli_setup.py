"""Finding the config and data directory, ``incident-monitor init``, and help that shows examples.

Every command finds config and data the same way: --config/--data-dir anywhere on the line, else
INCIDENT_MONITOR_CONFIG/INCIDENT_MONITOR_DATA_DIR, else what ``init`` wrote, else a clear error
(nothing is made up or created). Run in process with the platform's user dirs pointed at tmp_path.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from incident_monitor.cli import build_parser
from incident_monitor.config import load_config
from incident_monitor.locations import find_locations
from incident_monitor.service import tokens
from incident_monitor.service.monitor import Monitor
from support.cli_helpers import Done, isolate, run_cli
from support.databases import ON_POSTGRES
from support.monitors import WEBHOOK_SECRET_VARIABLE, new_webhook_secret

Cli = Callable[..., Done]

TELEMETRY_ONLY = '[[destinations]]\nid = "sink"\nkind = "telemetry"\n\n[default_destination]\ndestination_id = "sink"\n'
WEBHOOK = f"""
[[destinations]]
id = "hook"
kind = "webhook"
url = "http://127.0.0.1:9/hooks"
secret = "env:{WEBHOOK_SECRET_VARIABLE}"
allow_insecure_http = true
allow_private_networks = true
"""


def used_data_dir(data_dir: Path) -> bool:
    """The command used this data dir: it holds the SQLite file (on the PostgreSQL pass, only the directory)."""
    return data_dir.is_dir() if ON_POSTGRES else (data_dir / "incident-monitor.sqlite3").exists()


@pytest.fixture(autouse=True)
def home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """XDG config/data homes under tmp_path, no INCIDENT_MONITOR_* locations, cwd an empty directory."""
    isolate(monkeypatch, tmp_path)
    monkeypatch.delenv(WEBHOOK_SECRET_VARIABLE, raising=False)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    return tmp_path


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Cli:
    return lambda *argv: run_cli(capsys, list(argv))


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def default_destination(done: Done) -> str:
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)["default_destination"]


# --- where config and data come from ------------------------------------------------------------


@pytest.mark.parametrize(
    "where",
    [
        pytest.param(lambda c, d: ["--config", c, "--data-dir", d, "status", "--json"], id="before"),
        pytest.param(lambda c, d: ["status", "--json", "--config", c, "--data-dir", d], id="after"),
        pytest.param(lambda c, d: ["--data-dir", d, "status", "--config", c, "--json"], id="mixed"),
    ],
)
def test_config_and_data_dir_flags_work_before_and_after_the_command(
    cli: Cli, home: Path, where: Callable[[str, str], list[str]]
) -> None:
    config = write(home / "mine.toml", TELEMETRY_ONLY)

    done = cli(*where(str(config), str(home / "data")))

    assert default_destination(done) == "sink"
    assert used_data_dir(home / "data")


def test_a_flag_after_the_command_wins_over_one_before_it(cli: Cli, home: Path) -> None:
    other = write(home / "other.toml", TELEMETRY_ONLY.replace('"sink"', '"other"'))
    mine = write(home / "mine.toml", TELEMETRY_ONLY)

    done = cli("--config", str(other), "status", "--json", "--config", str(mine), "--data-dir", str(home / "d"))

    assert default_destination(done) == "sink"


def test_the_environment_names_config_and_data_when_no_flag_does(
    cli, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("INCIDENT_MONITOR_CONFIG", str(write(home / "env.toml", TELEMETRY_ONLY)))
    monkeypatch.setenv("INCIDENT_MONITOR_DATA_DIR", str(home / "env-data"))
    flagged = write(home / "flag.toml", TELEMETRY_ONLY.replace('"sink"', '"flagged"'))

    assert default_destination(cli("status", "--json")) == "sink"
    assert used_data_dir(home / "env-data")
    assert default_destination(cli("status", "--json", "--config", str(flagged))) == "flagged"


def test_without_flag_environment_or_init_every_command_stops_naming_the_three_ways_and_creates_nothing(
    cli, home: Path
) -> None:
    before = sorted(home.rglob("*"))

    for argv in (["status"], ["approvals", "list"], ["intake-keys", "create", "--project", "web-app"], ["serve"]):
        done = cli(*argv)
        assert done.returncode == 2, argv
        assert done.stdout == ""
        for way in ("--config PATH", "--data-dir PATH", "INCIDENT_MONITOR_CONFIG", "INCIDENT_MONITOR_DATA_DIR"):
            assert way in done.stderr, (argv, done.stderr)
        assert "incident-monitor init" in done.stderr
        assert str(home / "xdg-config" / "incident-monitor" / "config.toml") in done.stderr

    assert sorted(home.rglob("*")) == before  # no database, no data dir, no config made up


def test_a_config_alone_is_not_enough_the_data_dir_is_named(cli: Cli, home: Path) -> None:
    done = cli("status", "--config", str(write(home / "c.toml", TELEMETRY_ONLY)))

    assert done.returncode == 2
    assert done.stderr.startswith("error: no data directory found.")
    assert "--config" not in done.stderr


def test_find_locations_reports_where_each_came_from(home: Path) -> None:
    config = write(home / "c.toml", TELEMETRY_ONLY)
    env = {"INCIDENT_MONITOR_DATA_DIR": str(home / "d")}

    found = find_locations(config, None, environ=env)

    assert (found.config, found.config_from) == (config.resolve(), "--config")
    assert (found.data_dir, found.data_dir_from) == ((home / "d").resolve(), "INCIDENT_MONITOR_DATA_DIR")
    assert found.secrets_file == config.resolve().parent / "secrets.env"


# --- init ---------------------------------------------------------------------------------------


def json_blocks(text: str) -> list[dict[str, object]]:
    return [json.loads(block) for block in re.findall(r"^\{\n.*?^\}$", text, flags=re.M | re.S)]


def test_init_writes_a_working_setup_at_the_location_every_command_then_finds(cli: Cli, home: Path) -> None:
    config_dir = home / "xdg-config" / "incident-monitor"
    data_dir = home / "xdg-data" / "incident-monitor"

    done = cli("init")

    assert done.returncode == 0, done.stderr
    config, secrets_file = config_dir / "config.toml", config_dir / "secrets.env"
    assert load_config(config).default_destination is not None
    assert stat.S_IMODE(secrets_file.stat().st_mode) == 0o600
    assert data_dir.is_dir()
    # No flags needed afterwards: status, and the README's intake-key example.
    status = cli("status", "--json")
    assert status.returncode == 0, status.stderr
    view = json.loads(status.stdout)
    assert view["readiness"]["publish_ready"] is True
    assert view["problems"] == []
    assert {d["destination_id"] for d in view["destinations"]} == {"telemetry"}
    key = cli("intake-keys", "create", "--project", "web-app", "--source", "ci")
    assert key.returncode == 0, key.stderr
    assert key.stdout.startswith("imk_")


def test_init_prints_client_entries_with_absolute_paths_and_a_working_token(cli: Cli, home: Path) -> None:
    done = cli("init")
    config_dir = home / "xdg-config" / "incident-monitor"
    data_dir = home / "xdg-data" / "incident-monitor"
    secrets_text = (config_dir / "secrets.env").read_text()

    [claude_code] = [
        line.strip() for line in done.stdout.splitlines() if line.strip().startswith("claude mcp add incident")
    ]
    command_and_args = claude_code.split(" -- ", 1)[1].split()
    assert Path(command_and_args[0]).is_absolute()
    assert command_and_args[1:] == [
        "serve", "--transport", "stdio", "--config", str(config_dir / "config.toml"), "--data-dir", str(data_dir)
    ]  # fmt: skip
    stdio_entry, http_entry = json_blocks(done.stdout)
    server = stdio_entry["mcpServers"]["incident-monitor"]  # type: ignore[index]
    assert server["command"] == command_and_args[0]
    assert server["args"] == command_and_args[1:]
    assert all(Path(a).is_absolute() for a in server["args"] if "/" in a)
    remote = http_entry["mcpServers"]["incident-monitor"]  # type: ignore[index]
    assert remote["type"] == "http" and remote["url"] == "http://127.0.0.1:8000/mcp"
    token = remote["headers"]["Authorization"].removeprefix("Bearer ")
    assert f"INCIDENT_MONITOR_HTTP_AGENT_TOKEN={token}" in secrets_text
    assert "INCIDENT_MONITOR_WEBHOOK_SECRET=whsec_" in secrets_text
    assert "whsec_" not in done.stdout  # the webhook secret stays in the file
    monitor = Monitor.open(config_path=config_dir / "config.toml", data_dir=data_dir)
    try:
        assert tokens.authenticate_token(monitor, token).name.startswith("http-agent-")
    finally:
        monitor.close()


def test_init_refuses_to_overwrite_and_force_writes_fresh_secrets(cli: Cli, home: Path) -> None:
    config_dir = home / "xdg-config" / "incident-monitor"
    assert cli("init").returncode == 0
    (config_dir / "config.toml").write_text(TELEMETRY_ONLY)  # the user's edits
    first_secrets = (config_dir / "secrets.env").read_text()

    refused = cli("init")

    assert refused.returncode == 2
    assert "exists; not overwriting it" in refused.stderr and "--force" in refused.stderr
    assert refused.stdout == ""
    assert (config_dir / "config.toml").read_text() == TELEMETRY_ONLY
    assert (config_dir / "secrets.env").read_text() == first_secrets

    forced = cli("init", "--force")

    assert forced.returncode == 0, forced.stderr
    assert (config_dir / "config.toml").read_text() != TELEMETRY_ONLY
    assert (config_dir / "secrets.env").read_text() != first_secrets
    listed = json.loads(cli("tokens", "list", "--json").stdout)
    assert sorted(t["status"] for t in listed) == ["active", "revoked"]  # the overwritten file's token is revoked


def test_init_honours_config_dir_and_data_dir_overrides(cli: Cli, home: Path) -> None:
    done = cli("init", "--config-dir", str(home / "c"), "--data-dir", str(home / "d"))

    assert done.returncode == 0, done.stderr
    assert (home / "c" / "config.toml").exists() and used_data_dir(home / "d")
    assert not (home / "xdg-config").exists()
    assert f"--config {home / 'c' / 'config.toml'} --data-dir {home / 'd'}" in done.stdout


# --- the secrets file beside the config ---------------------------------------------------------


def test_the_secrets_file_beside_the_config_fills_the_environment(cli: Cli, home: Path) -> None:
    config = write(home / "conf" / "config.toml", WEBHOOK)
    secrets_file = write(home / "conf" / "secrets.env", f"{WEBHOOK_SECRET_VARIABLE}={new_webhook_secret()}\n")
    secrets_file.chmod(0o600)

    done = cli("status", "--json", "--config", str(config), "--data-dir", str(home / "d"))

    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["destinations"][0]["ready"] is True
    assert secrets_file.read_text().split("=", 1)[1].strip() not in done.stdout


def test_a_secrets_file_others_can_read_is_refused(cli: Cli, home: Path) -> None:
    config = write(home / "conf" / "config.toml", WEBHOOK)
    secret = new_webhook_secret()
    secrets_file = write(home / "conf" / "secrets.env", f"{WEBHOOK_SECRET_VARIABLE}={secret}\n")
    secrets_file.chmod(0o644)

    done = cli("status", "--config", str(config), "--data-dir", str(home / "d"))

    assert done.returncode == 2
    assert f"chmod 600 {secrets_file}" in done.stderr
    assert secret not in done.stderr
    assert WEBHOOK_SECRET_VARIABLE not in os.environ


# --- help ---------------------------------------------------------------------------------------


def test_bare_command_prints_help_with_examples(cli: Cli) -> None:
    done = cli()

    assert done.returncode == 0
    assert done.stdout.startswith("usage: incident-monitor")
    assert "incident-monitor init" in done.stdout
    assert "incident-monitor approvals approve apr_" in done.stdout


@pytest.mark.parametrize("group", ["approvals", "intake-keys", "tokens"])
def test_a_command_group_without_its_subcommand_prints_its_help(cli: Cli, group: str) -> None:
    done = cli(group)

    assert done.returncode == 0
    assert done.stdout.startswith(f"usage: incident-monitor {group}")
    assert f"incident-monitor {group} " in done.stdout.split("example", 1)[1]


def _leaf_commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found: list[tuple[str, ...]] = [path] if path else []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += _leaf_commands(sub, (*path, name))
    return found


COMMANDS = _leaf_commands(build_parser())


def test_the_command_list_covers_the_operator_commands() -> None:
    for command in [("incidents", "show"), ("drafts", "show"), ("approvals", "show"), ("receipts", "list"), ("init",)]:
        assert command in COMMANDS


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_command_help_shows_an_example(cli: Cli, command: tuple[str, ...]) -> None:
    done = cli(*command, "--help")

    assert done.returncode == 0
    assert re.search(r"^examples?:$", done.stdout, flags=re.M), done.stdout
    example = re.split(r"^examples?:$", done.stdout, flags=re.M)[1]
    assert f"incident-monitor {' '.join(command)}" in example
