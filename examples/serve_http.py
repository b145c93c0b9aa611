"""``make run``: serve the Incident Monitor over HTTP on 127.0.0.1, with a webhook receiver, and print how to connect.

Everything runs in this one process, so every route of examples/config.toml publishes with nothing
else started:
- the example Standard Webhooks receiver (examples/webhook_receiver.py) on a free port of 127.0.0.1,
  sharing a signing secret with the server; the config's webhook reads its URL from
  INCIDENT_MONITOR_WEBHOOK_URL, set here. Set that variable yourself to deliver to your own receiver
  instead (and INCIDENT_MONITOR_WEBHOOK_SECRET to its secret).
- the server: Streamable HTTP at /mcp, SSE at /sse and the CI intake endpoint, SQLite in the data dir.

The demo agent token is stored (mode 0600) in the data directory and reused while it is valid, so a
restart keeps a configured client working. It is read, issued or revoked only once the port is bound:
a second `make run` on a taken port changes nothing. Stop with Ctrl-C.

    python examples/serve_http.py [--port 8000] [--data-dir .incident-monitor]
"""

from __future__ import annotations

import argparse
import base64
import os
import secrets
import sys
from dataclasses import dataclass
from pathlib import Path

from incident_monitor.errors import CredentialError
from incident_monitor.policy.principal import local_operator
from incident_monitor.policy.scopes import DEFAULT_AGENT_SCOPES
from incident_monitor.server.http_app import HttpOptions, serve_http
from incident_monitor.service import self_monitoring, tokens
from incident_monitor.service.monitor import Monitor
from webhook_receiver import WebhookReceiver

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "examples" / "config.toml"
DEMO_PREFIX = "demo-agent-"
TOKEN_FILE = "demo-agent-token"
DELIVERIES_FILE = "webhook-deliveries.jsonl"
URL_VARIABLE = "INCIDENT_MONITOR_WEBHOOK_URL"
SECRET_VARIABLE = "INCIDENT_MONITOR_WEBHOOK_SECRET"
INSPECTOR = "npx @modelcontextprotocol/inspector --cli"


@dataclass(frozen=True)
class DemoToken:
    secret: str
    kept: bool  # True: the one stored by an earlier run, still valid
    path: Path


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable by its owner only (0600 from the first byte on)."""
    partial = path.with_name(path.name + ".tmp")
    partial.unlink(missing_ok=True)
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        file.write(text)
    os.replace(partial, path)


def _still_valid(monitor: Monitor, secret: str) -> bool:
    try:
        principal = tokens.authenticate_token(monitor, secret)
    except CredentialError:  # revoked, expired, or from another database
        return False
    return principal.name.startswith(DEMO_PREFIX) and principal.scopes == DEFAULT_AGENT_SCOPES


def demo_token(monitor: Monitor) -> DemoToken:
    """The stored demo token while it is valid; else a new one (revoking earlier demo tokens), stored 0600."""
    path = monitor.data_dir / TOKEN_FILE
    stored = path.read_text(encoding="utf-8").strip() if path.is_file() else ""
    if stored and _still_valid(monitor, stored):
        return DemoToken(stored, kept=True, path=path)
    operator = local_operator()
    for token in tokens.list_tokens(monitor, operator):
        if token.name.startswith(DEMO_PREFIX) and token.status == "active":
            tokens.revoke_token(monitor, operator, token.name)
    name = DEMO_PREFIX + secrets.token_hex(3)
    secret = tokens.create_token(monitor, operator, name=name, scopes=sorted(DEFAULT_AGENT_SCOPES)).secret
    _write_private(path, secret + "\n")
    return DemoToken(secret, kept=False, path=path)


def evidence_help(monitor: Monitor, receiver: WebhookReceiver | None) -> str:
    """Where each destination of the config puts what is published."""
    lines = []
    for config in monitor.config.destinations:
        if config.kind == "webhook" and receiver is not None and receiver.log_path is not None:
            lines.append(
                f"  {config.id:<13} signed webhook to the example receiver {receiver.url};\n"
                f"  {'':<13} each verified delivery is appended to {receiver.log_path}"
            )
        elif config.kind == "webhook":
            lines.append(f"  {config.id:<13} signed webhook to ${URL_VARIABLE} (your receiver)")
        elif config.kind == "telemetry":
            adapter = monitor.destinations[config.id]
            lines.append(f"  {config.id:<13} one JSON line per publish in {adapter.file_path}")  # type: ignore[attr-defined]
        else:
            lines.append(f"  {config.id:<13} {config.kind}")
    return "\n".join(lines)


def _shown(path: Path) -> str:
    """``path`` as typed from the current directory: relative below it, else absolute."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def connection_help(base: str, token: DemoToken, monitor: Monitor, receiver: WebhookReceiver | None) -> str:
    auth = f"Authorization: Bearer {token.secret}"
    origin = (
        "kept from the last run" if token.kept else "new this run (default agent scopes; earlier demo tokens revoked)"
    )
    cli = _shown(Path(sys.executable).with_name("incident-monitor"))
    where = f"--config {_shown(CONFIG)} --data-dir {_shown(monitor.data_dir)}"
    return f"""
Incident Monitor MCP is serving:
  Streamable HTTP  {base}/mcp
  SSE (legacy)     {base}/sse
  intake (CI)      {base}/incident-monitor/intake/report

Agent token, {origin}. Stored 0600 in {_shown(token.path)}; the next run reuses it while it is valid:
  {token.secret}

Connect:
  Claude Code   claude mcp add --transport http incident-monitor {base}/mcp --header "{auth}"
  Cursor        ~/.cursor/mcp.json: {{"mcpServers": {{"incident-monitor": {{"url": "{base}/mcp",
                "headers": {{"Authorization": "Bearer {token.secret}"}}}}}}}}
  Inspector     {INSPECTOR} {base}/mcp --transport http --header "{auth}" --method tools/list

Published evidence lands here (every route of {_shown(CONFIG)} publishes with nothing else running):
{evidence_help(monitor, receiver)}

Operator (another terminal, this directory): decide what an agent asked to publish, check readiness:
  {cli} approvals list {where}
  {cli} approvals approve APPROVAL_ID --note "Evidence checked." {where}
  {cli} status {where}

Report from CI: create an intake key for project web-app, then post with it:
  KEY=$({cli} intake-keys create --project web-app --source ci {where})
  curl -s {base}/incident-monitor/intake/report -H "x-incident-monitor-intake-key: $KEY" \\
    -H 'content-type: application/json' \\
    -d '{{"project_id": "web-app", "report": {{"title": "Smoke test failed", "event": "ci.smoke.failed"}}}}'

The governed flow, played end to end over stdio: make demo.  Stop this server with Ctrl-C.
"""


def start_receiver(data_dir: Path) -> WebhookReceiver | None:
    """The example receiver on a free port, its URL and secret exported for the config; None if you set a URL."""
    if os.environ.get(URL_VARIABLE):
        return None
    secret = os.environ.get(SECRET_VARIABLE) or "whsec_" + base64.b64encode(os.urandom(24)).decode()
    os.environ[SECRET_VARIABLE] = secret  # the server signs with what the receiver verifies
    receiver = WebhookReceiver(secret, log_path=data_dir / DELIVERIES_FILE).start()
    os.environ[URL_VARIABLE] = receiver.url
    return receiver


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--data-dir", type=Path, default=Path(".incident-monitor"))
    args = parser.parse_args()
    data_dir: Path = args.data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    receiver = start_receiver(data_dir)
    try:
        monitor = self_monitoring.attach(Monitor.open(config_path=CONFIG, data_dir=data_dir))

        def announce(base: str) -> None:
            # Only now is the port ours: a second instance that could not bind never touches the token.
            token = demo_token(monitor)
            print(connection_help(base, token, monitor, receiver), flush=True)

        return serve_http(monitor, HttpOptions(host="127.0.0.1", port=args.port), announce=announce)
    finally:
        if receiver is not None:
            receiver.close()


if __name__ == "__main__":
    sys.exit(main())
