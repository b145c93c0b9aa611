"""One poller per run across replicas (issue 15): a run's poll lease is taken by a conditional UPDATE, so of two
processes polling together each run is polled by one; a lease its holder never gave up lapses, then another
replica takes the run over."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from incident_monitor.destinations.settings import CodingAgentConfig
from incident_monitor.domain.code_change import CodeChangeRun
from incident_monitor.service import code_change_status
from incident_monitor.service.code_change_status import claim_poll, poll_due, poll_lease_length, release_poll
from support.coding_agent import TOKEN, RendezvousPlatform, World, agent_config
from support.monitors import FakeClock, MonitorFactory
from support.paths import TESTS

pytestmark = pytest.mark.anyio
WorldFactory = Callable[..., World]
POLL_ONCE = TESTS / "support" / "code_change_poll_once.py"
RUNS = 6


def lease_of(world: World, run_id: str) -> tuple[str | None, datetime | None, datetime | None]:
    with world.monitor.session() as session:
        run = session.get(CodeChangeRun, run_id)
        assert run is not None
        return run.poll_owner, run.poll_lease_until, run.next_poll_at


async def test_two_processes_polling_together_poll_each_run_once(
    make_monitor: MonitorFactory, clock: FakeClock, coding_agent_world: WorldFactory, tmp_path: Path
) -> None:
    # The replicas run on the real clock: launch on it too, so every run is due (and none is past its limit).
    clock.now = datetime.now(UTC)
    platform = RendezvousPlatform(token=TOKEN, drop_webhooks=True)
    world = coding_agent_world(webhooks=False, platform=platform)
    run_ids = [(await world.launch())[1] for _ in range(RUNS)]
    # The replicas' config: the same platform, with room for a status call that waits for the other replica.
    config = tmp_path / "config.json"
    config.write_text(json.dumps(agent_config(platform.url, None, request_timeout_seconds=60)), encoding="utf-8")

    replicas = [
        subprocess.Popen(
            [sys.executable, str(POLL_ONCE), str(config), str(world.monitor.data_dir), f"replica-{name}"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=TESTS,
        )
        for name in ("a", "b")
    ]
    polled: list[list[str]] = []
    for replica in replicas:
        out, err = replica.communicate(timeout=300)
        assert replica.returncode == 0, err
        polled.append(json.loads(out.splitlines()[-1]))

    a, b = map(set, polled)
    assert a and b, "both replicas polled (their first status calls waited for each other)"
    assert not a & b and a | b == set(run_ids)
    statuses = {f"run-{n:04d}": len(world.polls(f"run-{n:04d}")) for n in range(1, RUNS + 1)}
    assert statuses == {platform_run: 1 for platform_run in statuses}, "one GET /agents/{id} per run"
    for run_id in run_ids:
        owner, until, next_poll = lease_of(world, run_id)
        assert owner is None and until is None and next_poll is not None  # given up, with the next poll time


async def test_a_lapsed_lease_is_taken_over(coding_agent_world: WorldFactory) -> None:
    world = coding_agent_world(webhooks=False)
    _, run_id, _ = await world.launch()
    config = world.monitor.config.destination("coding-agent")
    lease = poll_lease_length(config)  # type: ignore[arg-type]

    # Replica a takes the lease, then dies mid-poll: it never gives it up.
    assert claim_poll(world.monitor, run_id, "replica-a", lease)
    assert await poll_due(world.monitor, owner="replica-b") == []  # a live lease: b leaves the run alone
    assert world.polls("run-0001") == []

    world.clock.advance(seconds=lease.total_seconds() + 1)
    world.platform.finish("run-0001")
    assert await poll_due(world.monitor, owner="replica-b") == [run_id]  # lapsed: b takes over
    assert len(world.polls("run-0001")) == 1 and world.run(run_id).status == "finished"
    assert lease_of(world, run_id)[0] is None

    release_poll(world.monitor, run_id, "replica-a", 120)  # a's late release changes nothing
    assert lease_of(world, run_id) == (None, None, None)  # finished: no next poll


async def test_only_one_owner_holds_a_lease_at_a_time(coding_agent_world: WorldFactory) -> None:
    world = coding_agent_world(webhooks=False)
    _, run_id, _ = await world.launch()
    lease = timedelta(seconds=60)

    assert claim_poll(world.monitor, run_id, "replica-a", lease)
    assert not claim_poll(world.monitor, run_id, "replica-b", lease)
    assert not claim_poll(world.monitor, run_id, "replica-a", lease)  # not re-entrant: one poll at a time
    owner, until, _ = lease_of(world, run_id)
    assert owner == "replica-a" and until == world.clock() + lease

    release_poll(world.monitor, run_id, "replica-a", 120)
    owner, until, next_poll = lease_of(world, run_id)
    assert owner is None and until is None and next_poll == world.clock() + timedelta(seconds=120)
    assert not claim_poll(world.monitor, run_id, "replica-b", lease)  # free, but not due for 120 s
    world.clock.advance(seconds=120)
    assert claim_poll(world.monitor, run_id, "replica-b", lease)


def test_the_lease_outlives_a_status_call() -> None:
    def lease(timeout: float) -> timedelta:
        config = agent_config("https://agents.example.com", None, request_timeout_seconds=timeout)
        return poll_lease_length(CodingAgentConfig.model_validate(config["destinations"][0]))

    assert lease(45) == timedelta(seconds=135)
    assert lease(5) == code_change_status.MIN_POLL_LEASE == timedelta(seconds=60)
