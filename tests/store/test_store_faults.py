"""A store that cannot take writes (issue 12): one clear line, ``/readyz`` false, nothing stored lost.

Faults are real: SQLite's own "database or disk is full" (a page limit, or a tmpfs that fills up) and
"attempt to write a readonly database". The server tests run the console script in a private mount
namespace (``unshare -m``) with its data directory on a small tmpfs of its own, so the test can fill
that disk, or mount it read-only, without touching the machine's.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx2
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

from incident_monitor.errors import StoreUnavailable
from incident_monitor.server.auth import INTAKE_PATH
from incident_monitor.server.intake_endpoint import KEY_HEADER
from incident_monitor.store.faults import fault_kind, store_faults, store_health
from support.http_helpers import http_client
from support.mcp_helpers import error_text
from support.monitors import WEBHOOK_SECRET_VARIABLE, new_webhook_secret
from support.paths import EXAMPLES

SCRIPT = Path(sys.executable).with_name("incident-monitor")
CONFIG = EXAMPLES / "config.toml"
REPORT = {"title": "Checkout job failed", "source": "ci", "event": "ci.checkout.failed", "level": "error"}

needs_mount_namespace = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("nsenter") is None,
    reason="needs root and util-linux unshare/nsenter for a private mount namespace (CI runs as root)",
)


# --- the driver's faults, classified --------------------------------------------------------------


def full_database(path: Path) -> sqlite3.Connection:
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("CREATE TABLE t (x BLOB)")
    connection.execute("PRAGMA max_page_count = 3")  # SQLite's own SQLITE_FULL once three pages are used
    return connection


def test_sqlites_own_faults_are_classified_by_their_result_codes(tmp_path: Path) -> None:
    connection = full_database(tmp_path / "full.db")
    with pytest.raises(sqlite3.OperationalError) as full:
        connection.execute("INSERT INTO t VALUES (randomblob(100000))")
    assert fault_kind(full.value) == "disk_full"

    read_only = sqlite3.connect(f"file:{tmp_path / 'full.db'}?mode=ro", uri=True)
    with pytest.raises(sqlite3.OperationalError) as refused:
        read_only.execute("INSERT INTO t VALUES (1)")
    assert fault_kind(refused.value) == "read_only"

    with pytest.raises(sqlite3.OperationalError) as missing:
        sqlite3.connect(f"file:{tmp_path / 'nowhere' / 'x.db'}?mode=rw", uri=True)
    assert fault_kind(missing.value) == "unreachable"

    # Not a fault an operator fixes: a bug or a constraint stays what it is.
    with pytest.raises(sqlite3.OperationalError) as bug:
        connection.execute("SELECT * FROM no_such_table")
    assert fault_kind(bug.value) is None


def test_a_full_store_is_one_clear_error_remembered_for_readiness_until_a_write_succeeds(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'store.db'}")
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE t (x BLOB)"))
    health = store_health(engine)
    assert health.problem() is None

    def write(size: int, pages: int) -> None:
        with store_faults(engine), engine.begin() as connection:
            connection.execute(text(f"PRAGMA max_page_count = {pages}"))
            connection.execute(text("INSERT INTO t VALUES (randomblob(:n))"), {"n": size})

    for _ in range(3):  # three failed calls, one log line
        with pytest.raises(StoreUnavailable) as refused:
            write(100_000, 3)
    assert refused.value.code == "store_unavailable"
    assert refused.value.kind == "disk_full"
    assert "full; free space there, then retry" in refused.value.message
    assert str(tmp_path / "store.db") in refused.value.message
    assert "INSERT" not in refused.value.message and "randomblob" not in refused.value.message
    assert isinstance(refused.value.__cause__, OperationalError)
    lines = [r.getMessage() for r in caplog.records if r.name == "incident_monitor.store"]
    assert lines == [f"store: {refused.value.message}"]

    fault = health.problem()
    assert fault is not None and fault.kind == "disk_full"

    write(10, 1000)  # space again: the next write succeeds and the store is ready at once
    assert health.problem() is None
    assert [r.getMessage() for r in caplog.records if r.name == "incident_monitor.store"][-1] == (
        "store: writes succeed again (after disk full)"
    )
    with engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM t")).scalar_one() == 1
    engine.dispose()


def test_an_error_that_is_not_a_store_fault_passes_through_unchanged(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'store.db'}")
    with pytest.raises(OperationalError), store_faults(engine), engine.begin() as connection:
        connection.execute(text("SELECT * FROM no_such_table"))
    with pytest.raises(KeyError), store_faults(engine):
        raise KeyError("not a database error")
    assert store_health(engine).problem() is None
    engine.dispose()


# --- the real server, its data directory on a tmpfs of its own ----------------------------------------


@dataclass
class NamespacedServer:
    process: subprocess.Popen[str]
    url: str
    mount: Path
    errlog: Path

    @property
    def data_dir_from_here(self) -> Path:
        """The server's data directory as this process reaches it (through the namespace's root)."""
        return Path(f"/proc/{self.process.pid}/root") / self.mount.relative_to("/")

    def in_namespace(self, *command: str) -> None:
        subprocess.run(["nsenter", "-t", str(self.process.pid), "-m", *command], check=True, capture_output=True)

    def server_log(self) -> str:
        return self.errlog.read_text(encoding="utf-8")


def seeded_data_dir(tmp_path: Path, env: dict[str, str]) -> tuple[Path, str, str]:
    """A data directory with an agent token and an intake key, made by the CLI as an operator would."""
    seed = tmp_path / "seed"
    common = ["--config", str(CONFIG), "--data-dir", str(seed)]

    def secret(*args: str) -> str:  # printed once, on stdout alone
        done = subprocess.run([str(SCRIPT), *args, *common], env=env, capture_output=True, text=True, check=True)
        return done.stdout.strip()

    token = secret("tokens", "create", "--name", "ci-agent", "--scopes", "read,report")
    key = secret("intake-keys", "create", "--project", "web-app", "--source", "ci")
    return seed, token, key


@contextmanager
def namespaced_server(
    tmp_path: Path, env: dict[str, str], seed: Path, *, tmpfs_size: str, read_only: bool = False
) -> Iterator[NamespacedServer]:
    mount = tmp_path / "mnt"
    mount.mkdir()
    errlog = tmp_path / "server.log"
    # The tmpfs gets a copy of the seeded data directory; read_only mounts it read-only before serving.
    script = (
        'mount -t tmpfs -o size="$1" tmpfs "$2" && cp -a "$3"/. "$2"/ '
        + ('&& mount -o remount,ro "$2" ' if read_only else "")
        + '&& exec "$4" serve --transport http --port 0 --config "$5" --data-dir "$2"'
    )
    args = ["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh"]
    args += [tmpfs_size, str(mount), str(seed), str(SCRIPT), str(CONFIG)]
    with errlog.open("w", encoding="utf-8") as log:
        process = subprocess.Popen(args, env=env, stdin=subprocess.DEVNULL, stderr=log, text=True)
    try:
        deadline = time.monotonic() + 60
        url = None
        while url is None and process.poll() is None and time.monotonic() < deadline:
            found = re.search(r"serving (http://127\.0\.0\.1:\d+)/mcp", errlog.read_text(encoding="utf-8"))
            url = found.group(1) if found else None
            time.sleep(0.05)
        yield NamespacedServer(process, url or "", mount, errlog)
    finally:
        process.terminate()
        process.wait(timeout=30)


def server_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INCIDENT_MONITOR_")}
    env[WEBHOOK_SECRET_VARIABLE] = new_webhook_secret()
    env["INCIDENT_MONITOR_AUDIT_KEY_FILE"] = str(tmp_path / "audit.key")  # outside the data directory
    env["XDG_CONFIG_HOME"] = str(tmp_path / "xdg-config")
    return env


def fill(directory: Path) -> int:
    """Write a file into ``directory`` until its file system is full; the bytes written."""
    written = 0
    with (directory / "filler").open("wb", buffering=0) as filler:
        try:
            while True:
                written += filler.write(b"\0" * 65536) or 0
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    return written


@needs_mount_namespace
@pytest.mark.anyio
async def test_a_full_disk_is_one_clear_line_and_not_ready_and_nothing_stored_is_lost(tmp_path: Path) -> None:
    env = server_env(tmp_path)
    seed, token, intake_key = seeded_data_dir(tmp_path, env)
    with namespaced_server(tmp_path, env, seed, tmpfs_size="24m") as server:
        assert server.url, f"server did not start: {server.server_log()}"
        acknowledged: list[str] = []
        async with http_client(server.url, token) as agent:
            first = await agent.call_tool("report_incident", {**REPORT, "event": "ci.before.failed"})
            assert not first.is_error, error_text(first)
            acknowledged.append(first.structured_content["incident_id"])
            assert httpx2.get(f"{server.url}/readyz").status_code == 200

            fill(server.data_dir_from_here)
            ready = httpx2.get(f"{server.url}/readyz")
            assert ready.status_code == 503
            assert ready.json()["database"] == "disk_full"
            assert "full; free space there, then retry" in ready.json()["problems"][0]

            # Calls go on until SQLite runs out of the pages it had (the WAL may hold a few): every
            # answer is either acknowledged (then stored) or the one clear error, never an internal one.
            refused = None
            for attempt in range(200):
                detail = os.urandom(6000).hex()  # incompressible, distinct: each report needs new pages
                result = await agent.call_tool(
                    "report_incident", {**REPORT, "event": f"ci.job{attempt}.failed", "detail": detail}
                )
                if result.is_error:
                    refused = error_text(result)
                    break
                acknowledged.append(result.structured_content["incident_id"])
            assert refused is not None, "the full disk never refused a write"
            assert refused.startswith("store_unavailable: the monitor's database cannot be used now: the disk holding")
            assert "free space there, then retry" in refused
            again = await agent.call_tool(
                "report_incident", {**REPORT, "event": "ci.again.failed", "detail": os.urandom(6000).hex()}
            )
            assert again.is_error and error_text(again).startswith("store_unavailable:")

            intake = httpx2.post(
                f"{server.url}{INTAKE_PATH}",
                headers={KEY_HEADER: intake_key},
                json={
                    "project_id": "web-app",
                    "source_id": "ci",
                    "report": {**REPORT, "detail": os.urandom(6000).hex()},
                },
            )
            assert intake.status_code == 503, intake.text
            assert intake.json()["error"] == "unavailable"

            (server.data_dir_from_here / "filler").unlink()  # the operator frees space
            after = await agent.call_tool("report_incident", {**REPORT, "event": "ci.after.failed"})
            assert not after.is_error, error_text(after)
            acknowledged.append(after.structured_content["incident_id"])
            assert httpx2.get(f"{server.url}/readyz").status_code == 200

            listed = await agent.call_tool("list_incidents", {"limit": 200})
            assert not listed.is_error, error_text(listed)
            stored = {i["incident_id"] for i in listed.structured_content["incidents"]}
            assert set(acknowledged) <= stored, "an acknowledged report was lost"

        log = server.server_log()
        store_lines = [line for line in log.splitlines() if "store: " in line]
        assert len([line for line in store_lines if "disk holding" in line]) == 1, log
        assert any("writes succeed again" in line for line in store_lines), log
        assert "Traceback" not in log

        verify = subprocess.run(
            [str(SCRIPT), "audit", "verify", "--config", str(CONFIG), "--data-dir", str(server.data_dir_from_here)],
            env=env,
            capture_output=True,
            text=True,
        )
        assert verify.returncode == 0, verify.stdout + verify.stderr


@needs_mount_namespace
def test_a_read_only_store_stops_the_server_with_one_clear_line(tmp_path: Path) -> None:
    env = server_env(tmp_path)
    seed, _, _ = seeded_data_dir(tmp_path, env)
    with namespaced_server(tmp_path, env, seed, tmpfs_size="8m", read_only=True) as server:
        assert server.process.wait(timeout=60) != 0
        log = server.server_log()
    assert not server.url
    assert "Traceback" not in log
    lines = [line for line in log.splitlines() if line.strip()]
    assert len(lines) == 1, log
    assert "store_unavailable" in lines[0] or "read-only" in lines[0], log
    assert "read-only" in lines[0] and "make it writable" in lines[0], log
