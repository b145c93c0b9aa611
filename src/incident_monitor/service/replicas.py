"""Who "this replica" is, for the leases that let several server processes share work (a publish's pending
receipt, log sources, code-change polls): one name per lease holder, never shared by two processes, and whether
the process a name stands for is known to be gone.

A name is ``host:pid:random:pid-namespace``. The random part tells a restarted process that got the same pid
from its predecessor; the host and PID namespace say where the pid means something. A lease whose holder ran
on this host, in this PID namespace, under a pid that no longer runs is dead at once (a server restarted after
a crash takes its own work back without waiting); any other holder's lease holds until it lapses (another
host, another container, or a process still running).
"""

from __future__ import annotations

import os
import socket
import uuid

_HOST = socket.gethostname()
# The random parts of the names this process made: with our own pid, any other one was a predecessor's.
_MINE: set[str] = set()


def _pid_namespace() -> str:
    try:
        return os.readlink("/proc/self/ns/pid").removeprefix("pid:[").removesuffix("]")
    except OSError:  # no procfs (not Linux): liveness is never judged from a pid, leases simply lapse
        return "-"


def replica_id() -> str:
    """A new name for a lease holder in this process."""
    random_part = uuid.uuid4().hex[:8]
    _MINE.add(random_part)
    return f"{_HOST}:{os.getpid()}:{random_part}:{_pid_namespace()}"


# This process, for the publishing outbox's leases.
PROCESS_REPLICA = replica_id()


def is_gone(holder: str | None) -> bool:
    """True only when ``holder`` names a process of this host and PID namespace that no longer runs."""
    parts = (holder or "").split(":")
    if len(parts) != 4 or parts[0] != _HOST or parts[3] in ("-", "") or parts[3] != _pid_namespace():
        return False
    try:
        pid = int(parts[1])
    except ValueError:
        return False
    if pid == os.getpid():
        return parts[2] not in _MINE
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # another user's process: running
        return False
    return False
