"""Secret references: config names where a secret lives (``env:NAME``), never the secret itself."""

from __future__ import annotations

import os
import re
from typing import Annotated

from pydantic import AfterValidator, SecretStr

_ENV_REF = re.compile(r"^env:[A-Za-z_][A-Za-z0-9_]*$")


def is_env_ref(value: str) -> bool:
    """Whether a config value is a well-formed ``env:NAME`` reference."""
    return bool(_ENV_REF.match(value))


def _check_secret_ref(value: str) -> str:
    if not is_env_ref(value):
        # Never echo the value: a literal secret pasted into the config must not reach logs.
        raise ValueError(
            "must be a reference of the form 'env:VARIABLE_NAME' (put the secret in that environment "
            "variable, not in the config file)"
        )
    return value


SecretRef = Annotated[str, AfterValidator(_check_secret_ref)]
"""A config value naming an environment variable that holds a secret."""


def resolve_secret(ref: str | None) -> SecretStr | None:
    """The secret a reference points at, or None when the reference or the variable is missing/empty."""
    if not ref:
        return None
    value = os.environ.get(ref.removeprefix("env:"), "")
    return SecretStr(value) if value else None


def resolved_secrets(*refs: str | None) -> list[str]:
    """The values of the references that resolve: what an adapter scrubs from everything it returns."""
    return [secret.get_secret_value() for secret in map(resolve_secret, refs) if secret is not None]


def secret_ref_variable(ref: str) -> str:
    """The environment variable a reference names (safe to show: it is a name, not a secret)."""
    return ref.removeprefix("env:")
