"""Log lines: timestamped text or one JSON object per line, extra fields kept, SDK chatter only at DEBUG."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from incident_monitor.logging_setup import CHATTY_LOGGERS, configure_logging
from incident_monitor.policy.principal import LOCAL_AGENT
from incident_monitor.service.status import get_status
from support.cli_helpers import isolate, run_cli
from support.monitors import MonitorFactory

TIMESTAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    levels = {name: logging.getLogger(name).level for name in CHATTY_LOGGERS}
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, saved in levels.items():
        logging.getLogger(name).setLevel(saved)


def test_a_governed_call_logs_one_json_line_with_its_fields(
    capsys: pytest.CaptureFixture[str], make_monitor: MonitorFactory
) -> None:
    monitor = make_monitor()
    configure_logging("INFO", "json")

    get_status(monitor, LOCAL_AGENT)

    entries = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    [entry] = [e for e in entries if e["logger"] == "incident_monitor.audit"]
    assert (entry["level"], entry["principal"], entry["action"], entry["decision"]) == (
        "INFO",
        "local-agent",
        "get_status",
        "allow",
    )
    assert isinstance(entry["duration_ms"], float)
    assert re.fullmatch(TIMESTAMP, entry["ts"])


def test_json_lines_carry_timestamp_level_logger_message_and_extra_fields(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO", "json")

    logging.getLogger("incident_monitor.audit").info(
        "decide_approval allow", extra={"principal": "operator:ann", "action": "decide_approval", "duration_ms": 3.2}
    )

    [line] = capsys.readouterr().err.splitlines()
    entry = json.loads(line)
    assert re.fullmatch(TIMESTAMP, entry.pop("ts"))
    assert entry == {
        "level": "INFO",
        "logger": "incident_monitor.audit",
        "message": "decide_approval allow",
        "principal": "operator:ann",
        "action": "decide_approval",
        "duration_ms": 3.2,
    }


def test_text_lines_start_with_a_timestamp(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO", "text")

    logging.getLogger("incident_monitor.audit").info(
        "publish_draft allow draft=%s", "drf_1", extra={"draft_id": "drf_1"}
    )

    [line] = capsys.readouterr().err.splitlines()
    assert re.fullmatch(TIMESTAMP + r" INFO incident_monitor\.audit: publish_draft allow draft=drf_1", line)


def test_exceptions_are_kept_in_json(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("WARNING", "json")
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logging.getLogger("incident_monitor.x").exception("failed")

    entry = json.loads(capsys.readouterr().err)
    assert entry["message"] == "failed"
    assert "RuntimeError: boom" in entry["exception"]


def test_sdk_session_chatter_shows_only_at_debug(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO", "text")
    logging.getLogger("mcp.server.lowlevel.server").info("Processing request of type ListToolsRequest")
    logging.getLogger("uvicorn.access").info('127.0.0.1 - "POST /mcp HTTP/1.1" 200')
    logging.getLogger("mcp.server").warning("a real problem")
    logging.getLogger("incident_monitor.audit").info("ours")

    shown = capsys.readouterr().err
    assert "Processing request" not in shown and "POST /mcp" not in shown
    assert "a real problem" in shown and "ours" in shown

    configure_logging("DEBUG", "text")
    logging.getLogger("mcp.server.lowlevel.server").info("Processing request of type ListToolsRequest")
    assert "Processing request" in capsys.readouterr().err


def test_configuring_twice_leaves_one_handler(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO", "text")
    configure_logging("INFO", "json")

    logging.getLogger("incident_monitor.x").info("once")

    assert len(capsys.readouterr().err.splitlines()) == 1


def test_bad_level_or_format_is_refused() -> None:
    with pytest.raises(ValueError, match="log level: 'LOUD'"):
        configure_logging("LOUD", "text")
    with pytest.raises(ValueError, match="log format: 'xml'"):
        configure_logging("INFO", "xml")


def test_the_cli_defaults_to_warning_and_serve_to_info_and_takes_the_options_anywhere(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    isolate(monkeypatch, tmp_path)
    root = logging.getLogger()

    run_cli(capsys, ["status"])  # fails to find a config, after logging is set up
    assert root.level == logging.WARNING
    run_cli(capsys, ["serve"])
    assert root.level == logging.INFO
    run_cli(capsys, ["--log-level", "debug", "status", "--log-format", "json"])
    assert root.level == logging.DEBUG
    logging.getLogger("incident_monitor.x").debug("hello")
    assert json.loads(capsys.readouterr().err)["message"] == "hello"
