"""``incident-monitor init``: a working config, data directory and secrets, and how to connect clients.

Writes to the platform's user config and data directories (the place every command looks last), so
after ``init`` no command needs ``--config`` or ``--data-dir``. Prints client entries with absolute
paths: a client starts the server from its own working directory, often without the user's PATH.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import sys
from importlib.resources import files
from pathlib import Path
from typing import Any

from incident_monitor.cli.common import EXIT_OK, EXIT_USAGE, add_command
from incident_monitor.locations import CONFIG_FILE, SECRETS_FILE, init_config_dir, init_data_dir
from incident_monitor.policy.principal import local_operator
from incident_monitor.policy.scopes import DEFAULT_AGENT_SCOPES
from incident_monitor.service import tokens
from incident_monitor.service.monitor import Monitor

# Names of a token and of variables, not secrets.
HTTP_TOKEN_PREFIX = "http-agent-"  # noqa: S105
HTTP_TOKEN_VARIABLE = "INCIDENT_MONITOR_HTTP_AGENT_TOKEN"  # noqa: S105
WEBHOOK_SECRET_VARIABLE = "INCIDENT_MONITOR_WEBHOOK_SECRET"  # noqa: S105
DEFAULT_HTTP_URL = "http://127.0.0.1:8000/mcp"


def config_template() -> str:
    return files("incident_monitor.cli").joinpath("init_config.toml").read_text(encoding="utf-8")


def executable() -> str:
    """The absolute path of this ``incident-monitor`` (the venv's or pipx's), else the name on PATH."""
    name = "incident-monitor" + (".exe" if os.name == "nt" else "")
    beside = Path(sys.executable).with_name(name)  # not resolved: a venv's python is a symlink
    if beside.exists():
        return str(beside.absolute())
    return shutil.which("incident-monitor") or "incident-monitor"


def write_private(path: Path, text: str) -> None:
    """Create or replace ``path`` readable by its owner only (0600) from the first byte."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(text)
    os.chmod(path, 0o600)  # an existing file keeps its old mode through O_CREAT


def _issue_http_token(monitor: Monitor) -> str:
    """A fresh agent token for remote HTTP clients; the one a previous init saved is revoked with its file."""
    return tokens.reissue_token(monitor, local_operator(), HTTP_TOKEN_PREFIX, sorted(DEFAULT_AGENT_SCOPES)).secret


def stdio_args(config: Path, data_dir: Path) -> list[str]:
    return ["serve", "--transport", "stdio", "--config", str(config), "--data-dir", str(data_dir)]


def client_entries(command: str, config: Path, data_dir: Path, token: str, url: str = DEFAULT_HTTP_URL) -> str:
    """The text ``init`` prints: ready-to-paste entries for the common MCP clients."""
    args = stdio_args(config, data_dir)
    stdio_json = json.dumps({"mcpServers": {"incident-monitor": {"command": command, "args": args}}}, indent=2)
    http_json = json.dumps(
        {
            "mcpServers": {
                "incident-monitor": {"type": "http", "url": url, "headers": {"Authorization": f"Bearer {token}"}}
            }
        },
        indent=2,
    )
    serve_http = " ".join(
        [command, "serve", "--transport", "http", "--config", str(config), "--data-dir", str(data_dir)]
    )
    return f"""
Connect a client over stdio (the client starts the server itself; paths are absolute, so any working directory works):

Claude Code:
  claude mcp add incident-monitor -- {command} {" ".join(args)}

Cursor (~/.cursor/mcp.json) and Claude Desktop (claude_desktop_config.json: ~/Library/Application Support/Claude/
on macOS, %APPDATA%\\Claude\\ on Windows):
{stdio_json}

Remote HTTP: run the server, then connect with the agent token (also in {SECRETS_FILE} as {HTTP_TOKEN_VARIABLE}):
  {serve_http}
  claude mcp add --transport http incident-monitor {url} --header "Authorization: Bearer {token}"
{http_json}

Check it: incident-monitor status
Approve what an agent asks to publish:
  incident-monitor approvals list
  incident-monitor approvals approve APPROVAL_ID --note "why"
"""


def cmd_init(args: argparse.Namespace) -> int:
    config_dir = args.config_dir.expanduser().absolute() if args.config_dir else init_config_dir()
    config = getattr(args, "config", None)
    config = config.expanduser().absolute() if config is not None else config_dir / CONFIG_FILE
    data_dir = getattr(args, "data_dir", None)
    data_dir = data_dir.expanduser().absolute() if data_dir is not None else init_data_dir()
    secrets_file = config.parent / SECRETS_FILE
    if config.exists() and not args.force:
        print(
            f"error: {config} exists; not overwriting it. Pass --force to write a fresh config and secrets "
            f"(the data directory {data_dir} is kept), or use it as it is: incident-monitor status",
            file=sys.stderr,
        )
        return EXIT_USAGE
    config.parent.mkdir(parents=True, exist_ok=True)
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    config.write_text(config_template(), encoding="utf-8")
    if not secrets_file.exists():
        # Marks the directory private before the monitor opens: the default audit key is created beside it.
        write_private(secrets_file, "")
    monitor = Monitor.open(config_path=config, data_dir=data_dir)
    try:
        token = _issue_http_token(monitor)
    finally:
        monitor.close()
    webhook_secret = "whsec_" + base64.b64encode(os.urandom(24)).decode()
    write_private(
        secrets_file,
        "# Written by `incident-monitor init`; read by every incident-monitor command that uses the config beside it.\n"
        "# Set variables in the environment win over these. Keep this file 0600.\n"
        f"{WEBHOOK_SECRET_VARIABLE}={webhook_secret}\n"
        f"# Agent token for remote HTTP clients (serve --transport http):\n{HTTP_TOKEN_VARIABLE}={token}\n",
    )
    print(
        f"""Incident Monitor is set up:
  config   {config}
  secrets  {secrets_file}  (mode 0600; the server reads it at start-up)
  data     {data_dir}
Published evidence lands in {data_dir / "telemetry.jsonl"} (the telemetry destination: every route goes
there until you configure the on-call webhook sketched in the config)."""
    )
    print(client_entries(executable(), config, data_dir, token), end="")
    return EXIT_OK


def register(sub: Any) -> None:
    init = add_command(
        sub,
        "init",
        cmd_init,
        help="write a working config, data directory and secrets; print client set-up with absolute paths",
        examples=[
            "incident-monitor init",
            "incident-monitor init --config-dir ~/im/config --data-dir ~/im/data --force",
        ],
        json_flag=False,
        needs_config=False,
    )
    init.add_argument("--config-dir", type=Path, default=None, help=f"where to write {CONFIG_FILE} and {SECRETS_FILE}")
    init.add_argument("--force", action="store_true", help="overwrite an existing config and secrets file")
