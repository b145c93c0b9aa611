"""The Hypothesis profiles of the property tests, chosen by ``HYPOTHESIS_PROFILE``: ``ci`` (the default) and
``fuzz`` (``make fuzz``: many more examples). Registered once here, so every fuzz module reads the same numbers."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

_COMMON = {"deadline": None, "suppress_health_check": list(HealthCheck), "database": None, "derandomize": False}
settings.register_profile("ci", max_examples=600, **_COMMON)
settings.register_profile("fuzz", max_examples=10_000, **_COMMON)
PROFILE = settings.get_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
