"""The governed flow, end to end, as an agent and an operator would live it.

Starts a local webhook receiver (on a free port unless --port is given), spawns the Incident Monitor
over stdio (the console script, the example config with the webhook pointed at that receiver, a
SQLite file in the data directory), and plays an agent through the safe sequence:

    get_status -> preview_route -> report_incident -> list_drafts -> triage_draft
    -> publish_draft (refused: approval required) -> request_approval
    -> operator approves with the CLI -> publish_draft -> list_receipts

Then the operator verifies the audit chain and resolves the incident, so running it again shows a
recurrence reopening the incident and going through the gates again.

    python examples/agent_flow.py [--data-dir .incident-monitor] [--port 0]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
from mcp import Client, StdioServerParameters

from webhook_receiver import WebhookReceiver

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "examples" / "config.toml"
SECRET_VARIABLE = "INCIDENT_MONITOR_WEBHOOK_SECRET"
URL_VARIABLE = "INCIDENT_MONITOR_WEBHOOK_URL"  # examples/config.toml reads the webhook's URL from it


def console_script() -> str:
    """The installed ``incident-monitor`` next to this interpreter (the venv's), else on PATH."""
    beside = Path(sys.executable).with_name("incident-monitor")
    found = str(beside) if beside.exists() else shutil.which("incident-monitor")
    if not found:
        sys.exit("incident-monitor is not installed: run `make demo` (it installs the project into .venv)")
    return found


def step(number: int, title: str) -> None:
    bold, plain = ("\033[1m", "\033[0m") if sys.stdout.isatty() else ("", "")
    print(f"\n{bold}[{number}] {title}{plain}")


def show(value: Any) -> None:
    print("    " + json.dumps(value, indent=2, default=str).replace("\n", "\n    "))


def operator(*args: str, env: dict[str, str]) -> str:
    """Run an operator CLI command, as a person at a terminal would."""
    cmd = [console_script(), *args]
    print(f"    $ incident-monitor {' '.join(args)}")
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    output = (done.stdout + done.stderr).strip()
    print("    " + output.replace("\n", "\n    "))
    if done.returncode != 0:
        sys.exit(f"operator command failed ({done.returncode})")
    return done.stdout


async def call(client: Client, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
    result = await client.call_tool(tool, arguments)
    if result.is_error:
        text = result.content[0].text if result.content else "(no text)"  # type: ignore[union-attr]
        raise ToolRefused(tool, text)
    return result.structured_content or {}


class ToolRefused(Exception):
    def __init__(self, tool: str, text: str) -> None:
        super().__init__(text)
        self.tool = tool
        self.text = text


async def play(data_dir: Path, receiver: WebhookReceiver, env: dict[str, str]) -> None:
    params = StdioServerParameters(
        command=console_script(),
        args=["serve", "--transport", "stdio", "--config", str(CONFIG), "--data-dir", str(data_dir)],
        env=env,
    )
    async with Client(params) as agent:
        tools = await agent.list_tools()
        print(f"connected over stdio; tools this agent may call: {', '.join(t.name for t in tools.tools)}")

        step(1, "get_status: is the monitor ready?")
        status = await call(agent, "get_status", {})
        show({"readiness": status["readiness"], "caller": status["caller"], "problems": status["problems"]})
        if not status["readiness"]["ingest_ready"]:
            sys.exit("monitor not ready: stop and ask for setup")

        report = {
            "title": "Agent run failed during Linear sync",
            "detail": "The workflow could not resolve the Linear MCP capability. "
            "Request used Authorization: Bearer sk-live-0123456789abcdef (must never be stored).",
            "source": "automation_v2",
            "event": "automation_v2.run.failed",
            "level": "error",
            "route_tags": ["runtime-failure"],
            "run_id": "run-42",
            "evidence_refs": ["runs/run-42/log.txt"],
        }
        step(2, "preview_route: where would this go, and what would it need?")
        preview = await call(
            agent,
            "preview_route",
            {k: report[k] for k in ("route_tags", "level", "source", "event")},
        )
        show(preview)
        if preview["blocked"]:
            sys.exit(f"route blocked: {preview['blocked_reasons']}")

        step(3, "report_incident (secrets are redacted before anything is stored)")
        reported = await call(agent, "report_incident", report)
        show(reported)
        draft_id = reported["draft_id"]

        step(4, "list_drafts")
        drafts = await call(agent, "list_drafts", {"incident_id": reported["incident_id"]})
        for d in drafts["drafts"]:
            print(f"    {d['draft_id']}  {d['status']:18} {d['severity']:8} {d['title']}")

        step(5, "triage_draft")
        triage = await call(agent, "triage_draft", {"draft_id": draft_id})
        show(
            {k: triage[k] for k in ("draft_status", "evidence_digest", "evidence_changed", "next_step")}
            | {"summary": triage["triage_run"]["evidence_summary"]}
        )

        step(6, "publish_draft before approval: the policy layer refuses")
        try:
            await call(agent, "publish_draft", {"draft_id": draft_id})
            sys.exit("publish went through without approval: the policy layer is broken")
        except ToolRefused as refused:
            print(f"    refused, as it must be: {refused.text}")

        step(7, "request_approval")
        requested = await call(
            agent,
            "request_approval",
            {"draft_id": draft_id, "reason": "Linear sync is failing for every run."},
        )
        approval_id = requested["approval"]["approval_id"]
        show(
            {
                "approval_id": approval_id,
                "status": requested["approval"]["status"],
                "destination_id": requested["approval"]["destination_id"],
                "next_step": requested["next_step"],
            }
        )

        step(8, "the operator approves from the CLI (a different principal from the agent)")
        operator("approvals", "list", "--data-dir", str(data_dir), "--config", str(CONFIG), env=env)
        operator(
            "approvals",
            "approve",
            approval_id,
            "--note",
            "Evidence checked; publish to on-call.",
            "--data-dir",
            str(data_dir),
            "--config",
            str(CONFIG),
            env=env,
        )

        step(9, "publish_draft: gates pass, the webhook adapter delivers, a receipt comes back")
        published = await call(agent, "publish_draft", {"draft_id": draft_id})
        receipt = published["receipt"]
        show(
            {
                k: receipt[k]
                for k in (
                    "receipt_id",
                    "status",
                    "destination_id",
                    "destination_kind",
                    "route_id",
                    "match_reason",
                    "external_id",
                    "evidence_digest",
                    "idempotency_key",
                    "attempt_count",
                )
            }
        )

        step(10, "publish_draft again: the same receipt, no second delivery")
        again = await call(agent, "publish_draft", {"draft_id": draft_id})
        print(f"    reused={again['reused']} receipt_id={again['receipt']['receipt_id']}")

        step(11, "list_receipts")
        receipts = await call(agent, "list_receipts", {"draft_id": draft_id})
        for r in receipts["receipts"]:
            print(f"    {r['receipt_id']}  {r['status']:9} {r['destination_id']}  external_id={r['external_id']}")

    step(12, "what the webhook receiver got (signature verified with the shared secret)")
    ids = receiver.unique_webhook_ids()
    print(
        f"    deliveries: {len(receiver.deliveries)}, unique webhook-ids: {len(ids)}, "
        f"rejected: {len(receiver.rejected)}"
    )
    if receiver.deliveries:
        data = receiver.deliveries[-1].payload["data"]
        print(f"    title: {data['title']}\n    evidence_digest: {data['evidence_digest']}")
        leaked = "sk-live-0123456789abcdef" in json.dumps(receiver.deliveries[-1].payload)
        print(f"    secret from the report present in the delivery: {leaked}")

    step(13, "the policy decisions, from the audit log, and the chain check")
    operator("audit", "list", "--limit", "14", "--data-dir", str(data_dir), "--config", str(CONFIG), env=env)
    operator("audit", "verify", "--data-dir", str(data_dir), "--config", str(CONFIG), env=env)

    step(14, "the operator resolves the incident (run this script again to see a recurrence reopen it)")
    operator(
        "incidents",
        "resolve",
        reported["incident_id"],
        "--note",
        "Linear capability re-registered.",
        "--data-dir",
        str(data_dir),
        "--config",
        str(CONFIG),
        env=env,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=ROOT / ".incident-monitor")
    parser.add_argument("--port", type=int, default=0, help="the webhook receiver's port (default: a free one)")
    args = parser.parse_args()

    secret = os.environ.get(SECRET_VARIABLE) or "whsec_" + base64.b64encode(os.urandom(24)).decode()
    try:
        receiver = WebhookReceiver(secret, port=args.port)
    except OSError as exc:
        sys.exit(f"cannot start the webhook receiver on 127.0.0.1:{args.port}: {exc} (is another demo running?)")
    env = {**os.environ, SECRET_VARIABLE: secret, URL_VARIABLE: receiver.url}
    env.pop("INCIDENT_MONITOR_TOKEN", None)  # the agent here is the local agent principal
    with receiver:
        print(f"webhook receiver listening on {receiver.url}; data directory {args.data_dir}")
        anyio.run(play, args.data_dir, receiver, env)
    print("\ndone: every step above went through the policy layer and is in the audit log.")


if __name__ == "__main__":
    main()
