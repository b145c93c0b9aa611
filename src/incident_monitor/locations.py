"""Where the config, the data directory and the secrets file are: one rule for ``serve`` and every command.

Each of config and data directory comes from, first to last: the ``--config`` / ``--data-dir`` flag,
the INCIDENT_MONITOR_CONFIG / INCIDENT_MONITOR_DATA_DIR variable, or what ``incident-monitor init``
wrote (the platform's user config and data directories). When none applies the command stops with an
error naming the three ways; it never makes up an empty config or a data directory in the cwd.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import platformdirs
from dotenv import dotenv_values

from incident_monitor.errors import ConfigError

APP_NAME = "incident-monitor"
CONFIG_VARIABLE = "INCIDENT_MONITOR_CONFIG"
DATA_DIR_VARIABLE = "INCIDENT_MONITOR_DATA_DIR"
CONFIG_FILE = "config.toml"
# Beside the config: the generated secrets its env: references name (0600, read at start-up).
SECRETS_FILE = "secrets.env"


def init_config_dir() -> Path:
    """Where ``init`` writes the config (XDG_CONFIG_HOME on Linux; the platform's place elsewhere)."""
    return platformdirs.user_config_path(APP_NAME)


def init_data_dir() -> Path:
    """Where ``init`` puts the database and published telemetry (XDG_DATA_HOME on Linux)."""
    return platformdirs.user_data_path(APP_NAME)


@dataclass(frozen=True)
class Locations:
    config: Path | None
    data_dir: Path
    # How each was found, for messages: "--config", "INCIDENT_MONITOR_CONFIG" or "init location".
    config_from: str
    data_dir_from: str

    @property
    def secrets_file(self) -> Path | None:
        return self.config.parent / SECRETS_FILE if self.config is not None else None


def _pick(
    flag: Path | None, flag_name: str, variable: str, init_path: Path, environ: Mapping[str, str]
) -> tuple[Path, str] | None:
    if flag is not None:
        return flag, flag_name
    if environ.get(variable):
        return Path(environ[variable]), variable
    if init_path.exists():
        return init_path, "init location"
    return None


def _missing(config_missing: bool, data_missing: bool, config_init: Path, data_init: Path) -> str:
    what = [("config", "--config", CONFIG_VARIABLE, config_init)] if config_missing else []
    what += [("data directory", "--data-dir", DATA_DIR_VARIABLE, data_init)] if data_missing else []
    return (
        f"no {' and no '.join(w[0] for w in what)} found. Either\n"
        f"  - pass {' and '.join(w[1] + ' PATH' for w in what)} (before or after the command),\n"
        f"  - set {' and '.join(w[2] for w in what)}, or\n"
        f"  - run `incident-monitor init` (it writes {' and '.join(str(w[3]) for w in what)})."
    )


def find_locations(
    config: Path | None = None,
    data_dir: Path | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    config_required: bool = True,
) -> Locations:
    """The config and data directory a command uses; absolute paths. Creates nothing."""
    env = os.environ if environ is None else environ
    config_init = init_config_dir() / CONFIG_FILE
    data_init = init_data_dir()
    found_config = _pick(config, "--config", CONFIG_VARIABLE, config_init, env)
    found_data = _pick(data_dir, "--data-dir", DATA_DIR_VARIABLE, data_init, env)
    config_missing = found_config is None and config_required
    if config_missing or found_data is None:
        raise ConfigError(_missing(config_missing, found_data is None, config_init, data_init))
    assert found_data is not None
    config_path, config_from = found_config if found_config is not None else (None, "none (not needed)")
    return Locations(
        config=config_path.expanduser().resolve() if config_path is not None else None,
        data_dir=found_data[0].expanduser().resolve(),
        config_from=config_from,
        data_dir_from=found_data[1],
    )


def load_secrets_file(path: Path | None, environ: dict[str, str] | None = None) -> list[str]:
    """Put the secrets file's variables into the environment (set variables win); their names.

    Refused when others can read it: the file holds signing secrets and tokens.
    """
    if path is None or not path.exists():
        return []
    mode = path.stat().st_mode
    if os.name == "posix" and mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(f"{path} is readable by other users (mode {stat.S_IMODE(mode):o}); run: chmod 600 {path}")
    target = os.environ if environ is None else environ
    names = []
    for name, value in dotenv_values(path).items():
        if value is not None:
            target.setdefault(name, value)
            names.append(name)
    return names
