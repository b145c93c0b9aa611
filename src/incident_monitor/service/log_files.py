"""Opening a log source's files without ever reading a byte outside the workspace root.

Checked at every open, not only at load: a path is resolved (symlinks followed) and must stay inside
the root's real path; the resolved path is then opened with ``O_NOFOLLOW`` (so a symlink swapped in
between the check and the open is refused), ``O_NONBLOCK`` (so opening a FIFO cannot hang), and the
opened descriptor is checked again: its own path (``/proc/self/fd``) must still be inside the root and
``fstat`` must say it is a regular file (FIFOs, devices, sockets and directories are refused).
"""

from __future__ import annotations

import glob
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from incident_monitor.errors import MonitorError


class PathRefused(MonitorError):
    """A source path that resolves outside the workspace root, or is not a regular file."""

    code = "path_refused"


@dataclass(frozen=True, slots=True)
class OpenedFile:
    fd: int
    relative: str  # the path as matched, relative to the root
    device: int
    inode: int
    size: int

    def close(self) -> None:
        os.close(self.fd)


def real_root(root: Path) -> Path:
    """The workspace root's real path; refused when it is missing or not a directory."""
    try:
        resolved = root.resolve(strict=True)
    except (FileNotFoundError, RuntimeError, OSError):
        raise PathRefused(f"[workspace] root '{root}' does not exist; create it or fix root") from None
    if not resolved.is_dir():
        raise PathRefused(f"[workspace] root '{root}' is not a directory; point root at a directory")
    return resolved


def _inside(path: str, root: Path) -> bool:
    root_text = str(root)
    return path == root_text or path.startswith(root_text.rstrip(os.sep) + os.sep)


def match_files(root: Path, pattern: str) -> list[str]:
    """The relative paths the source's path (or glob) names now, sorted (a plain path: itself, if present)."""
    if glob.has_magic(pattern):
        return sorted(glob.glob(pattern, root_dir=root))
    return [pattern] if os.path.lexists(root / pattern) else []


def check_path(root: Path, relative: str) -> str:
    """The real path of ``relative``: refused when it resolves outside ``root`` (a real path)."""
    candidate = root / relative
    resolved = os.path.realpath(candidate)
    if not _inside(resolved, root):
        raise PathRefused(
            f"path '{relative}' resolves outside the workspace root (through '..', an absolute path or a "
            "symlink): refused; keep the log inside [workspace] root and point path at it"
        )
    return resolved


def open_inside(root: Path, relative: str) -> OpenedFile:
    """Open a source file for reading, checked as the module docstring says; PathRefused otherwise."""
    resolved = check_path(root, relative)
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(resolved, flags)
    except FileNotFoundError:
        raise
    except OSError as exc:
        # ELOOP: the last component became a symlink after the check.
        raise PathRefused(
            f"path '{relative}' could not be opened safely ({exc.strerror}): refused; "
            "a symlink swapped in, or a file the monitor may not read"
        ) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise PathRefused(
                f"path '{relative}' is not a regular file (a FIFO, device, socket or directory): refused; "
                "point path at a log file"
            )
        opened = _opened_path(fd)
        if opened is not None and not _inside(opened, root):
            raise PathRefused(
                f"path '{relative}' was swapped for a link outside the workspace root while opening: refused"
            )
        if opened is None and (info.st_dev, info.st_ino) != _identity(resolved):
            raise PathRefused(f"path '{relative}' changed while opening: refused")
    except BaseException:
        os.close(fd)
        raise
    return OpenedFile(fd=fd, relative=relative, device=info.st_dev, inode=info.st_ino, size=info.st_size)


def _opened_path(fd: int) -> str | None:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return None  # no /proc (not Linux): compare identities instead


def _identity(path: str) -> tuple[int, int]:
    info = os.stat(path, follow_symlinks=False)
    return info.st_dev, info.st_ino


def find_by_identity(root: Path, near: str, device: int, inode: int) -> str | None:
    """A file in ``near``'s directory with this identity: where a rotated file went (e.g. app.log → app.log.1)."""
    directory = (root / near).parent
    try:
        resolved_dir = os.path.realpath(directory)
        if not _inside(resolved_dir, root):
            return None
        with os.scandir(resolved_dir) as entries:
            for entry in entries:
                try:
                    info = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                if stat.S_ISREG(info.st_mode) and (info.st_dev, info.st_ino) == (device, inode):
                    return os.path.relpath(entry.path, root)
    except OSError:
        return None
    return None


def read_at(opened: OpenedFile, offset: int, limit: int) -> bytes:
    """Up to ``limit`` bytes from ``offset`` (pread: the descriptor's position is never shared)."""
    chunks: list[bytes] = []
    remaining = limit
    while remaining > 0:
        chunk = os.pread(opened.fd, min(remaining, 4 * 1024 * 1024), offset)
        if not chunk:
            break
        chunks.append(chunk)
        offset += len(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)
