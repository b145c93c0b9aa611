"""The shell commands printed in README.md, docs/ and benchmarks/README.md, and how each is run.

Every fenced block whose language is ``sh``, ``bash``, ``shell`` or ``console`` is a command block.
The line right before its fence may say how the docs test treats it:

    <!-- docs-test: background until "TEXT" -->   started in the background; the next block runs once
                                                  TEXT appears in its output; stopped at the end
    <!-- docs-test: not run, needs REASON -->     not run here; REASON names the outside credentials or
                                                  program it needs (a GitHub token, Claude Code, …)

The background marker may end with ``; skip "COMMAND" because REASON`` to leave out one line of the
block (the README's ``make test`` is the suite itself: .ci/run runs it).

Anything else runs in the foreground and must exit 0. The blocks of one page run in order in one
shell, so a variable set in one block is there in the next.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

SHELL_LANGUAGES = frozenset({"sh", "bash", "shell", "console"})
_FENCE = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|~{3,})(?P<info>[^`]*)$")
_BACKGROUND = re.compile(
    r'<!--\s*docs-test:\s*background until "(?P<ready>[^"]+)"'
    r'(?:\s*;\s*skip "(?P<skip>[^"]+)" because (?P<why>[^>]+?))?\s*-->'
)
_NOT_RUN = re.compile(r"<!--\s*docs-test:\s*not run, needs (?P<reason>[^>]+?)\s*-->")
_MARKER = re.compile(r"<!--\s*docs-test:")


@dataclass(frozen=True)
class CommandBlock:
    page: Path
    line: int  # 1-based line of the opening fence
    text: str
    background_until: str | None = None
    not_run_because: str | None = None
    skipped_line: str | None = None  # a line of the block that is not run (with skip_reason)
    skip_reason: str | None = None

    @property
    def run_text(self) -> str:
        """The block as run: as printed, less its skipped line."""
        if self.skipped_line is None:
            return self.text
        kept = [line for line in self.text.splitlines() if line.split(" #")[0].strip() != self.skipped_line]
        return "\n".join(kept)

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"

    @property
    def commands(self) -> int:
        """Commands in the block: lines that are not blank, comments or continuations."""
        count = 0
        continued = False
        for raw in self.run_text.splitlines():
            line = raw.strip()
            if not continued and line and not line.startswith("#"):
                count += 1
            continued = line.endswith("\\")
        return count


class MalformedDocs(ValueError):
    """A marker the docs test does not understand, or a fence that never closes."""


def command_blocks(page: Path) -> list[CommandBlock]:
    lines = page.read_text(encoding="utf-8").splitlines()
    blocks: list[CommandBlock] = []
    index = 0
    while index < len(lines):
        opening = _FENCE.match(lines[index])
        if not opening:
            index += 1
            continue
        fence, info = opening["fence"], opening["info"].strip()
        end = index + 1
        while end < len(lines) and not lines[end].strip().startswith(fence):
            end += 1
        if end == len(lines):
            raise MalformedDocs(f"{page}:{index + 1}: code fence never closes")
        language = info.split()[0].lower() if info else ""
        if language in SHELL_LANGUAGES:
            blocks.append(_block(page, lines, index, "\n".join(lines[index + 1 : end])))
        index = end + 1
    return blocks


def _block(page: Path, lines: list[str], fence_index: int, text: str) -> CommandBlock:
    before = fence_index - 1
    while before >= 0 and not lines[before].strip():
        before -= 1
    marker = lines[before].strip() if before >= 0 else ""
    if not _MARKER.search(marker):
        return CommandBlock(page, fence_index + 1, text)
    if background := _BACKGROUND.search(marker):
        skipped = background["skip"]
        if skipped is not None and skipped not in [line.split(" #")[0].strip() for line in text.splitlines()]:
            raise MalformedDocs(f"{page}:{before + 1}: the marker skips {skipped!r}, which the block does not hold")
        return CommandBlock(
            page,
            fence_index + 1,
            text,
            background_until=background["ready"],
            skipped_line=skipped,
            skip_reason=background["why"],
        )
    if not_run := _NOT_RUN.search(marker):
        return CommandBlock(page, fence_index + 1, text, not_run_because=not_run["reason"])
    raise MalformedDocs(
        f"{page}:{before + 1}: unknown docs-test marker {marker!r}; "
        'use <!-- docs-test: background until "TEXT" --> or <!-- docs-test: not run, needs REASON -->'
    )


def shell_script(blocks: list[CommandBlock], *, ready_timeout_seconds: int = 180) -> str:
    """One bash script that runs a page's blocks in order, as printed."""
    parts = [
        "set -euo pipefail",
        "background=()",
        'stop_background() { for pid in "${background[@]}"; do kill -TERM -- "-$pid" 2>/dev/null || true; done; '
        'for pid in "${background[@]}"; do wait "$pid" 2>/dev/null || true; done; }',
        "trap stop_background EXIT",
    ]
    for number, block in enumerate(blocks):
        if block.not_run_because is not None:
            continue
        parts.append(f"echo '>>> docs block {block.where}' >&2")
        if block.background_until is None:
            parts.append(block.run_text)
            continue
        log = f"background-{number}.log"
        parts.append(f"setsid bash -c {_quote(block.run_text)} > {log} 2>&1 &")
        parts.append('background+=("$!")')
        ready = _quote(block.background_until)
        exited = f'{{ cat {log} >&2; echo "{block.where} exited" >&2; exit 1; }}'
        parts.append(
            f"for _ in $(seq {ready_timeout_seconds * 5}); do grep -qF {ready} {log} && break; "
            f'kill -0 "${{background[-1]}}" 2>/dev/null || {exited}; sleep 0.2; done'
        )
        parts.append(
            f"grep -qF {_quote(block.background_until)} {log} || "
            f'{{ cat {log} >&2; echo "{block.where}: not ready in {ready_timeout_seconds}s" >&2; exit 1; }}'
        )
    return "\n".join(parts) + "\n"


def _quote(text: str) -> str:
    return "'" + text.replace("'", "'\"'\"'") + "'"
