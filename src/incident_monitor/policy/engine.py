"""The scope decision: principal + action → allow, or deny with reasons. Pure; no I/O."""

from __future__ import annotations

from dataclasses import dataclass

from incident_monitor.domain.enums import Decision
from incident_monitor.policy.principal import Principal
from incident_monitor.policy.scopes import required_scopes


@dataclass(frozen=True, slots=True)
class PolicyDecision:
    decision: Decision
    reasons: tuple[str, ...] = ()
    missing_scopes: tuple[str, ...] = ()

    @property
    def allowed(self) -> bool:
        return self.decision is Decision.allow


def check_action(principal: Principal, action: str) -> PolicyDecision:
    needed = required_scopes(action)
    if needed is None:
        return PolicyDecision(Decision.deny, (f"unknown action '{action}': denied (fail closed)",))
    missing = tuple(sorted(needed - principal.scopes))
    if missing:
        return PolicyDecision(
            Decision.deny,
            (f"{principal.name} lacks scope {', '.join(missing)} required by {action}",),
            missing,
        )
    return PolicyDecision(Decision.allow, (f"{principal.name} holds {', '.join(sorted(needed))}",))


def can_call(principal: Principal, action: str) -> bool:
    return check_action(principal, action).allowed
