"""The destination config models, one per kind, and their union as the monitor config reads it.

I/O-free and adapter-free: ``config`` (and through it the policy layer) imports this module alone, so reading
a config loads no HTTP client, MCP client or adapter. Each adapter module imports its model from here.
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, Literal, get_args
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from incident_monitor.secret_ref import SecretRef, is_env_ref, resolve_secret, secret_ref_variable

EXTERNAL_KINDS = frozenset({"github", "linear", "webhook", "mcp_tool", "coding_agent"})


class DestinationConfig(BaseModel):
    """Fields every destination kind shares. Each kind subclasses it with a ``kind`` literal."""

    # hide_input_in_errors: a secret pasted into the config must not be echoed in the startup error.
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,63}$", description="Stable destination id.")
    kind: str
    enabled: bool = True
    require_approval: bool | None = Field(
        default=None,
        description="Default: true for external kinds (github, linear, webhook, mcp_tool), false otherwise.",
    )
    description: str = ""
    allowed_sources: list[str] = Field(
        default_factory=list, description="Sources allowed to publish here; empty means any source."
    )

    @property
    def approval_required_by_default(self) -> bool:
        if self.require_approval is not None:
            return self.require_approval
        return self.kind in EXTERNAL_KINDS


# --- webhook -----------------------------------------------------------------------------------------------


class WebhookConfig(DestinationConfig):
    kind: Literal["webhook"] = "webhook"
    url: str = Field(
        description="The receiver's https:// endpoint, or env:NAME of a variable holding it (set at run time)."
    )
    secret: SecretRef | None = Field(
        default=None,
        description="env:NAME of a variable holding a Standard Webhooks secret ('whsec_<base64>').",
    )
    allow_insecure_http: bool = Field(default=False, description="Allow http:// URLs (local testing only).")
    allow_private_networks: bool = Field(
        default=False,
        description="Allow private, loopback and link-local receivers (checked after DNS resolution).",
    )
    timeout_seconds: float = Field(10.0, gt=0, le=120)
    max_attempts: int = Field(3, ge=1, le=10)
    max_payload_bytes: int = Field(256_000, ge=1024)
    backoff_seconds: float = Field(0.5, ge=0, le=30, description="Base of the exponential backoff.")

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        value = value.strip()
        if value.startswith("env:"):
            if not is_env_ref(value):
                raise ValueError("url: an environment reference must read 'env:VARIABLE_NAME'")
            return value  # the variable's value is checked by readiness, when it is read
        problem = webhook_url_problem(value)
        if problem:
            raise ValueError(problem)
        return value

    def resolved_url(self) -> tuple[str | None, str | None]:
        """The URL to post to, or why there is none (an ``env:`` reference naming only its variable).

        An ``env:`` URL keeps the config text, and so the policy version, the same whatever the variable
        holds: `make run` points it at a receiver on a free port without invalidating approvals."""
        if not self.url.startswith("env:"):
            return self.url, None
        variable = secret_ref_variable(self.url)
        value = resolve_secret(self.url)
        if value is None:
            return None, f"environment variable {variable} is not set or empty: put the receiver's URL in it"
        url = value.get_secret_value().strip()
        problem = webhook_url_problem(url)
        if problem:
            return None, f"environment variable {variable}: {problem}"
        return url, None


def webhook_url_problem(value: str) -> str | None:
    """Why ``value`` cannot be a webhook URL, or None."""
    # httpx2 is the client deliveries send with, so its parser decides what a valid URL is. Imported here,
    # not at module level: this module must stay cheap to import (the policy layer reads it).
    import httpx2

    example = "e.g. url = 'https://hooks.example.com/incident'"
    try:
        parts = urlsplit(value)
        _ = parts.port  # raises ValueError for a malformed or out-of-range port
        httpx2.URL(value)
    except (ValueError, httpx2.InvalidURL):
        return f"url is not a valid URL; {example}"
    if parts.scheme not in ("http", "https") or not parts.hostname or any(c.isspace() for c in value):
        return f"url must be an http(s) URL with a host; {example}"
    if parts.username is not None or parts.password is not None:
        return (
            "url must not contain credentials (user:password@); deliveries are authenticated by "
            "their signature, set `secret` instead"
        )
    return None


# --- telemetry ---------------------------------------------------------------------------------------------


class TelemetryConfig(DestinationConfig):
    kind: Literal["telemetry"] = "telemetry"
    path: str = Field(
        default="telemetry.jsonl",
        min_length=1,
        description="JSONL file; a relative path is inside the data directory.",
    )


# --- GitHub ------------------------------------------------------------------------------------------------

_REPO = re.compile(r"^[A-Za-z0-9-]{1,39}/[A-Za-z0-9._-]{1,100}$")


class GitHubConfig(DestinationConfig):
    kind: Literal["github"] = "github"
    repo: str = Field(description="The repository issues are created in, as 'owner/repo'.")
    token: SecretRef | None = Field(
        default=None, description="env:NAME of a variable holding a token with Issues read/write on the repo."
    )
    labels: list[str] = Field(default_factory=list, description="Labels added to every issue.")
    marker_label: str = Field(
        default="incident-monitor",
        description="Added to every issue and used to find earlier ones; '' pages through all recent issues.",
    )
    api_url: str = Field(default="https://api.github.com", description="GitHub Enterprise: https://HOST/api/v3.")
    allow_insecure_http: bool = False
    allow_private_networks: bool = False
    timeout_seconds: float = Field(10.0, gt=0, le=120)
    max_attempts: int = Field(3, ge=1, le=10)
    backoff_seconds: float = Field(1.0, ge=0, le=30)
    lookup_max_pages: int = Field(10, ge=1, le=100, description="Pages of 100 issues searched for an earlier one.")

    @field_validator("repo")
    @classmethod
    def _check_repo(cls, value: str) -> str:
        if not _REPO.match(value) or value.split("/")[1] in (".", ".."):
            raise ValueError("repo must be 'owner/repo', e.g. repo = 'acme/incidents'")
        return value


# --- Linear ------------------------------------------------------------------------------------------------


class LinearConfig(DestinationConfig):
    kind: Literal["linear"] = "linear"
    team_id: str = Field(min_length=1, description="The team issues are created in (its id, from Linear).")
    token: SecretRef | None = Field(default=None, description="env:NAME of a variable holding the API key or token.")
    auth: Literal["api_key", "oauth"] = Field(
        default="api_key", description="api_key: a personal API key; oauth: an OAuth access token (Bearer)."
    )
    label_ids: list[str] = Field(default_factory=list, description="Label ids added to every issue.")
    api_url: str = "https://api.linear.app/graphql"
    allow_insecure_http: bool = False
    allow_private_networks: bool = False
    timeout_seconds: float = Field(10.0, gt=0, le=120)
    max_attempts: int = Field(3, ge=1, le=10)
    backoff_seconds: float = Field(1.0, ge=0, le=30)


# --- MCP tool ----------------------------------------------------------------------------------------------

# The draft/incident fields an argument may reference (mcp_tool.py fills them; a test keeps the two equal).
REFERENCES: frozenset[str] = frozenset(
    {
        "$draft.id",
        "$draft.title",
        "$draft.body",
        "$draft.severity",
        "$draft.labels",
        "$incident.id",
        "$incident.severity",
        "$incident.fingerprint",
        "$evidence",
        "$evidence.digest",
        "$idempotency_key",
        "$receipt_id",
        "$destination_id",
        "$route_id",
    }
)
REFERENCE = re.compile(r"^\$[a-z_]+(?:\.[a-z_]+)?$")
PLACEHOLDER = re.compile(r"\{(\$[a-z_]+(?:\.[a-z_]+)?)\}")


def argument_template(value: str) -> Any:
    """The parsed form of one argument value (JSON arrays/objects are parsed, the rest kept)."""
    stripped = value.strip()
    if stripped[:1] in ("[", "{"):
        try:
            return json.loads(stripped)
        except ValueError:
            return value
    return value


def references_in(node: Any) -> list[str]:
    if isinstance(node, str):
        return [node] if REFERENCE.match(node) else PLACEHOLDER.findall(node)
    if isinstance(node, list):
        return [r for item in node for r in references_in(item)]
    if isinstance(node, dict):
        return [r for item in node.values() for r in references_in(item)]
    return []


class McpToolConfig(DestinationConfig):
    kind: Literal["mcp_tool"] = "mcp_tool"
    server: str = Field(min_length=1, max_length=100, description="A display name for the outbound MCP server.")
    command: str | None = Field(default=None, description="stdio: the server's program.")
    args: list[str] = Field(default_factory=list, description="stdio: its arguments.")
    env: dict[str, str] = Field(
        default_factory=dict, description="stdio: its environment; secret values as env:NAME references."
    )
    url: str | None = Field(default=None, description="Streamable HTTP: the server's endpoint.")
    headers: dict[str, str] = Field(
        default_factory=dict, description="HTTP: request headers; secret values as env:NAME references."
    )
    tool: str = Field(min_length=1, description="The one tool called to publish.")
    allowed_tools: list[str] = Field(
        default_factory=list, description="The allowlist; `tool` must be in it. Empty: nothing may be called."
    )
    arguments: dict[str, str] = Field(
        default_factory=dict, description="Tool argument → value or $reference ($draft.title, $idempotency_key, …)."
    )
    timeout_seconds: float = Field(30.0, gt=0, le=300)
    allow_insecure_http: bool = False
    allow_private_networks: bool = False

    def allows_tool(self, name: str) -> bool:
        """The allowlist rule (no network): only tools on a non-empty allowlist may be called."""
        return bool(self.allowed_tools) and name in self.allowed_tools

    @field_validator("arguments")
    @classmethod
    def _known_references(cls, value: dict[str, str]) -> dict[str, str]:
        for name, template in value.items():
            unknown = [r for r in references_in(argument_template(template)) if r not in REFERENCES]
            if unknown:
                raise ValueError(
                    f"arguments.{name}: unknown reference {unknown[0]}; use one of: {', '.join(sorted(REFERENCES))}"
                )
        return value

    @model_validator(mode="after")
    def _one_transport_and_allowed_tool(self) -> McpToolConfig:
        if (self.command is None) == (self.url is None):
            raise ValueError("set exactly one of command (stdio server) or url (Streamable HTTP server)")
        if self.allowed_tools and self.tool not in self.allowed_tools:
            raise ValueError(
                f"tool '{self.tool}' is not in allowed_tools ({', '.join(self.allowed_tools)}): add it there or "
                "call an allowed tool"
            )
        if self.url is not None:
            parts = urlsplit(self.url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError("url must be an http(s) URL with a host, e.g. url = 'https://mcp.example.com/mcp'")
            if parts.username or parts.password:
                raise ValueError("url must not contain credentials; put them in headers as env:NAME references")
        return self


# --- coding agent (seed 002, caller side) ------------------------------------------------------------------


class CodingAgentConfig(DestinationConfig):
    """A coding-agent platform implementing the seed-002 interface; code-change drafts launch runs on it."""

    kind: Literal["coding_agent"] = "coding_agent"
    base_url: str = Field(description="The platform's https:// base URL (POST /agents, GET /agents/{id}, …).")
    token: SecretRef | None = Field(
        default=None, description="env:NAME of a variable holding the bearer token the platform issued us."
    )
    display_name: str = Field(default="", max_length=100, description="How responders see the platform.")
    poll_interval_seconds: float = Field(120.0, ge=1, le=3600, description="GET /agents/{id} per active run.")
    max_run_minutes: float = Field(120.0, gt=0, le=24 * 60, description="Longer runs are marked failed and stopped.")
    request_timeout_seconds: float = Field(10.0, gt=0, le=120)
    callback_base_url: str | None = Field(
        default=None, description="Our public base URL for status webhooks; without it, polling only."
    )
    allow_insecure_http: bool = Field(default=False, description="Allow http:// base_url (local testing only).")
    allow_private_networks: bool = False
    max_attempts: int = Field(3, ge=1, le=10)
    backoff_seconds: float = Field(0.5, ge=0, le=30)

    @field_validator("base_url", "callback_base_url")
    @classmethod
    def _check_urls(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip().rstrip("/")
        problem = webhook_url_problem(value)
        if problem:
            raise ValueError(
                problem.replace("url ", "URL ", 1).replace(
                    "'https://hooks.example.com/incident'", "'https://agents.example.com'"
                )
            )
        return value


# --- the union the monitor config reads --------------------------------------------------------------------

# One line per destination kind.
DestinationSettings = Annotated[
    WebhookConfig | TelemetryConfig | GitHubConfig | LinearConfig | McpToolConfig | CodingAgentConfig,
    Field(discriminator="kind"),
]
AnyDestinationConfig = WebhookConfig | TelemetryConfig | GitHubConfig | LinearConfig | McpToolConfig | CodingAgentConfig
DESTINATION_KINDS: tuple[str, ...] = tuple(
    model.model_fields["kind"].default for model in get_args(get_args(DestinationSettings)[0])
)
