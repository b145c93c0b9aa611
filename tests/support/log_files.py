"""Reading what the log tailer stored, on either backend."""

from __future__ import annotations

from pathlib import Path

from support.databases import rows_text

# One project whose CI log (``ws/logs/ci.log`` under the workspace root) is tailed every 0.1 s: the config
# the log-source server tests run, one replica or several.
CI_LOG_SOURCE_CONFIG = """
[workspace]
root = "ws"

[[projects]]
id = "app"
sources = ["ci"]

[[sources]]
kind = "log_file"
id = "ci-log"
project_id = "app"
source_id = "ci"
path = "logs/ci.log"
poll_interval_seconds = 0.1
"""


def database_text_at(data_dir: Path) -> str:
    """Every row of every table, as text (the database a server given ``data_dir`` uses)."""
    return rows_text(data_dir)
