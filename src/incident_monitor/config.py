"""Settings (environment) and the monitor config (one TOML file), validated with pydantic.

A bad config stops startup with a message naming the key and the fix; nothing is half-loaded.

Where it sits in the layers: a leaf beside ``domain``, beneath ``policy``. Policy decides over these
models (routing reads routes, destinations and approval settings), so this module may import only
``domain``, ``errors`` and the I/O-free destination settings module (``destinations/settings.py``) —
never an adapter, the store, policy or anything above (tests/architecture/test_layers.py checks it). The models stay
here, beside ``load_config`` and ``Settings``, rather than in ``domain``: the destination union belongs to
``destinations`` and domain imports nothing of it. Reading the file is ``load_config``'s alone; the
models do no I/O.
"""

from __future__ import annotations

import hashlib
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from incident_monitor.destinations.settings import DESTINATION_KINDS, AnyDestinationConfig
from incident_monitor.destinations.settings import DestinationSettings as DestinationSettings  # re-exported for policy
from incident_monitor.domain.canonical import canonical_json
from incident_monitor.domain.enums import ApprovalPolicy, Severity
from incident_monitor.errors import ConfigError
from incident_monitor.secret_ref import SecretRef, is_env_ref


class Settings(BaseSettings):
    """Process settings from the environment (INCIDENT_MONITOR_*) and CLI flags.

    ``config`` and ``data_dir`` stay None when neither is given: ``locations.find_locations`` then
    falls back to what ``incident-monitor init`` wrote, or refuses (no made-up empty config).
    """

    model_config = SettingsConfigDict(env_prefix="INCIDENT_MONITOR_", extra="ignore")

    config: Path | None = None
    data_dir: Path | None = None
    token: str | None = Field(default=None, repr=False)
    # PostgreSQL (``postgresql+psycopg://user:password@host:5432/db``) for several replicas; wins over [store] url.
    database_url: str | None = Field(default=None, repr=False)
    # Upgrade an outdated schema at open (serve --no-migrate, or INCIDENT_MONITOR_MIGRATE=false, refuses instead).
    migrate: bool = True


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)


class Limits(_Strict):
    max_title_chars: int = Field(300, ge=20, le=2_000)
    max_detail_chars: int = Field(20_000, ge=100, le=1_000_000)
    max_evidence_refs: int = Field(50, ge=0, le=1_000)
    max_evidence_ref_chars: int = Field(2_000, ge=20, le=100_000)
    max_route_tags: int = Field(20, ge=0, le=200)
    max_field_chars: int = Field(200, ge=20, le=2_000)
    max_page_size: int = Field(200, ge=10, le=1_000)


class ApprovalSettings(_Strict):
    ttl_minutes: int = Field(60, ge=1, le=7 * 24 * 60)
    require_approval_for_high_risk: bool = True


class IntakeSettings(_Strict):
    # Reports whose event ends with one of these (or whose level is one of noise_levels) are routine noise.
    noise_event_suffixes: list[str] = Field(
        default_factory=lambda: ["heartbeat", "progress", "started", "tick", "keepalive"]
    )
    noise_levels: list[str] = Field(default_factory=lambda: ["debug", "trace"])


class TriageSettings(_Strict):
    similarity_threshold: float = Field(0.6, ge=0.1, le=1.0)
    duplicate_threshold: float = Field(0.9, ge=0.1, le=1.0)
    max_candidates: int = Field(500, ge=10, le=100_000)
    rate_window_hours: int = Field(24, ge=1, le=24 * 90)


class RouteMatch(_Strict):
    """Every non-empty criterion must hold; within a list any value matches (route_tags: any overlap)."""

    route_tags: list[str] = Field(default_factory=list)
    risk_categories: list[str] = Field(default_factory=list)
    severities: list[Severity] = Field(default_factory=list)
    sources: list[str] = Field(default_factory=list)
    projects: list[str] = Field(default_factory=list)
    events: list[str] = Field(default_factory=list)


class Route(_Strict):
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,63}$")
    destination_id: str
    priority: int = 0
    match: RouteMatch = Field(default_factory=RouteMatch)
    approval_policy: ApprovalPolicy = ApprovalPolicy.inherit
    labels: list[str] = Field(default_factory=list)
    description: str = ""


class DefaultDestinationPolicy(_Strict):
    destination_id: str
    approval_policy: ApprovalPolicy = ApprovalPolicy.inherit


class SelfMonitoringSettings(_Strict):
    """Incidents about the governance layer itself (service/self_monitoring.py)."""

    enabled: bool = True
    source: str = Field("incident-monitor", min_length=1, max_length=200, description="Source of its incidents.")
    # Reports from these sources are development noise: their incidents are severity low.
    development_sources: list[str] = Field(default_factory=lambda: ["dev", "development", "local", "test"])
    # The same low-risk denial this many times opens a separate "repeated" incident at severity high.
    repeated_failure_threshold: int = Field(3, ge=2, le=1_000)


class PostureSettings(_Strict):
    """Windows and thresholds of the posture checks over recent decisions."""

    recent_window_hours: int = Field(24, ge=1, le=24 * 90)
    denied_action_threshold: int = Field(3, ge=2, le=10_000)


class DeploymentCardSettings(_Strict):
    """Owner-supplied facts for one deployment card (service/governance/cards.py).

    ``subject`` is an agent principal's name (kind agent), a monitored source (kind source), or
    anything for the monitor's own card (kind monitor). Facts left out are reported as findings.
    """

    kind: Literal["agent", "source", "monitor"]
    subject: str = Field("incident-monitor", min_length=1, max_length=200)
    owner: str | None = None
    accountable_team: str | None = None
    autonomy_level: str | None = Field(default=None, description="e.g. 'human-approved publish', 'report-only'.")
    data_classification: str | None = None
    escalation: str | None = Field(default=None, description="Who is paged, and how, when this goes wrong.")
    review_cadence: str | None = None
    allowed_actions: list[str] = Field(default_factory=list)
    prohibited_actions: list[str] = Field(default_factory=list)
    known_limitations: list[str] = Field(default_factory=list)
    residual_risks: list[str] = Field(default_factory=list)


class ProjectSettings(_Strict):
    """A monitored project: reports through its intake keys inherit this binding."""

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,63}$")
    name: str = ""
    sources: list[str] = Field(default_factory=list, description="Source ids that may report for this project.")
    default_route_tags: list[str] = Field(default_factory=list)
    allowed_destinations: list[str] = Field(default_factory=list, description="Empty means any destination.")


class JwtSettings(_Strict):
    """Optional JWT bearer tokens from an identity provider (beside the monitor's own tokens)."""

    issuer: str
    audience: str
    jwks_file: Path | None = None
    jwks_url: str | None = None
    algorithms: list[str] = Field(default_factory=lambda: ["RS256", "ES256"])
    principal_claim: str = "sub"
    scopes_claim: str = "scope"
    # The JWKS is fetched through the egress guard: a private, loopback or link-local provider needs this.
    allow_private_networks: bool = False

    @model_validator(mode="after")
    def _one_key_source(self) -> JwtSettings:
        if (self.jwks_file is None) == (self.jwks_url is None):
            raise ValueError("set exactly one of jwks_file or jwks_url")
        loopback = self.jwks_url is not None and self.jwks_url.startswith(("http://127.0.0.1:", "http://localhost:"))
        if self.jwks_url is not None and not (self.jwks_url.startswith("https://") or loopback):
            raise ValueError("jwks_url: use an https:// URL (http:// only on 127.0.0.1/localhost), or jwks_file")
        if loopback and not self.allow_private_networks:
            raise ValueError("jwks_url is on loopback: set allow_private_networks = true for a local identity provider")
        return self

    @model_validator(mode="after")
    def _one_algorithm_family(self) -> JwtSettings:
        # HS* beside RS*/ES*/PS*/EdDSA invites key confusion: a public key used as an HMAC secret.
        if not self.algorithms:
            raise ValueError('algorithms: list at least one, e.g. ["RS256", "ES256"]')
        symmetric = sorted(a for a in self.algorithms if a.upper().startswith("HS"))
        if symmetric and len(symmetric) < len(self.algorithms):
            asymmetric = sorted(set(self.algorithms) - set(symmetric))
            raise ValueError(
                f"algorithms: do not mix symmetric {symmetric} with asymmetric {asymmetric} (a public key could "
                "then sign as an HMAC secret); list only the asymmetric ones your identity provider uses"
            )
        if any(a.lower() == "none" for a in self.algorithms):
            raise ValueError('algorithms: "none" accepts unsigned tokens; remove it')
        return self


class RateLimitSettings(_Strict):
    """Token buckets: ``per_minute`` refill rate and ``burst`` capacity."""

    principal_per_minute: float = Field(600, gt=0, le=1_000_000)
    principal_burst: int = Field(120, ge=1, le=1_000_000)
    intake_key_per_minute: float = Field(120, gt=0, le=1_000_000)
    intake_key_burst: int = Field(30, ge=1, le=1_000_000)
    # Refused intake credentials (401) per client address: past the burst, the address gets 429 without its
    # key being checked, so keys cannot be guessed at speed. Clients behind one proxy share a bucket.
    unauthenticated_per_minute: float = Field(30, gt=0, le=1_000_000)
    unauthenticated_burst: int = Field(10, ge=1, le=1_000_000)


class HttpSettings(_Strict):
    """``serve --transport http``: who may reach the server, and how callers authenticate."""

    # DNS-rebinding protection: Host and Origin values accepted besides loopback ones ("host:port" or "host:*").
    allowed_hosts: list[str] = Field(default_factory=list)
    allowed_origins: list[str] = Field(default_factory=list)
    # The server's public URL (RFC 9728 resource); defaults to http://HOST:PORT.
    public_url: str | None = None
    max_intake_body_bytes: int = Field(256_000, ge=1_000, le=10_000_000)
    jwt: JwtSettings | None = None
    rate_limits: RateLimitSettings = Field(default_factory=RateLimitSettings)
    # Stateless Streamable HTTP: no session lives in a replica (required when replicas > 1).
    stateless: bool = False
    # How many replicas serve behind the load balancer: each enforces 1/replicas of every rate limit.
    replicas: int = Field(1, ge=1, le=1_000)


class StoreSettings(_Strict):
    """Where the data lives: a SQLite file in the data directory unless ``url`` names PostgreSQL."""

    # ``postgresql+psycopg://user@host:5432/db``, or ``env:NAME`` naming a variable that holds the whole URL.
    url: str | None = None
    # The password for ``url`` (kept out of the file): ``env:NAME``.
    password: SecretRef | None = None
    pool_size: int = Field(5, ge=1, le=200)
    max_overflow: int = Field(10, ge=0, le=500)
    pool_timeout_seconds: float = Field(30, gt=0, le=600)
    connect_timeout_seconds: int = Field(5, ge=1, le=300)
    # Per statement (PostgreSQL statement_timeout and lock_timeout): a stuck query fails instead of hanging a call.
    statement_timeout_ms: int = Field(30_000, ge=100, le=3_600_000)
    # How long a publish's claim on its pending receipt holds before another replica's recovery may finish it;
    # longer than a destination's slowest delivery (timeout x attempts + backoff).
    publish_lease_seconds: float = Field(120, ge=1, le=86_400)
    recovery_interval_seconds: float = Field(30, ge=0.2, le=3_600)

    @model_validator(mode="after")
    def _known_backend(self) -> StoreSettings:
        if self.url and not is_env_ref(self.url) and not self.url.startswith(("postgresql+psycopg://", "sqlite:///")):
            raise ValueError(
                "url: use postgresql+psycopg://user@host:port/db (or env:NAME), or leave it out for SQLite"
            )
        return self


class WorkspaceSettings(_Strict):
    """The one directory log sources may read inside (a relative root is relative to the config file)."""

    root: Path


class LogSourceSettings(_Strict):
    """A log file (or glob) inside the workspace root whose error lines become reports as ``source:<id>``.

    JSON field names left unset are looked up among the common loggers' names (Python ``logging`` JSON,
    structlog, pino, bunyan): see service/log_parsing.py.
    """

    kind: Literal["log_file"]
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,63}$")
    project_id: str
    source_id: str = Field(min_length=1, max_length=200)
    path: str = Field(min_length=1, max_length=1_000, description="Relative to the workspace root; a glob is allowed.")
    format: Literal["auto", "json", "plaintext"] = "auto"
    min_level: Literal["warning", "error", "critical"] = "error"
    poll_interval_seconds: float = Field(60, ge=0.05, le=24 * 3600)
    max_bytes_per_poll: int = Field(256 * 1024, ge=4 * 1024, le=256 * 1024 * 1024)
    fingerprint_cooldown_minutes: int = Field(60, ge=0, le=7 * 24 * 60)
    level_field: str | None = Field(default=None, min_length=1, max_length=100)
    message_field: str | None = Field(default=None, min_length=1, max_length=100)
    event_field: str | None = Field(default=None, min_length=1, max_length=100)
    timestamp_field: str | None = Field(default=None, min_length=1, max_length=100)

    @field_validator("path")
    @classmethod
    def _path_stays_relative(cls, path: str) -> str:
        # Lexical checks only (models do no I/O); symlinks are checked at every open (service/log_files.py).
        if path.startswith(("/", "\\", "~")) or (len(path) > 1 and path[1] == ":"):
            raise ValueError(f"'{path}' is absolute; give it relative to [workspace] root (e.g. 'logs/ci.log')")
        if ".." in path.replace("\\", "/").split("/"):
            raise ValueError(f"'{path}' contains '..'; sources may not read outside [workspace] root")
        if "\x00" in path:
            raise ValueError("contains a NUL byte; remove it")
        return path


class AuditSettings(_Strict):
    """Tamper evidence beyond the database (service/audit_keys.py, service/audit_checkpoints.py).

    The key MACs every audit row and signs checkpoints; it never goes in the database. Both files
    belong outside the data dir (posture reports a key inside it).
    """

    # JSON key file; INCIDENT_MONITOR_AUDIT_KEY / INCIDENT_MONITOR_AUDIT_KEY_FILE win over it.
    key_file: Path | None = None
    # Append-only JSON lines of signed checkpoints; default: checkpoints/<data dir digest>.jsonl beside the key file.
    checkpoint_file: Path | None = None
    # A signed checkpoint of the chain's head every this many audit rows (also on `audit verify` and shutdown).
    checkpoint_every: int = Field(1_000, ge=1, le=1_000_000)
    # Also send each checkpoint to this destination (kind telemetry or webhook), a copy out of the host's reach.
    checkpoint_destination: str | None = None


class RetentionSettings(_Strict):
    """How long evidence is kept, in days per kind; unset kinds are kept forever.

    Incidents, drafts, approvals and receipts past their age are deleted (closed incidents only, with
    their drafts, approvals and receipts); audit rows are archived to a file with a signed checkpoint
    first, never dropped silently.
    """

    incidents_days: int | None = Field(None, ge=1, le=36_500)
    audit_days: int | None = Field(None, ge=1, le=36_500)
    # Where archived audit rows go (JSON lines); default: archive/ beside the checkpoint file.
    archive_dir: Path | None = None


class DownstreamSettings(_Strict):
    """A guarded downstream MCP server: its ``read_tools`` are re-exposed as ``<id>__<tool>``, nothing else.

    Reached over stdio (``command``) or Streamable HTTP (``url``, through the egress guard). Secret values in
    ``env`` and ``headers`` are ``env:NAME`` references. ``read_tools`` is an explicit allowlist (fnmatch
    globs); the downstream's own ``readOnlyHint`` must not say otherwise (service/downstream/).
    """

    # No "_" in an id: "__" separates the id from the tool name in what agents see.
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,31}$")
    command: str | None = Field(default=None, description="stdio: the server's program.")
    args: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict, description="stdio: its environment (secrets as env:NAME).")
    url: str | None = Field(default=None, description="Streamable HTTP: the server's endpoint.")
    headers: dict[str, str] = Field(default_factory=dict, description="HTTP headers (secrets as env:NAME).")
    read_tools: list[str] = Field(default_factory=list, description="Allowlist of read tools; globs allowed.")
    timeout_seconds: float = Field(20.0, gt=0, le=300)
    max_result_bytes: int = Field(100_000, ge=1_000, le=10_000_000)
    refresh_seconds: float = Field(300.0, ge=1, le=86_400, description="Tool list TTL (list_changed refreshes).")
    allow_insecure_http: bool = False
    allow_private_networks: bool = False

    @model_validator(mode="after")
    def _one_transport(self) -> DownstreamSettings:
        if (self.command is None) == (self.url is None):
            raise ValueError("set exactly one of command (stdio server) or url (Streamable HTTP server)")
        if self.url is not None and not self.url.startswith(("http://", "https://")):
            raise ValueError("url must be an http(s) URL, e.g. url = 'https://mcp.example.com/mcp'")
        for where, values in (("env", self.env), ("headers", self.headers)):
            for name, value in values.items():
                if value.startswith("env:") and not is_env_ref(value):
                    raise ValueError(f"{where}.{name}: write a secret reference as env:VARIABLE_NAME")
        return self


class MonitorConfig(_Strict):
    destinations: list[DestinationSettings] = Field(default_factory=list)
    routes: list[Route] = Field(default_factory=list)
    default_destination: DefaultDestinationPolicy | None = None
    approval: ApprovalSettings = Field(default_factory=ApprovalSettings)
    limits: Limits = Field(default_factory=Limits)
    intake: IntakeSettings = Field(default_factory=IntakeSettings)
    triage: TriageSettings = Field(default_factory=TriageSettings)
    self_monitoring: SelfMonitoringSettings = Field(default_factory=SelfMonitoringSettings)
    posture: PostureSettings = Field(default_factory=PostureSettings)
    deployment_cards: list[DeploymentCardSettings] = Field(default_factory=list)
    projects: list[ProjectSettings] = Field(default_factory=list)
    http: HttpSettings = Field(default_factory=HttpSettings)
    workspace: WorkspaceSettings | None = None
    sources: list[LogSourceSettings] = Field(default_factory=list)
    audit: AuditSettings = Field(default_factory=AuditSettings)
    retention: RetentionSettings | None = None
    downstream: list[DownstreamSettings] = Field(default_factory=list)
    store: StoreSettings = Field(default_factory=StoreSettings)

    @model_validator(mode="after")
    def _references_resolve(self) -> MonitorConfig:
        ids = [d.id for d in self.destinations]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise ValueError(f"destination ids must be unique; repeated: {', '.join(duplicates)}")
        route_ids = [r.id for r in self.routes]
        repeated = sorted({i for i in route_ids if route_ids.count(i) > 1})
        if repeated:
            raise ValueError(f"route ids must be unique; repeated: {', '.join(repeated)}")
        known = set(ids)
        for index, route in enumerate(self.routes):
            if route.destination_id not in known:
                raise ValueError(
                    f"routes[{index}].destination_id: unknown destination '{route.destination_id}'; "
                    f"add a [[destinations]] entry with that id or use one of: {', '.join(ids) or '(none)'}"
                )
            agent = self.destination(route.destination_id)
            if agent is not None and agent.kind == "coding_agent" and route.approval_policy is ApprovalPolicy.never:
                raise ValueError(
                    f"routes[{index}].approval_policy: 'never' is refused for a coding_agent destination "
                    "(code changes are always approved); remove it or set 'always'"
                )
        cards = [(c.kind, c.subject) for c in self.deployment_cards]
        twice = sorted({f"{k}:{s}" for k, s in cards if cards.count((k, s)) > 1})
        if twice:
            raise ValueError(f"deployment_cards: one card per kind and subject; repeated: {', '.join(twice)}")
        if self.default_destination and self.default_destination.destination_id not in known:
            raise ValueError(
                f"default_destination.destination_id: unknown destination "
                f"'{self.default_destination.destination_id}'; configure it under [[destinations]]"
            )
        self._projects_resolve(known)
        self._sources_resolve()
        checkpoint_to = self.audit.checkpoint_destination
        if checkpoint_to is not None:
            kinds = {d.id: d.kind for d in self.destinations}
            if kinds.get(checkpoint_to) not in ("telemetry", "webhook"):
                raise ValueError(
                    f"audit.checkpoint_destination: '{checkpoint_to}' is not a telemetry or webhook destination; "
                    f"use one of: {', '.join(i for i, k in kinds.items() if k in ('telemetry', 'webhook')) or '(none)'}"
                )
        downstream_ids = [d.id for d in self.downstream]
        if len(set(downstream_ids)) < len(downstream_ids):
            raise ValueError(f"downstream ids must be unique; got: {', '.join(downstream_ids)}")
        return self

    def _sources_resolve(self) -> None:
        source_ids = [s.id for s in self.sources]
        repeated = sorted({i for i in source_ids if source_ids.count(i) > 1})
        if repeated:
            raise ValueError(f"sources: ids must be unique; repeated: {', '.join(repeated)}")
        if self.sources and self.workspace is None:
            raise ValueError('sources: log sources need [workspace] root = "DIR", the directory they may read inside')
        for index, source in enumerate(self.sources):
            project = self.project(source.project_id)
            if project is None:
                raise ValueError(
                    f"sources[{index}].project_id: unknown project '{source.project_id}'; add a [[projects]] entry "
                    f"with that id or use one of: {', '.join(p.id for p in self.projects) or '(none configured)'}"
                )
            if source.source_id not in project.sources:
                raise ValueError(
                    f"sources[{index}].source_id: '{source.source_id}' is not a source of project '{project.id}'; "
                    f"add it to that project's sources or use one of: {', '.join(project.sources) or '(none)'}"
                )

    def log_source(self, source_id: str) -> LogSourceSettings | None:
        return next((s for s in self.sources if s.id == source_id), None)

    def _projects_resolve(self, known_destinations: set[str]) -> None:
        project_ids = [p.id for p in self.projects]
        repeated = sorted({i for i in project_ids if project_ids.count(i) > 1})
        if repeated:
            raise ValueError(f"project ids must be unique; repeated: {', '.join(repeated)}")
        for index, project in enumerate(self.projects):
            for destination_id in project.allowed_destinations:
                if destination_id not in known_destinations:
                    raise ValueError(
                        f"projects[{index}].allowed_destinations: unknown destination '{destination_id}'; "
                        f"use one of: {', '.join(sorted(known_destinations)) or '(none configured)'}"
                    )

    def project(self, project_id: str | None) -> ProjectSettings | None:
        return next((p for p in self.projects if p.id == project_id), None) if project_id else None

    def destination(self, destination_id: str) -> AnyDestinationConfig | None:
        return next((d for d in self.destinations if d.id == destination_id), None)

    @property
    def policy_version(self) -> str:
        """Digest of everything that decides where evidence goes and who must approve it.

        Approvals bind to it: changing routes, destinations or approval rules invalidates them.
        Secret references are names, not values, so hashing them reveals nothing.
        """
        relevant = self.model_dump(mode="json", include={"destinations", "routes", "default_destination", "approval"})
        if self.projects:
            # Only when configured, so configs without projects keep their policy version (and approvals).
            relevant["projects"] = [p.model_dump(mode="json") for p in self.projects]
        canonical = canonical_json(relevant)
        return "pv_" + hashlib.sha256(canonical.encode()).hexdigest()[:16]


def _location(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def describe_validation_error(error: ValidationError, *, source: str) -> str:
    lines = [f"invalid config in {source}:"]
    for err in error.errors(include_url=False, include_input=False):
        # Discriminated unions put the kind in the location; drop it so the key reads as written.
        loc = tuple(p for p in err["loc"] if p not in DESTINATION_KINDS)
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            message = "unknown key; remove it or check its spelling"
        elif err["type"] == "union_tag_invalid":
            message = f"{message} (set kind to one of: {', '.join(DESTINATION_KINDS)})"
        lines.append(f"  - {_location(loc)}: {message}")
    return "\n".join(lines)


# A config needs a few levels; deeper nesting is a mistake or an attack on the parsers (they recurse).
MAX_CONFIG_DEPTH = 32


def _nests_deeper_than(value: Any, limit: int) -> bool:
    """Whether tables/arrays nest deeper than ``limit``, measured without recursion."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def _read_config_text(path: Path) -> str:
    """The file's text, or a ConfigError naming the path and the fix (one line, no traceback)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path} (pass --config or set INCIDENT_MONITOR_CONFIG)") from None
    except IsADirectoryError:
        raise ConfigError(
            f"config path {path} is a directory; pass the TOML file in it (e.g. {path / 'config.toml'})"
        ) from None
    except PermissionError:
        raise ConfigError(
            f"config file {path} cannot be read: permission denied; make it readable by this user (chmod u+r)"
        ) from None
    except OSError as exc:
        raise ConfigError(
            f"config file {path} cannot be read: {exc.strerror or type(exc).__name__}; check the path"
        ) from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"config file {path} is not UTF-8 text (an invalid byte at offset {exc.start}); save it as UTF-8"
        ) from None


def load_config(path: Path | None) -> MonitorConfig:
    """Read and validate the config file; no file means an empty config (nothing routable)."""
    if path is None:
        return MonitorConfig()
    too_deep = (
        f"config file {path} nests arrays or tables deeper than {MAX_CONFIG_DEPTH} levels; "
        "flatten it (a config needs only a few levels)"
    )
    text = _read_config_text(path)
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    except RecursionError:  # tomllib recurses per nesting level
        raise ConfigError(too_deep) from None
    if _nests_deeper_than(raw, MAX_CONFIG_DEPTH):
        raise ConfigError(too_deep)
    try:
        config = MonitorConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc, source=str(path))) from None
    if config.workspace is not None and not config.workspace.root.is_absolute():
        # Relative to the file that names it, so the config means the same from any working directory.
        config.workspace.root = path.parent.absolute() / config.workspace.root
    return config
