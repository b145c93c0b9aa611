"""Tamper evidence beyond the database (issue 12, 4): fifteen ways to rewrite history, each detected.

Each case edits the database file, the checkpoint file or the key file behind the service's back, as
someone with file access but without the audit key (unless the case says otherwise) would; then
``audit verify`` (the governed service) must report the chain broken. The attacker's re-hashing uses
the same row hash as the monitor: the hash chain is public knowledge, only the key is not.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete
from sqlmodel import Session, col, select

from incident_monitor.domain.models import AuditEvent, AuditEventBase
from incident_monitor.service import audit_queries, queries
from incident_monitor.service.audit_chain import GENESIS_HASH, _row_hash, row_mac
from incident_monitor.service.audit_checkpoints import checkpoint_file_path, write_checkpoint
from incident_monitor.service.audit_keys import AuditKey, key_id_for
from incident_monitor.service.monitor import Monitor
from support.databases import sql_connection
from support.monitors import OPERATOR, MonitorFactory, flow_config


def busy(make_monitor: MonitorFactory) -> Monitor:
    """Rows 1..k, a checkpoint (signing its own record row), more rows, a second checkpoint at the head."""
    monitor = make_monitor(flow_config(self_monitoring={"enabled": False}))
    for _ in range(6):
        queries.list_incidents(monitor, OPERATOR)
    assert write_checkpoint(monitor) is not None
    for _ in range(4):
        queries.list_incidents(monitor, OPERATOR)
    assert write_checkpoint(monitor) is not None
    return monitor


def sql(monitor: Monitor, *statements: str) -> None:
    with sql_connection(monitor) as connection:
        for statement in statements:
            connection.execute(statement)


def rows(monitor: Monitor) -> list[dict[str, Any]]:
    with Session(monitor.engine) as session:
        found = session.exec(select(AuditEvent).order_by(col(AuditEvent.seq))).all()
        return [AuditEventBase.model_validate(r, from_attributes=True).model_dump() for r in found]


def rewrite(monitor: Monitor, new_rows: list[dict[str, Any]], *, key: AuditKey | None = None) -> None:
    """Replace the table with ``new_rows``, renumbered and re-hashed (and re-MACed with ``key`` if given)."""
    prev = GENESIS_HASH
    out = []
    for seq, row in enumerate(new_rows, start=1):
        event = AuditEventBase.model_validate({**row, "seq": seq, "prev_hash": prev})
        event.hash = _row_hash(event, prev)
        if key is not None:
            event.key_id, event.mac = key.key_id, row_mac(key, seq, event.hash)
        prev = event.hash
        out.append(AuditEvent.model_validate(event.model_dump()))
    with Session(monitor.engine) as session:
        session.exec(delete(AuditEvent))  # type: ignore[call-overload]
        session.add_all(out)
        session.commit()


def checkpoint_lines(monitor: Monitor) -> list[str]:
    return checkpoint_file_path(monitor).read_text().splitlines()


def write_lines(monitor: Monitor, lines: list[str]) -> None:
    checkpoint_file_path(monitor).write_text("".join(line + "\n" for line in lines))


# --- the cases --------------------------------------------------------------------------------------


def edit_middle_row(m: Monitor) -> None:
    sql(m, "UPDATE audit_events SET principal = 'someone-else' WHERE seq = 3")


def delete_middle_row(m: Monitor) -> None:
    sql(m, "DELETE FROM audit_events WHERE seq = 4")


def reorder_middle_rows(m: Monitor) -> None:
    sql(
        m,
        "UPDATE audit_events SET seq = 1000 WHERE seq = 2",
        "UPDATE audit_events SET seq = 2 WHERE seq = 3",
        "UPDATE audit_events SET seq = 3 WHERE seq = 1000",
    )


def delete_last_row(m: Monitor) -> None:
    sql(m, "DELETE FROM audit_events WHERE seq = (SELECT MAX(seq) FROM audit_events)")


def delete_last_rows(m: Monitor) -> None:
    sql(m, "DELETE FROM audit_events WHERE seq > (SELECT MAX(seq) - 4 FROM audit_events)")


def delete_every_row(m: Monitor) -> None:
    sql(m, "DELETE FROM audit_events")


def edit_and_rehash_the_rest(m: Monitor) -> None:
    current = rows(m)
    current[2]["principal"] = "someone-else"
    rewrite(m, current)


def insert_a_row_in_the_middle(m: Monitor) -> None:
    current = rows(m)
    rewrite(m, [*current[:3], {**current[2], "action": "forged_action"}, *current[3:]])


def append_a_forged_row(m: Monitor) -> None:
    current = rows(m)
    rewrite(m, [*current, {**current[-1], "action": "forged_action", "mac": "0" * 64}])


def swap_two_macs(m: Monitor) -> None:
    current = rows(m)
    with sql_connection(m) as connection:
        connection.execute("UPDATE audit_events SET mac = ? WHERE seq = 2", (current[4]["mac"],))
        connection.execute("UPDATE audit_events SET mac = ? WHERE seq = 5", (current[1]["mac"],))


def strip_every_mac_and_rehash(m: Monitor) -> None:
    current = rows(m)
    current[2]["principal"] = "someone-else"
    rewrite(m, [{**r, "key_id": None, "mac": None} for r in current])


def forge_a_checkpoint(m: Monitor) -> None:
    lines = checkpoint_lines(m)
    forged = json.loads(lines[-1])
    forged["seq"] += 5  # claims rows that never existed... or hides a rewrite: the signature no longer binds
    write_lines(m, [*lines[:-1], json.dumps(forged)])


def truncate_the_checkpoint_file(m: Monitor) -> None:
    write_lines(m, checkpoint_lines(m)[:-1])


def delete_the_checkpoint_file(m: Monitor) -> None:
    checkpoint_file_path(m).unlink()


def replace_the_key_and_reseal(m: Monitor) -> None:
    """Someone swaps in a key of their own and re-MACs (and re-hashes) the whole edited chain with it."""
    assert m.audit_keys.key_file is not None
    secret = b"an attacker's own key, 32 bytes at least!"
    key = AuditKey(key_id_for(secret), secret)
    m.audit_keys.key_file.write_text(
        json.dumps({"current": key.key_id, "keys": [{"id": key.key_id, "secret": base64.b64encode(secret).decode()}]})
    )
    current = rows(m)
    current[2]["principal"] = "someone-else"
    rewrite(m, current, key=key)


@dataclass(frozen=True)
class Case:
    tamper: Callable[[Monitor], None]
    reopen: bool = False  # the key file changed: a new process reads it


CASES: dict[str, Case] = {
    "edit a middle row": Case(edit_middle_row),
    "delete a middle row": Case(delete_middle_row),
    "reorder two middle rows": Case(reorder_middle_rows),
    "delete the last row": Case(delete_last_row),
    "delete the last rows": Case(delete_last_rows),
    "delete every row": Case(delete_every_row),
    "edit a row and re-hash the rest": Case(edit_and_rehash_the_rest),
    "insert a row in the middle (re-hashed)": Case(insert_a_row_in_the_middle),
    "append a forged row at the end": Case(append_a_forged_row),
    "swap the MACs of two rows": Case(swap_two_macs),
    "strip every MAC and re-hash": Case(strip_every_mac_and_rehash),
    "forge a checkpoint": Case(forge_a_checkpoint),
    "truncate the checkpoint file": Case(truncate_the_checkpoint_file),
    "delete the checkpoint file": Case(delete_the_checkpoint_file),
    "replace the key and re-seal the chain": Case(replace_the_key_and_reseal, reopen=True),
}


def test_there_are_fifteen_cases() -> None:
    assert len(CASES) == 15


def test_the_untouched_chain_verifies(make_monitor: MonitorFactory) -> None:
    monitor = busy(make_monitor)
    result = audit_queries.verify_audit(monitor, OPERATOR)
    assert result.ok, result.problem
    assert result.last_checkpoint_seq is not None


def test_the_attackers_rewrite_is_faithful(make_monitor: MonitorFactory) -> None:
    """Re-hashing and re-sealing with the real key reproduces the chain exactly: the cases above fail for
    the reason they name, not because the rewrite itself is off."""
    monitor = busy(make_monitor)
    before = rows(monitor)
    rewrite(monitor, before, key=monitor.audit_keys.current)
    assert rows(monitor) == before
    assert audit_queries.verify_audit(monitor, OPERATOR).ok


@pytest.mark.parametrize("name", list(CASES))
def test_tampering_is_detected(make_monitor: MonitorFactory, name: str, tmp_path: Path) -> None:
    case = CASES[name]
    monitor = busy(make_monitor)
    case.tamper(monitor)
    if case.reopen:
        monitor = make_monitor(flow_config(self_monitoring={"enabled": False}), data_dir=monitor.data_dir)

    full = audit_queries.verify_audit(monitor, OPERATOR)
    assert full.ok is False, f"{name}: not detected"
    assert full.problem
    # What posture runs, every call: it catches the same (the checkpointed rows are still compared).
    incremental = audit_queries.verify_audit(monitor, OPERATOR, incremental=True)
    if name not in INCREMENTAL_BLIND_SPOTS:
        assert incremental.ok is False, f"{name}: not detected by the incremental check"


# Edits to rows before the newest checkpoint that leave the checkpointed rows alone: only the full
# check (`audit verify`) reads those rows; posture's incremental check does not.
INCREMENTAL_BLIND_SPOTS = {
    "edit a middle row",
    "delete a middle row",
    "reorder two middle rows",
    "swap the MACs of two rows",
}


def test_no_checkpoint_is_written_over_a_broken_chain(make_monitor: MonitorFactory) -> None:
    monitor = busy(make_monitor)
    before = checkpoint_lines(monitor)
    delete_last_rows(monitor)

    assert write_checkpoint(monitor) is None
    assert audit_queries.verify_audit(monitor, OPERATOR).ok is False
    assert checkpoint_lines(monitor) == before
