"""Who is calling: a name (for the audit log) and the scopes it holds."""

from __future__ import annotations

import getpass
from dataclasses import dataclass, field

from incident_monitor.policy.scopes import DEFAULT_AGENT_SCOPES, OPERATOR_SCOPES


@dataclass(frozen=True, slots=True)
class Principal:
    name: str
    scopes: frozenset[str]
    kind: str = "agent"  # agent | operator | local | system
    token_id: str | None = field(default=None, compare=False)
    # Set when the credential stopped being valid mid-session: the principal then holds no scopes.
    credential_problem: str | None = field(default=None, compare=False)


# stdio without INCIDENT_MONITOR_TOKEN: the person who started the client is trusted with the
# default agent scopes, never with approve (an agent must not approve its own request).
LOCAL_AGENT = Principal(name="local-agent", scopes=DEFAULT_AGENT_SCOPES, kind="local")


def local_operator() -> Principal:
    """The operator at this machine's CLI. Distinct from every agent principal by name."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return Principal(name=f"operator:{user}", scopes=OPERATOR_SCOPES, kind="operator")
