"""Who is calling: a name (for the audit log) and the scopes it holds."""

from __future__ import annotations

import getpass
from dataclasses import dataclass, field

from incident_monitor.policy.scopes import DEFAULT_AGENT_SCOPES, OPERATOR_SCOPES, REPORT


@dataclass(frozen=True, slots=True)
class Principal:
    name: str
    scopes: frozenset[str]
    kind: str = "agent"  # agent | operator | local | system | source
    token_id: str | None = field(default=None, compare=False)
    # Set when the credential stopped being valid mid-session: the principal then holds no scopes.
    credential_problem: str | None = field(default=None, compare=False)


# stdio without INCIDENT_MONITOR_TOKEN: the person who started the client is trusted with the
# default agent scopes, never with approve (an agent must not approve its own request).
LOCAL_AGENT = Principal(name="local-agent", scopes=DEFAULT_AGENT_SCOPES, kind="local")

# Reports incidents about the monitor itself (service/self_monitoring.py); defined here so intake can tell
# its reports, which alone may use the self-monitoring fingerprint namespace, without importing it.
SELF_MONITOR = Principal(name="system:self-monitor", scopes=frozenset({REPORT}), kind="system")

# Who a refused request without a credential is audited as (console sign-in, cross-site POSTs): no scopes.
UNAUTHENTICATED = Principal(name="unauthenticated", scopes=frozenset())


def local_operator() -> Principal:
    """The operator at this machine's CLI. Distinct from every agent principal by name."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return Principal(name=f"operator:{user}", scopes=OPERATOR_SCOPES, kind="operator")


def source_principal(source_id: str) -> Principal:
    """A configured log source: it may only report (its reports are bound to its project and source)."""
    return Principal(name=f"source:{source_id}", scopes=frozenset({REPORT}), kind="source")
