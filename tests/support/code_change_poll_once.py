"""One poller pass as its own process (a replica): ``python code_change_poll_once.py CONFIG_JSON DATA_DIR OWNER``.

Opens the monitor on the shared data directory with the real clock, runs ``poll_due`` once as OWNER and prints
the run ids it polled as JSON. Used by tests/service/test_code_change_poll_lease.py.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from incident_monitor.config import MonitorConfig
from incident_monitor.service import code_change_status
from incident_monitor.service.monitor import Monitor


def main(config_json: str, data_dir: str, owner: str) -> None:
    config = MonitorConfig.model_validate_json(Path(config_json).read_text(encoding="utf-8"))
    monitor = Monitor.open(config=config, data_dir=Path(data_dir))
    try:
        polled = asyncio.run(code_change_status.poll_due(monitor, owner=owner))
    finally:
        monitor.close()
    print(json.dumps(polled))


if __name__ == "__main__":
    main(*sys.argv[1:4])
