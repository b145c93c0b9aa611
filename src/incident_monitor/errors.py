"""Errors the service layer raises. Each says what failed and what to do next.

The MCP, HTTP and CLI layers turn these into tool errors, JSON errors and exit codes; the text is
written for the agent or operator who must act on it.
"""

from __future__ import annotations


class MonitorError(Exception):
    """Base class: an anticipated failure whose message is safe to show the caller."""

    code = "error"

    def __init__(self, message: str, *, reasons: list[str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.reasons = reasons or [message]


class PermissionDenied(MonitorError):
    code = "permission_denied"


class NotFound(MonitorError):
    code = "not_found"


class InvalidInput(MonitorError):
    code = "invalid_input"


class ReportRejected(MonitorError):
    code = "report_rejected"


class InvalidTransition(MonitorError):
    code = "invalid_transition"


class ApprovalRequired(MonitorError):
    code = "approval_required"


class PublishBlocked(MonitorError):
    code = "publish_blocked"


class ConfigError(MonitorError):
    code = "config_error"


class CredentialError(MonitorError):
    code = "credential_error"


class InsufficientScope(PermissionDenied):
    """The caller is known but lacks a scope the action needs (OAuth's ``insufficient_scope``)."""

    code = "insufficient_scope"


class StoreUnavailable(MonitorError):
    """The store cannot take this unit of work now (full disk, read-only, out of reach): nothing of it was
    stored and nothing stored before is lost. ``kind`` names the fault; the message says the fix."""

    code = "store_unavailable"

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
