"""Report levels ↔ incident severities: the one map each way.

``LEVEL_FOR_SEVERITY`` names, for each severity, a level of the documented set (critical | error | warning |
info) that maps back to exactly that severity; a test holds the two maps to that.
"""

from __future__ import annotations

from incident_monitor.domain.enums import Severity

LEVEL_SEVERITY: dict[str, Severity] = {
    "emergency": Severity.critical,
    "fatal": Severity.critical,
    "critical": Severity.critical,
    "alert": Severity.critical,
    "error": Severity.high,
    "err": Severity.high,
    "warning": Severity.medium,
    "warn": Severity.medium,
    "notice": Severity.low,
    "info": Severity.low,
    "debug": Severity.low,
    "trace": Severity.low,
}

LEVEL_FOR_SEVERITY: dict[Severity, str] = {
    Severity.critical: "critical",
    Severity.high: "error",
    Severity.medium: "warning",
    Severity.low: "info",
}
