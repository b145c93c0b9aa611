"""Log sources inside a real server process: ``incident-monitor serve`` (stdio and HTTP) tails the files.

The tests wait for what the server stores (reading its SQLite file), never for a time: each wait polls
until the expected state or a generous deadline, and the assertions are on counts, not durations.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest

from support.databases import raw_sql, table_names
from support.log_files import CI_LOG_SOURCE_CONFIG, database_text_at
from support.secret_samples import GITHUB_PAT
from support.stdio_server import SCRIPT, call, child_env, served

pytestmark = pytest.mark.anyio

DEADLINE_SECONDS = 60
OUTSIDE_CANARY = "outside-the-root-canary"


def write_config(tmp_path: Path) -> Path:
    (tmp_path / "ws" / "logs").mkdir(parents=True)
    path = tmp_path / "config.toml"
    path.write_text(CI_LOG_SOURCE_CONFIG, encoding="utf-8")
    return path


def ci_incidents(data_dir: Path) -> dict[str, int]:
    """The server's incidents from the source so far (none while it has not made its tables yet)."""
    if "incidents" not in table_names(data_dir):
        return {}
    return dict(raw_sql(data_dir, "SELECT title, occurrence_count FROM incidents WHERE source = 'ci'"))


async def eventually(condition: Callable[[], bool], what: str) -> None:
    with anyio.move_on_after(DEADLINE_SECONDS):
        while not condition():
            await anyio.sleep(0.05)
        return
    pytest.fail(f"the server never got there: {what}")


def append(path: Path, text: str) -> None:
    with path.open("a", encoding="utf-8") as f:
        f.write(text)


async def test_the_stdio_server_tails_restarts_rotates_and_refuses_escapes(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    data_dir, errlog = tmp_path / "data", tmp_path / "server.log"
    log = tmp_path / "ws" / "logs" / "ci.log"
    outside = tmp_path / "outside.log"
    outside.write_text(f"ERROR {OUTSIDE_CANARY}\n")
    env = child_env()
    append(log, "INFO build started\nERROR lint failed in module alpha\n")

    async with served(config, data_dir, env, errlog) as client:
        await eventually(lambda: ci_incidents(data_dir) == {"lint failed in module alpha": 1}, "the first report")
        append(
            log,
            "Traceback (most recent call last):\n"
            '  File "/ci/run.py", line 3, in <module>\n'
            "    deploy()\n"
            "RuntimeError: deploy refused\n"
            f"ERROR push rejected, token {GITHUB_PAT}\n"
            "ERROR partial line wait",
        )
        await eventually(lambda: len(ci_incidents(data_dir)) == 3, "the traceback and the secret line")
        assert ci_incidents(data_dir)["RuntimeError: deploy refused"] == 1  # a traceback is one report
        sources = await call(client, "list_sources")
        assert sources == {"sources": [{"log_source_id": "ci-log", "problem": None}]}
        status = await call(client, "get_status")
        assert status["readiness"]["source_ready"] == {"ci-log": True}

    # Stopped: lines written now are read at the restart, once.
    append(log, "s for its newline\nERROR lint failed in module alpha\n")
    async with served(config, data_dir, env, errlog) as client:
        await eventually(lambda: "partial line waits for its newline" in ci_incidents(data_dir), "the resumed lines")
        await eventually(lambda: ci_incidents(data_dir)["lint failed in module alpha"] == 2, "the repeat")
        # Rotation while running: the old file's unread tail, then the new file.
        append(log, "ERROR bravo failed before rotation\n")
        log.rename(log.with_name("ci.log.1"))
        append(log, "ERROR charlie failed after rotation\n")
        await eventually(lambda: "charlie failed after rotation" in ci_incidents(data_dir), "the rotated file")
        await eventually(lambda: "bravo failed before rotation" in ci_incidents(data_dir), "the old file's tail")
        # A symlink swapped in after start is refused; the outside file is never read.
        log.unlink()
        log.symlink_to(outside)
        await eventually(lambda: "outside the workspace root" in (_last_problem(data_dir) or ""), "the refused symlink")
        sources = await call(client, "list_sources")
        assert "outside the workspace root" in sources["sources"][0]["problem"]

    counts = ci_incidents(data_dir)
    assert counts == {
        "lint failed in module alpha": 2,
        "RuntimeError: deploy refused": 1,
        "push rejected, token [REDACTED]": 1,
        "partial line waits for its newline": 1,
        "bravo failed before rotation": 1,
        "charlie failed after rotation": 1,
    }, "a line was lost or reported twice across the restart and the rotation"
    stored = database_text_at(data_dir)
    assert OUTSIDE_CANARY not in stored
    assert GITHUB_PAT not in stored and GITHUB_PAT not in errlog.read_text()


def _last_problem(data_dir: Path) -> str | None:
    rows = raw_sql(data_dir, "SELECT last_problem FROM log_source_states WHERE source_id = 'ci-log'")
    return rows[0][0] if rows else None


def test_the_http_server_tails_too_and_the_cli_reads_and_resets(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    data_dir = tmp_path / "data"
    log = tmp_path / "ws" / "logs" / "ci.log"
    append(log, "ERROR nightly build failed\n")
    env = child_env()
    args = [str(SCRIPT), "serve", "--transport", "http", "--port", "0", "--no-auth"]
    process = subprocess.Popen(
        [*args, "--config", str(config), "--data-dir", str(data_dir)],
        env=env,
        stdin=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stderr is not None
        started = process.stderr.readline() + process.stderr.readline()
        assert re.search(r"serving http://127\.0\.0\.1:\d+/mcp", started), started
        anyio.run(eventually, lambda: ci_incidents(data_dir) == {"nightly build failed": 1}, "the http server's report")
    finally:
        process.terminate()
        process.wait(timeout=30)

    def cli(*words: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(SCRIPT), "sources", *words, "--config", str(config), "--data-dir", str(data_dir)],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    listed = cli("list")
    assert listed.returncode == 0, listed.stderr
    assert re.search(r"ci-log\s+app\s+ci\s+logs/ci\.log\s+1\s+0\s+ready", listed.stdout), listed.stdout
    status = cli("status", "ci-log")
    assert status.returncode == 0 and "logs/ci.log: offset 27 of 27 bytes" in status.stdout, status.stdout
    reset = cli("reset-offset", "ci-log")
    assert reset.returncode == 0 and "moved to the start (audited)" in reset.stdout
    assert "offset 0 of 27" in cli("status", "ci-log").stdout
    replay = cli("replay-latest", "ci-log", "--lines", "5")
    assert replay.returncode == 0 and "1 report(s)" in replay.stdout, replay.stdout + replay.stderr
    missing = cli("status", "nope")
    assert missing.returncode != 0 and "source 'nope' not found" in missing.stderr
    assert ci_incidents(data_dir) == {"nightly build failed": 2}
