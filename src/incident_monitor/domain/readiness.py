"""Whether a destination could take a publish now, and if not, why (each reason names the fix)."""

from __future__ import annotations

from pydantic import BaseModel, Field


class Readiness(BaseModel):
    ready: bool
    reasons: list[str] = Field(default_factory=list)
