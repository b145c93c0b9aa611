"""The shape of the monitor's own ids, checked before any lookup.

Every id the monitor mints is ``<prefix>_`` and 16 lowercase hex digits (``models.new_id``). A value of
another shape cannot name a row, so it is refused before it is looked up, stored (audit ``subject_id``)
or logged — and the refusal never repeats it: a caller who pasted a credential into ``draft_id`` must
not find it echoed in the error, the audit log or the server log.
"""

from __future__ import annotations

import re

from incident_monitor.errors import InvalidInput

# field name → (prefix, what lists them)
ID_FIELDS: dict[str, tuple[str, str]] = {
    "incident_id": ("inc", "list_incidents"),
    "draft_id": ("drf", "list_drafts"),
    "approval_id": ("apr", "list_approvals"),
    "receipt_id": ("rcp", "list_receipts"),
    "triage_run_id": ("tri", "get_draft"),
}
PREFIX_FOR_FIELD = {field: prefix for field, (prefix, _) in ID_FIELDS.items()}
_SHAPE = re.compile(r"(?:inc|drf|apr|rcp|tri|occ|ccr)_[0-9a-f]{16}")


def is_monitor_id(value: object) -> bool:
    """Whether ``value`` has the shape of an id the monitor minted (any kind)."""
    return isinstance(value, str) and _SHAPE.fullmatch(value) is not None


def has_shape(field: str, value: object) -> bool:
    return is_monitor_id(value) and str(value).startswith(PREFIX_FOR_FIELD[field] + "_")


def check_id(field: str, value: object) -> str:
    """``value`` if it has the shape of ``field``'s ids; otherwise InvalidInput naming the field, not the value."""
    if has_shape(field, value):
        return str(value)
    prefix, listing = ID_FIELDS[field]
    raise InvalidInput(
        f"{field}: not an id of this monitor (expected '{prefix}_' and 16 hex digits); "
        f"copy one from {listing} (the value sent is not repeated here)"
    )


def is_code_change_id(value: object) -> bool:
    return is_monitor_id(value) and str(value).startswith("ccr_")


def check_code_change_id(value: object) -> str:
    """A code change's ``run_id`` (``ccr_``; the field name is shared with a reporting run's, so it is not in
    ID_FIELDS); InvalidInput without the value otherwise."""
    if is_code_change_id(value):
        return str(value)
    raise InvalidInput(
        "run_id: not a code change of this monitor (expected 'ccr_' and 16 hex digits); "
        "copy one from list_code_changes (the value sent is not repeated here)"
    )
