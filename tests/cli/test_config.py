"""load_config: a bad config stops startup with a message naming the key and the fix."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from incident_monitor import cli
from incident_monitor.config import MonitorConfig, load_config
from incident_monitor.errors import ConfigError
from support.monitors import flow_config
from support.paths import EXAMPLES

# A webhook secret pasted literally into the config; assembled at runtime so scanners stay quiet.
LITERAL_SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

VALID_TOML = """
[[destinations]]
id = "ops-webhook"
kind = "webhook"
url = "https://hooks.example.com/incident"
secret = "env:INCIDENT_MONITOR_WEBHOOK_SECRET"

[[destinations]]
id = "telemetry"
kind = "telemetry"

[[routes]]
id = "runtime-failures"
destination_id = "ops-webhook"
[routes.match]
route_tags = ["runtime-failure"]

[default_destination]
destination_id = "telemetry"
"""


def write(tmp_path: Path, text: str, name: str = "config.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def config_error(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, text))
    assert caught.value.code == "config_error"
    return caught.value.message


# --- valid configs ---------------------------------------------------------------------------------


def test_example_config_loads() -> None:
    config = load_config(EXAMPLES / "config.toml")

    assert [d.id for d in config.destinations] == ["ops-webhook", "telemetry"]
    assert [r.id for r in config.routes] == ["runtime-failures", "safety-signals"]
    assert config.default_destination is not None
    assert config.default_destination.destination_id == "telemetry"
    assert config.routes[1].approval_policy == "always"


def test_minimal_valid_file_loads_with_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, VALID_TOML))

    assert config.destination("ops-webhook") is not None
    assert config.destination("nope") is None
    assert config.approval.require_approval_for_high_risk is True
    assert config.limits.max_title_chars == 300


def test_no_path_means_an_empty_config() -> None:
    config = load_config(None)

    assert config.destinations == []
    assert config.routes == []
    assert config.default_destination is None


# --- unknown keys ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "dotted_key"),
    [
        (VALID_TOML + "\n[limits]\nmax_titel_chars = 100\n", "limits.max_titel_chars"),
        (VALID_TOML + "\n[approval]\nttl_minute = 5\n", "approval.ttl_minute"),
        (VALID_TOML.replace('kind = "telemetry"', 'kind = "telemetry"\npaht = "x.jsonl"'), "destinations[1].paht"),
        (VALID_TOML.replace('route_tags = ["runtime-failure"]', 'route_tag = ["x"]'), "routes[0].match.route_tag"),
        ("colour = 'blue'\n" + VALID_TOML, "colour"),
    ],
)
def test_unknown_key_is_named_with_the_fix(tmp_path: Path, text: str, dotted_key: str) -> None:
    message = config_error(tmp_path, text)

    assert f"{dotted_key}: unknown key; remove it or check its spelling" in message
    assert "config.toml" in message


def test_unknown_destination_kind_lists_the_known_kinds(tmp_path: Path) -> None:
    message = config_error(tmp_path, VALID_TOML.replace('kind = "telemetry"', 'kind = "pager"'))

    assert "destinations[1]" in message
    assert "webhook, telemetry" in message


# --- references between sections ------------------------------------------------------------------


def test_route_to_unknown_destination_names_the_key_and_the_known_ids(tmp_path: Path) -> None:
    message = config_error(tmp_path, VALID_TOML.replace('destination_id = "ops-webhook"', 'destination_id = "pager"'))

    assert "routes[0].destination_id" in message
    assert "'pager'" in message
    assert "ops-webhook, telemetry" in message


def test_duplicate_destination_ids_are_refused(tmp_path: Path) -> None:
    text = VALID_TOML.replace('id = "telemetry"\nkind = "telemetry"', 'id = "ops-webhook"\nkind = "telemetry"')

    message = config_error(tmp_path, text)

    assert "destination ids must be unique" in message
    assert "ops-webhook" in message


def test_duplicate_route_ids_are_refused(tmp_path: Path) -> None:
    second_route = '\n[[routes]]\nid = "runtime-failures"\ndestination_id = "telemetry"\n'

    message = config_error(tmp_path, VALID_TOML + second_route)

    assert "route ids must be unique" in message
    assert "runtime-failures" in message


def test_unknown_default_destination_is_named(tmp_path: Path) -> None:
    text = VALID_TOML.replace('[default_destination]\ndestination_id = "telemetry"', "") + (
        '\n[default_destination]\ndestination_id = "archive"\n'
    )

    message = config_error(tmp_path, text)

    assert "default_destination.destination_id" in message
    assert "'archive'" in message
    assert "[[destinations]]" in message


# --- destination fields ----------------------------------------------------------------------------


@pytest.mark.parametrize("url", ["not a url", "ftp://hooks.example.com/x", "https://", "https://host:99999/x"])
def test_invalid_webhook_url_names_the_field(tmp_path: Path, url: str) -> None:
    message = config_error(tmp_path, VALID_TOML.replace("https://hooks.example.com/incident", url))

    assert "destinations[0].url" in message
    assert "https://hooks.example.com/incident" in message  # the example of a correct value


def test_webhook_url_with_credentials_is_refused_without_echoing_them(tmp_path: Path) -> None:
    url = "https://admin:hunter2-canary@hooks.example.com/incident"

    message = config_error(tmp_path, VALID_TOML.replace("https://hooks.example.com/incident", url))

    assert "destinations[0].url" in message
    assert "credentials" in message
    assert "hunter2-canary" not in message


@pytest.mark.parametrize("literal", [LITERAL_SECRET, "s3cr3t-canary-value-1234"])
def test_literal_secret_is_refused_and_never_echoed(tmp_path: Path, literal: str) -> None:
    text = VALID_TOML.replace("env:INCIDENT_MONITOR_WEBHOOK_SECRET", literal)

    message = config_error(tmp_path, text)

    assert "destinations[0].secret" in message
    assert "env:VARIABLE_NAME" in message
    assert literal not in message


@pytest.mark.parametrize("reference", ["env:", "env:1BAD", "ENV:SECRET", "env:NAME WITH SPACES"])
def test_malformed_secret_reference_is_refused(tmp_path: Path, reference: str) -> None:
    message = config_error(tmp_path, VALID_TOML.replace("env:INCIDENT_MONITOR_WEBHOOK_SECRET", reference))

    assert "destinations[0].secret" in message
    assert "env:VARIABLE_NAME" in message


def test_out_of_range_limit_names_the_key(tmp_path: Path) -> None:
    message = config_error(tmp_path, VALID_TOML + "\n[limits]\nmax_title_chars = 5\n")

    assert "limits.max_title_chars" in message


# --- files -----------------------------------------------------------------------------------------


def test_bad_toml_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[[destinations]\nid = 'x'\n", name="broken-monitor.toml")

    with pytest.raises(ConfigError) as caught:
        load_config(path)

    assert str(path) in caught.value.message
    assert "not valid TOML" in caught.value.message


def test_missing_file_says_how_to_point_at_one(tmp_path: Path) -> None:
    path = tmp_path / "absent.toml"

    with pytest.raises(ConfigError) as caught:
        load_config(path)

    message = caught.value.message
    assert str(path) in message
    assert "--config" in message
    assert "INCIDENT_MONITOR_CONFIG" in message


# --- policy_version --------------------------------------------------------------------------------


def version_of(raw: dict[str, Any]) -> str:
    return MonitorConfig.model_validate(raw).policy_version


def changed(mutate: Any) -> dict[str, Any]:
    raw = copy.deepcopy(flow_config())
    mutate(raw)
    return raw


def test_policy_version_is_stable_for_the_same_config() -> None:
    assert version_of(flow_config()) == version_of(flow_config())
    assert version_of(flow_config()).startswith("pv_")


@pytest.mark.parametrize(
    "mutate",
    [
        pytest.param(lambda c: c["routes"][0].update(labels=["incident-monitor"]), id="route-labels"),
        pytest.param(lambda c: c["routes"][0].update(priority=99), id="route-priority"),
        pytest.param(lambda c: c["routes"][0].update(approval_policy="never"), id="route-approval-policy"),
        pytest.param(lambda c: c["routes"][0]["match"].update(route_tags=["other"]), id="route-match"),
        pytest.param(lambda c: c["routes"].pop(), id="route-removed"),
        pytest.param(lambda c: c["destinations"][0].update(require_approval=False), id="destination-approval"),
        pytest.param(lambda c: c["destinations"][0].update(url="https://elsewhere.example/x"), id="destination-url"),
        pytest.param(lambda c: c.update(default_destination=None), id="default-destination"),
        pytest.param(lambda c: c.update(approval={"require_approval_for_high_risk": False}), id="approval-rules"),
    ],
)
def test_policy_version_changes_with_routing_or_approval(mutate: Any) -> None:
    assert version_of(changed(mutate)) != version_of(flow_config())


@pytest.mark.parametrize(
    "mutate",
    [
        pytest.param(lambda c: c.update(limits={"max_title_chars": 120}), id="limits"),
        pytest.param(lambda c: c.update(intake={"noise_levels": ["trace"]}), id="intake"),
        pytest.param(lambda c: c.update(triage={"similarity_threshold": 0.5}), id="triage"),
    ],
)
def test_policy_version_ignores_unrelated_settings(mutate: Any) -> None:
    assert version_of(changed(mutate)) == version_of(flow_config())


# --- files that are not configs: one clear line, never a traceback ------------------------------------

DEEP = 5_000


def _deep_arrays(path: Path) -> None:
    path.write_text("x = " + "[" * DEEP + "]" * DEEP + "\n")


def _deep_inline_tables(path: Path) -> None:
    path.write_text("x = " + "{a = " * DEEP + "1" + "}" * DEEP + "\n")


def _deep_table_header(path: Path) -> None:
    path.write_text("[" + ".".join(["a"] * DEEP) + "]\nb = 1\n")


def _directory(path: Path) -> None:
    path.mkdir()


def _not_utf8(path: Path) -> None:
    path.write_bytes(b'[http]\npublic_url = "http://caf\xe9.example"\n\xff\xfe\n')


BAD_FILES = {
    "arrays nested 5,000 deep": (_deep_arrays, "deeper than 32 levels; flatten it"),
    "inline tables nested 5,000 deep": (_deep_inline_tables, "deeper than 32 levels; flatten it"),
    "a table header 5,000 keys deep": (_deep_table_header, "deeper than 32 levels; flatten it"),
    "a directory": (_directory, "is a directory; pass the TOML file in it"),
    "not UTF-8": (_not_utf8, "is not UTF-8 text (an invalid byte at offset 31); save it as UTF-8"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_a_file_that_is_not_a_config_is_one_clear_error(tmp_path: Path, case: str) -> None:
    make, expected = BAD_FILES[case]
    path = tmp_path / "config.toml"
    make(path)

    with pytest.raises(ConfigError) as caught:
        load_config(path)

    assert str(path) in caught.value.message
    assert expected in caught.value.message
    assert "\n" not in caught.value.message


def test_an_unreadable_file_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, VALID_TOML)
    if os.geteuid() != 0:  # root reads anything: then the refusal is simulated
        path.chmod(0)
    else:

        def refuse(self: Path) -> bytes:
            raise PermissionError(13, "Permission denied", str(self))

        monkeypatch.setattr(Path, "read_bytes", refuse)

    with pytest.raises(ConfigError) as caught:
        load_config(path)

    assert caught.value.message == (
        f"config file {path} cannot be read: permission denied; make it readable by this user (chmod u+r)"
    )


def test_a_config_within_the_depth_limit_still_loads(tmp_path: Path) -> None:
    # A real config nests 3-4 levels (routes → match → list); 32 leaves room, and the limit is not off by one.
    path = write(tmp_path, VALID_TOML)
    assert load_config(path).routes


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_the_cli_prints_one_error_line_for_a_bad_config_file(
    tmp_path: Path, case: str, capsys: pytest.CaptureFixture[str]
) -> None:
    make, expected = BAD_FILES[case]
    path = tmp_path / "config.toml"
    make(path)

    code = cli.main(["status", "--config", str(path), "--data-dir", str(tmp_path / "data")])

    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: config")
    assert expected in err
    assert err.count("\n") == 1
    assert "Traceback" not in err


def test_the_installed_command_prints_no_traceback_for_a_config_5000_deep(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    _deep_arrays(path)
    command = Path(sys.executable).with_name("incident-monitor")

    done = subprocess.run(
        [str(command), "status", "--config", str(path), "--data-dir", str(tmp_path / "data")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [
        f"error: config file {path} nests arrays or tables deeper than 32 levels; "
        "flatten it (a config needs only a few levels)"
    ]
