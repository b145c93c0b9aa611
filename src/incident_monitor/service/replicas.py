"""Who "this replica" is, for the leases that let several server processes share work (log sources, code-change
polls): one name per lease holder, never shared by two processes."""

from __future__ import annotations

import os
import socket
import uuid


def replica_id() -> str:
    """This process, for a lease: host, pid and a random part (a restarted pid is another replica)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
