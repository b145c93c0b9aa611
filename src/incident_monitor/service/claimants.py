"""Who holds a lease (a publish's pending receipt, a log source): claimant ids, and whether the process a
claimant id names is known to be gone.

An id is ``host:pid:random:pid-namespace``. The random part tells a restarted process that got the same pid
from its predecessor; the host and PID namespace say where the pid means something. A lease whose claimant
ran on this host, in this PID namespace, under a pid that no longer runs is dead at once (a server restarted
after a crash finishes its own publishes without waiting); any other claimant's lease holds until it lapses
(another host, another container, or a process still running).
"""

from __future__ import annotations

import os
import socket
import uuid

_HOST = socket.gethostname()
# The random parts of the ids this process made: with our own pid, any other one was a predecessor's.
_MINE: set[str] = set()


def _pid_namespace() -> str:
    try:
        return os.readlink("/proc/self/ns/pid").removeprefix("pid:[").removesuffix("]")
    except OSError:  # no procfs (not Linux): liveness is never judged from a pid, leases simply lapse
        return "-"


def new_claimant_id() -> str:
    random_part = uuid.uuid4().hex[:8]
    _MINE.add(random_part)
    return f"{_HOST}:{os.getpid()}:{random_part}:{_pid_namespace()}"


# This process, for the publishing outbox's leases.
PROCESS_CLAIMANT = new_claimant_id()


def is_gone(claimant: str | None) -> bool:
    """True only when ``claimant`` names a process of this host and PID namespace that no longer runs."""
    parts = (claimant or "").split(":")
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
