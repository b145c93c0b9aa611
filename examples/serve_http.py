"""``make run``: serve the Incident Monitor over HTTP on 127.0.0.1 and print how to connect.

Creates a fresh agent token (tokens are shown once and stored hashed, so each run issues a new one
and revokes the previous demo token), then serves
Streamable HTTP at /mcp, SSE at /sse and the intake endpoint, with examples/config.toml and
SQLite in ./.incident-monitor. Stop with Ctrl-C.

    python examples/serve_http.py [--port 8000] [--data-dir .incident-monitor]
"""

from __future__ import annotations

import argparse
import base64
import os
import secrets
import sys
from pathlib import Path

from incident_monitor.policy.principal import local_operator
from incident_monitor.policy.scopes import DEFAULT_AGENT_SCOPES
from incident_monitor.server.http_app import HttpOptions, serve_http
from incident_monitor.service import self_monitoring, tokens
from incident_monitor.service.monitor import Monitor

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "examples" / "config.toml"
DEMO_PREFIX = "demo-agent-"
INSPECTOR = "npx @modelcontextprotocol/inspector --cli"


def issue_demo_token(monitor: Monitor) -> str:
    operator = local_operator()
    for token in tokens.list_tokens(monitor, operator):
        if token.name.startswith(DEMO_PREFIX) and token.status == "active":
            tokens.revoke_token(monitor, operator, token.name)
    name = DEMO_PREFIX + secrets.token_hex(3)
    return tokens.create_token(monitor, operator, name=name, scopes=sorted(DEFAULT_AGENT_SCOPES)).secret


def connection_help(base: str, token: str) -> str:
    auth = f"Authorization: Bearer {token}"
    return f"""
Incident Monitor MCP is serving:
  Streamable HTTP  {base}/mcp
  SSE (legacy)     {base}/sse
  intake (CI)      {base}/incident-monitor/intake/report

Agent token (default agent scopes, shown once; each run issues a new one):
  {token}

Connect:
  Claude Code   claude mcp add --transport http incident-monitor {base}/mcp --header "{auth}"
  Cursor        ~/.cursor/mcp.json: {{"mcpServers": {{"incident-monitor": {{"url": "{base}/mcp",
                "headers": {{"Authorization": "Bearer {token}"}}}}}}}}
  Inspector     {INSPECTOR} {base}/mcp --transport http --header "{auth}" --method tools/list

Report from CI: create an intake key for project web-app, then post with it:
  KEY=$(.venv/bin/incident-monitor intake-keys create --project web-app --source ci --config examples/config.toml)
  curl -s {base}/incident-monitor/intake/report -H "x-incident-monitor-intake-key: $KEY" \\
    -H 'content-type: application/json' \\
    -d '{{"project_id": "web-app", "report": {{"title": "Smoke test failed", "event": "ci.smoke.failed"}}}}'

The governed flow, played end to end over stdio: make demo.  Stop this server with Ctrl-C.
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--data-dir", type=Path, default=Path(".incident-monitor"))
    args = parser.parse_args()
    # The example webhook needs a signing secret; a demo one unless you set your own.
    os.environ.setdefault("INCIDENT_MONITOR_WEBHOOK_SECRET", "whsec_" + base64.b64encode(os.urandom(24)).decode())
    monitor = self_monitoring.attach(Monitor.open(config_path=CONFIG, data_dir=args.data_dir))
    token = issue_demo_token(monitor)
    options = HttpOptions(host="127.0.0.1", port=args.port)
    return serve_http(monitor, options, announce=lambda base: print(connection_help(base, token), flush=True))


if __name__ == "__main__":
    sys.exit(main())
