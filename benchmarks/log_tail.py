"""Log-source tailing against reading the same file line by line in Python (issue 17).

    python -m benchmarks.log_tail --megabytes 100 --work DIR

Writes a log of ``--megabytes`` MB where 1 % of the lines are errors (a few recurring failures with
varying ids, the way real logs repeat), then, in this one process, ``--rounds`` rounds alternating:

- floor: ``for line in open(path, encoding="utf-8")`` over the whole file;
- governed: a ``SourceTailer`` (service/log_tailing.py) reading it from offset 0 until caught up, with
  the default settings (``max_bytes_per_poll`` 256 KiB), every error through intake or the fingerprint
  cooldown, the offsets stored in the unit of work of the reports they produced; each round a fresh store.

The machine is shared: one read of the file is a ~0.1 s sample, so the figures are the medians of the
rounds (each round's ratio is printed too). Prints one JSON object: both throughputs, their ratio, the
largest RSS growth of a governed round, and the counts (every error line must be one occurrence in
every round: the run fails otherwise).
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import statistics
import sys
import time
from pathlib import Path

import psutil

from incident_monitor.config import MonitorConfig
from incident_monitor.service.log_tailing import SourceTailer
from incident_monitor.service.monitor import Monitor

ERROR_EVERY = 100  # 1 % of the lines
FAILURES = (
    "ERROR worker.jobs: job {n} failed: connection refused by db-{m}",
    "ERROR api.checkout: payment {n} declined by provider after {m} retries",
    "ERROR sync: upstream returned 503 for batch {n} (attempt {m})",
    "ERROR cache: eviction storm on shard {m}, {n} keys lost",
)


def write_log(path: Path, megabytes: int) -> int:
    """The log; returns how many error lines it holds."""
    target = megabytes * 1_000_000
    errors = written = n = 0
    with path.open("w", encoding="utf-8") as f:
        while written < target:
            n += 1
            stamp = f"2026-11-26T12:{n // 60 % 60:02d}:{n % 60:02d}.{n % 1000:03d}Z"
            if n % ERROR_EVERY == 0:
                line = f"{stamp} " + FAILURES[n // ERROR_EVERY % len(FAILURES)].format(n=n, m=n % 7) + "\n"
                errors += 1
            else:
                line = f"{stamp} INFO http: GET /api/v1/items/{n % 5000} 200 in {n % 97} ms user=u{n % 1000}\n"
            f.write(line)
            written += len(line)
    return errors


def read_lines(path: Path) -> float:
    started = time.perf_counter()
    count = 0
    with path.open(encoding="utf-8") as f:
        for _line in f:
            count += 1
    return time.perf_counter() - started


def _config(root: Path, work: Path, round_: int, max_bytes_per_poll: int | None) -> MonitorConfig:
    options = {"max_bytes_per_poll": max_bytes_per_poll} if max_bytes_per_poll else {}
    return MonitorConfig.model_validate(
        {
            "workspace": {"root": str(root)},
            "projects": [{"id": "bench", "sources": ["app"]}],
            "sources": [
                {
                    "kind": "log_file",
                    "id": "app-log",
                    "project_id": "bench",
                    "source_id": "app",
                    "path": "logs/app.log",
                    **options,
                }
            ],
            # The audit key and checkpoints in the work dir, not the user's config dir; a round's store its own.
            "audit": {
                "key_file": str(work / "audit-key.json"),
                "checkpoint_file": str(work / f"checkpoints-{round_}.jsonl"),
            },
        }
    )


def tail_once(config: MonitorConfig, data_dir: Path) -> tuple[float, int, dict[str, int]]:
    """One governed round from offset 0 in a fresh store: (seconds, RSS growth in bytes, counts)."""
    monitor = Monitor.open(config=config, data_dir=data_dir)
    tailer = SourceTailer(monitor, config.sources[0], owner="benchmark")
    process = psutil.Process()
    rss_before = process.memory_info().rss
    started = time.perf_counter()
    outcomes = tailer.poll_until_caught_up()
    seconds = time.perf_counter() - started
    rss_growth = process.memory_info().rss - rss_before
    monitor.close()
    with sqlite3.connect(data_dir / "incident-monitor.sqlite3") as db:
        incidents, occurrences = db.execute(
            "SELECT count(*), coalesce(sum(occurrence_count), 0) FROM incidents WHERE source = 'app'"
        ).fetchone()
    counts = {
        "occurrences": occurrences,
        "incidents": incidents,
        "reports": sum(o.reports for o in outcomes),
        "repeats": sum(o.repeats for o in outcomes),
        "polls": len(outcomes),
    }
    return seconds, rss_growth, counts


def run(megabytes: int, work: Path, max_bytes_per_poll: int | None = None, rounds: int = 3) -> dict[str, object]:
    root = work / "workspace"
    (root / "logs").mkdir(parents=True, exist_ok=True)
    log = root / "logs" / "app.log"
    errors = write_log(log, megabytes)
    size = log.stat().st_size
    floors: list[float] = []
    governed: list[float] = []
    rss_growth = 0
    counts: dict[str, int] = {}
    for n in range(rounds):
        config = _config(root, work, n, max_bytes_per_poll)
        floors.append(read_lines(log))
        seconds, grew, counts = tail_once(config, work / f"data-{n}")
        governed.append(seconds)
        rss_growth = max(rss_growth, grew)
        if counts["occurrences"] != errors:
            raise SystemExit(f"log_tail: {errors} error lines but {counts['occurrences']} occurrences stored: {counts}")
    floor_seconds = statistics.median(floors)
    governed_seconds = statistics.median(governed)
    mb = size / 1_000_000
    return {
        "megabytes": round(mb, 1),
        "rounds": rounds,
        "floor_seconds": round(floor_seconds, 3),
        "governed_seconds": round(governed_seconds, 3),
        "floor_mb_per_s": round(mb / floor_seconds, 1),
        "governed_mb_per_s": round(mb / governed_seconds, 1),
        "ratio": round(floor_seconds / governed_seconds, 3),
        "round_ratios": [round(f / g, 3) for f, g in zip(floors, governed, strict=True)],
        "round_seconds": {"floor": [round(f, 3) for f in floors], "governed": [round(g, 3) for g in governed]},
        "max_bytes_per_poll": _config(root, work, 0, max_bytes_per_poll).sources[0].max_bytes_per_poll,
        "rss_growth_mb": round(rss_growth / 1_000_000, 1),
        "counts": {"error_lines": errors, **counts},
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.log_tail")
    parser.add_argument("--megabytes", type=int, default=100)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--max-bytes-per-poll", type=int, default=None, help="default: the config's (256 KiB)")
    parser.add_argument("--rounds", type=int, default=3, help="floor and governed alternating; medians reported")
    args = parser.parse_args(argv)
    print(json.dumps(run(args.megabytes, args.work, args.max_bytes_per_poll, args.rounds)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
