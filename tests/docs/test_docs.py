"""The docs stay true: every shell command printed in README.md, docs/ and benchmarks/README.md runs here as
printed (or says which outside credentials or program it needs), and the README stays short.

Each page's blocks run in order in one bash shell, in a copy of the repository, with a fresh HOME and XDG
directories and `.venv/bin` first on PATH (as after activating the venv or `pipx install .`). Where this
machine allows it (root and `unshare`), the shell runs in a network namespace of its own, so the fixed
ports the docs print (8000 for `make run`) are free whatever else runs here.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from support.docs_commands import CommandBlock, command_blocks, shell_script
from support.paths import ROOT

README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").rglob("*.md")), ROOT / "benchmarks" / "README.md"]
README_LIMIT_BYTES = 12 * 1024


def _blocks() -> dict[Path, list[CommandBlock]]:
    return {page: command_blocks(page) for page in PAGES}


def _runnable(blocks: list[CommandBlock]) -> list[CommandBlock]:
    return [b for b in blocks if b.not_run_because is None]


def test_the_readme_is_short_and_opens_with_the_two_set_up_commands() -> None:
    assert len(README.read_bytes()) <= README_LIMIT_BYTES, f"README.md is over {README_LIMIT_BYTES} bytes"
    first = command_blocks(README)[0]
    assert [line.split("#")[0].strip() for line in first.text.splitlines()] == ["make run", "make test"]


def test_every_command_block_runs_or_names_what_it_needs() -> None:
    blocks = _blocks()
    for found in blocks.values():
        for block in found:
            if block.not_run_because is not None:
                assert len(block.not_run_because) >= 10, f"{block.where}: say what the block needs"
    runnable = sum(b.commands for found in blocks.values() for b in _runnable(found))
    assert runnable >= 20, f"only {runnable} commands run from the docs"


def test_links_between_pages_resolve() -> None:
    import re

    for page in PAGES:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text(encoding="utf-8")):
            if "://" in target or target.startswith("mailto:"):
                continue
            assert (page.parent / target).exists(), f"{page.relative_to(ROOT)} links to missing {target}"


def _copy_of_the_repository(destination: Path) -> Path:
    """The tracked and new files, with their times (so make sees .venv as up to date), and the installed
    venv and Node tools linked rather than copied."""
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.decode()
    repo = destination / "repo"
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if not source.is_file():
            continue
        target = repo / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
    (repo / ".venv").symlink_to(ROOT / ".venv")
    node_modules = ROOT / "tools" / "node" / "node_modules"
    if node_modules.exists():
        (repo / "tools" / "node" / "node_modules").symlink_to(node_modules)
    # The venv and Node tools this suite runs with are the ones the commands use: make must not try to
    # reinstall them (the pages run offline), so their inputs are dated before the install stamps.
    for stamp, inputs in (
        (ROOT / ".venv" / ".installed-stamp", ["pyproject.toml"]),
        (node_modules / ".installed-stamp", ["tools/node/package.json", "tools/node/package-lock.json"]),
    ):
        if stamp.exists():
            before = stamp.stat().st_mtime - 60
            for name in inputs:
                os.utime(repo / name, (before, before))
    return repo


def _isolated(command: list[str]) -> list[str]:
    if os.geteuid() == 0 and shutil.which("unshare") and shutil.which("ip"):
        return ["unshare", "--net", "bash", "-c", 'ip link set lo up && exec "$@"', "isolated", *command]
    return command


# The pages' shell has no database URL (it runs as a new user would): the SQLite default, once.
@pytest.mark.sqlite_only
@pytest.mark.parametrize(
    "page",
    [p for p, found in _blocks().items() if _runnable(found)],
    ids=lambda p: str(p.relative_to(ROOT)),
)
def test_the_commands_on_the_page_run_as_printed(page: Path, tmp_path: Path, record_property) -> None:
    blocks = command_blocks(page)
    repo = _copy_of_the_repository(tmp_path)
    home = tmp_path / "home"
    env = {
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_DATA_HOME": str(home / ".local" / "share"),
        "XDG_STATE_HOME": str(home / ".local" / "state"),
        "XDG_CACHE_HOME": str(home / ".cache"),
        "PATH": f"{repo / '.venv' / 'bin'}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "LANG": "C.UTF-8",
        "TERM": "dumb",
    }
    home.mkdir()
    script = tmp_path / "page.sh"
    script.write_text(shell_script(blocks), encoding="utf-8")
    result = subprocess.run(
        _isolated(["bash", str(script)]),
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    ran = sum(b.commands for b in _runnable(blocks))
    record_property("docs_commands_run", ran)
    assert result.returncode == 0, (
        f"{page.relative_to(ROOT)}: a command failed (exit {result.returncode})\n"
        f"--- stdout (last 4000) ---\n{result.stdout[-4000:]}\n--- stderr (last 4000) ---\n{result.stderr[-4000:]}"
    )


def test_every_code_fence_names_its_language() -> None:
    """So a shell command cannot hide in an untyped fence: commands are ```sh, output and layouts ```text."""
    for page in PAGES:
        lines = page.read_text(encoding="utf-8").splitlines()
        inside = False
        for number, line in enumerate(lines, 1):
            if not line.startswith("```"):
                continue
            if not inside:
                assert line.strip("`").strip(), f"{page.relative_to(ROOT)}:{number}: name the fence's language"
            inside = not inside
