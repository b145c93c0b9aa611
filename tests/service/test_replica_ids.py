"""Replica ids: a lease's holder is judged gone only when it was a process of this host and PID namespace that
no longer runs; anything else (a live process, another host or container, an id of another shape) holds."""

from __future__ import annotations

import os
import subprocess
import sys

from incident_monitor.service.replicas import PROCESS_REPLICA, is_gone, replica_id


def _parts(claimant: str) -> list[str]:
    return claimant.split(":")


def test_this_process_and_a_live_one_are_not_gone() -> None:
    assert not is_gone(PROCESS_REPLICA)
    assert not is_gone(replica_id())
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        host, _, random_part, namespace = _parts(PROCESS_REPLICA)
        assert not is_gone(f"{host}:{live.pid}:{random_part}:{namespace}")
    finally:
        live.kill()
        live.wait()


def test_a_process_of_this_host_that_exited_is_gone() -> None:
    exited = subprocess.Popen([sys.executable, "-c", "pass"])
    exited.wait()
    host, _, random_part, namespace = _parts(PROCESS_REPLICA)
    assert is_gone(f"{host}:{exited.pid}:{random_part}:{namespace}")
    # A predecessor that had this process's pid (its random part is not one of ours) is gone too.
    assert is_gone(f"{host}:{os.getpid()}:00000000:{namespace}")


def test_another_host_another_namespace_or_another_shape_holds() -> None:
    exited = subprocess.Popen([sys.executable, "-c", "pass"])
    exited.wait()
    host, _, random_part, namespace = _parts(PROCESS_REPLICA)
    assert not is_gone(f"elsewhere-{host}:{exited.pid}:{random_part}:{namespace}")
    assert not is_gone(f"{host}:{exited.pid}:{random_part}:1{namespace}")
    assert not is_gone(f"{host}:{exited.pid}:{random_part}:-")
    assert not is_gone("replica-a")
    assert not is_gone(None)
    assert not is_gone(f"{host}:not-a-pid:{random_part}:{namespace}")
