"""How one delivery attempt ends badly, for adapters that look up before they write (GitHub, Linear)."""

from __future__ import annotations


class DeliveryFailed(Exception):
    """A definite failure: stop and record it (``disable``: why the destination is gone for good)."""

    def __init__(self, error: str, excerpt: str | None = None, *, disable: str | None = None) -> None:
        super().__init__(error)
        self.error = error
        self.excerpt = excerpt
        self.disable = disable


class OutcomeUnknown(Exception):
    """The outcome of a write is unknown (timeout, 5xx) or it was rate limited: wait, look up, then retry."""

    def __init__(self, error: str, wait: float | None = None) -> None:
        super().__init__(error)
        self.error = error
        self.wait = wait
