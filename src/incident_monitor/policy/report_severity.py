"""The severity intake stores for a report: run errors noted, development sources lowered.

A report whose event ends in ``failed``/``error``/``errored``/``crashed``/``aborted`` at level error or
above is a run error (noted in the audit, linked to the reporting run); a report from one of
``self_monitoring.development_sources`` is severity low (an explicit ``risk_level`` can still raise it).
Pure: used by intake, and by self-monitoring's documentation of what opens an incident.
"""

from __future__ import annotations

import re

from incident_monitor.config import MonitorConfig
from incident_monitor.domain.enums import Severity
from incident_monitor.domain.io import IncidentReport
from incident_monitor.policy.principal import Principal

RUN_ERROR_SUFFIXES = frozenset({"failed", "error", "errored", "crashed", "aborted"})
RUN_ERROR_LEVELS = frozenset({"error", "err", "critical", "fatal", "alert", "emergency"})


def is_run_error(event: str, level: str) -> bool:
    """A report saying an agent's run ended in error (see the module docstring)."""
    last = re.split(r"[.:/]", event.lower())[-1]
    return last in RUN_ERROR_SUFFIXES and level.lower() in RUN_ERROR_LEVELS


def report_severity(
    config: MonitorConfig, principal: Principal, report: IncidentReport, severity: Severity
) -> tuple[Severity, str | None]:
    """The severity intake stores for a report, and an audit note saying why it differs (if it does)."""
    note = None
    if principal.kind != "system" and is_run_error(report.event, report.level):
        note = f"run error reported by {principal.name}" + (f", linked to run {report.run_id}" if report.run_id else "")
    if report.source in config.self_monitoring.development_sources:
        lowered = Severity.highest(Severity.low, report.risk_level)
        if lowered != severity:
            note = (note + "; " if note else "") + f"development source {report.source!r}: severity {lowered.value}"
        return lowered, note
    return severity, note
