"""Every ```sh block in docs/*.md runs as printed, in order, in a copy of the repository.

Fresh HOME, the project's ``.venv/bin`` first on PATH, cwd = a copy of the repository (without .git,
.venv and installed node modules). A block preceded by ``<!-- docs-test: not run, needs REASON -->`` is
skipped (the reason is printed in the document); one preceded by ``<!-- docs-test: background until
"TEXT" -->`` is started in the background, and the next block runs once TEXT appears in its output.
Background blocks are stopped (their process group) when the document is done.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = sorted((ROOT / "docs").glob("*.md"))
BLOCK = re.compile(r"(?:<!--\s*docs-test:(?P<directive>[^>]*)-->\s*\n)?```sh\n(?P<body>.*?)```", re.DOTALL)
BACKGROUND = re.compile(r'^\s*background until "(?P<text>[^"]+)"\s*$')
NOT_RUN = re.compile(r"^\s*not run, needs \S.*$")
DEADLINE_SECONDS = 120
IGNORED = shutil.ignore_patterns(".git", ".venv", "node_modules", ".incident-monitor", "__pycache__", "*.pyc")


@dataclass(frozen=True)
class Block:
    body: str
    directive: str | None

    @property
    def background_until(self) -> str | None:
        found = BACKGROUND.match(self.directive or "")
        return found.group("text") if found else None

    @property
    def skipped(self) -> bool:
        return bool(self.directive) and NOT_RUN.match(self.directive or "") is not None


def blocks(document: Path) -> list[Block]:
    found = [Block(m.group("body"), m.group("directive")) for m in BLOCK.finditer(document.read_text("utf-8"))]
    for block in found:
        if block.directive is not None and not (block.skipped or block.background_until):
            raise AssertionError(f"{document.name}: unknown docs-test directive: {block.directive.strip()!r}")
    return found


def test_the_directives_are_understood() -> None:
    text = '<!-- docs-test: background until "ready" -->\n```sh\nserve\n```\n'
    text += "<!-- docs-test: not run, needs a network -->\n```sh\ncurl x\n```\n```sh\necho hi\n```\n"
    parsed = [Block(m.group("body"), m.group("directive")) for m in BLOCK.finditer(text)]
    assert [(b.background_until, b.skipped) for b in parsed] == [("ready", False), (None, True), (None, False)]


def _environment(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INCIDENT_MONITOR_")}
    env["HOME"] = str(home)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


@pytest.mark.parametrize("document", DOCS, ids=[d.name for d in DOCS])
def test_every_sh_block_runs_as_printed(document: Path, tmp_path: Path) -> None:
    work = tmp_path / "repo"
    shutil.copytree(ROOT, work, ignore=IGNORED, symlinks=True)
    home = tmp_path / "home"
    home.mkdir()
    env = _environment(home)
    background: list[subprocess.Popen[bytes]] = []
    try:
        for index, block in enumerate(blocks(document)):
            if block.skipped:
                continue
            where = f"{document.name}, sh block {index + 1}"
            if block.background_until is not None:
                output = tmp_path / f"background-{index}.log"
                with output.open("wb") as sink:
                    process = subprocess.Popen(
                        ["bash", "-c", block.body],
                        cwd=work,
                        env=env,
                        stdout=sink,
                        stderr=subprocess.STDOUT,
                        stdin=subprocess.DEVNULL,
                        start_new_session=True,
                    )
                background.append(process)
                _wait_for(output, block.background_until, process, where)
                continue
            done = subprocess.run(
                ["bash", "-e", "-o", "pipefail", "-c", block.body],
                cwd=work,
                env=env,
                capture_output=True,
                text=True,
                stdin=subprocess.DEVNULL,
                timeout=DEADLINE_SECONDS,
                check=False,
            )
            assert done.returncode == 0, f"{where} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    finally:
        for process in background:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()


def _wait_for(output: Path, text: str, process: subprocess.Popen[bytes], where: str) -> None:
    deadline = time.monotonic() + DEADLINE_SECONDS
    while time.monotonic() < deadline:
        if text in output.read_text("utf-8", "replace"):
            return
        if process.poll() is not None:
            break
        time.sleep(0.05)
    pytest.fail(f"{where}: {text!r} never appeared in its output:\n{output.read_text('utf-8', 'replace')}")
