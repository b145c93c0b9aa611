"""Coding-agent destination: the caller side of the seed-002 interface (``X-Incident-Interface-Version``).

A publish of a code-change draft launches a run (``POST /agents``, ``task_id`` = the receipt's idempotency key,
so a retried launch returns the same run) or sends a follow-up (``POST /agents/{id}/followup``). The publishing
service's other calls (service/destination_calls.py) poll (``GET /agents/{id}``), stop (``POST /agents/{id}/stop``)
and ping (``GET /ping``) through this adapter. Every answer is untrusted: size-capped by the egress policy,
fields validated here.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any
from urllib.parse import quote

from incident_monitor.destinations.base import CallFailed, DestinationAdapter, PublishOutcome, PublishRequest
from incident_monitor.destinations.delivery import (
    DeliveryFailed,
    OutcomeUnknown,
    deliver_with_retries,
    enabled_reasons,
    plural_attempts,
    retry_after_seconds,
    secret_reasons,
    url_reasons,
)
from incident_monitor.destinations.settings import CodingAgentConfig
from incident_monitor.domain.code_change import (
    INTERFACE_HEADER,
    INTERFACE_VERSION,
    PlatformStatus,
    launch_secret,
    parse_status,
    web_url,
    webhook_key,
)
from incident_monitor.domain.readiness import Readiness
from incident_monitor.egress.rules import EgressPolicy, EgressRefused
from incident_monitor.secret_ref import resolve_secret, resolved_secrets

log = logging.getLogger(__name__)

MAX_RESPONSE_BYTES = 64_000
_RUN_ID = re.compile(r"^[A-Za-z0-9._:~-]{1,200}$")


class CodingAgentAdapter(DestinationAdapter[CodingAgentConfig]):
    kind = "coding_agent"

    def __repr__(self) -> str:
        return f"CodingAgentAdapter(id={self.config.id!r}, base_url={self.config.base_url!r})"

    @property
    def egress_policy(self) -> EgressPolicy:
        config = self.config
        return EgressPolicy(
            allow_insecure_http=config.allow_insecure_http,
            allow_private_networks=config.allow_private_networks,
            timeout_seconds=config.request_timeout_seconds,
            max_response_bytes=MAX_RESPONSE_BYTES,
        )

    def secret_values(self) -> list[str]:
        return resolved_secrets(self.config.token)

    def readiness(self) -> Readiness:
        reasons = enabled_reasons(self.config)
        reasons += url_reasons("base_url", self.config.base_url, self.egress_policy)
        reasons += secret_reasons(
            self.config.token, field="token", kind="the platform's bearer token", holder="the bearer token"
        )
        return Readiness(ready=not reasons, reasons=reasons)

    def webhook_for(self, run_id: str) -> dict[str, str] | None:
        """The per-launch callback (URL and secret), or None when we have no public URL (polling only)."""
        if self.config.callback_base_url is None:
            return None
        return {
            "url": f"{self.config.callback_base_url}/incident-monitor/code-changes/{run_id}/webhook",
            "secret": launch_secret(webhook_key(self.data_dir), run_id),
        }

    def _headers(self) -> dict[str, str]:
        token = resolve_secret(self.config.token)
        headers = {INTERFACE_HEADER: INTERFACE_VERSION, "content-type": "application/json"}
        if token is not None:
            headers["authorization"] = f"Bearer {token.get_secret_value()}"
        return headers

    async def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, bytes, Any]:
        """One request: (status, body, headers); raises OutcomeUnknown for a transport failure or timeout,
        DeliveryFailed for a URL the egress rules refuse."""
        import httpx2

        from incident_monitor.egress.transport import describe_transport_error, egress_client, send

        content = json.dumps(body).encode() if body is not None else None
        async with egress_client(self.egress_policy) as client:
            try:
                answer = await send(
                    client,
                    self.egress_policy,
                    method,
                    self.config.base_url + path,
                    content=content,
                    headers=self._headers(),
                )
            except EgressRefused as exc:
                raise DeliveryFailed(f"coding agent {describe_transport_error(exc, timeout_seconds=0)}") from None
            except httpx2.TransportError as exc:
                raise OutcomeUnknown(
                    "coding agent " + describe_transport_error(exc, timeout_seconds=self.config.request_timeout_seconds)
                ) from None
        return answer.status, answer.body, answer.headers

    def _refusal(self, what: str, status: int, headers: Any) -> Exception:
        if status == 401 or status == 403:
            return DeliveryFailed(f"{what}: the platform answered {status}: check the bearer token (token)")
        if status == 429 or status >= 500:
            return OutcomeUnknown(
                f"{what}: the platform answered {status}", retry_after_seconds(headers.get("retry-after"))
            )
        return DeliveryFailed(f"{what}: the platform answered {status}")

    async def _deliver(self, request: PublishRequest) -> PublishOutcome:
        change = request.evidence.get("code_change")
        if not isinstance(change, dict):
            return PublishOutcome(
                status="failed", attempts=0, error="not a code-change draft: use request_code_change to create one"
            )
        if change.get("action") == "follow_up":
            return await self._retrying(lambda: self._follow_up(change, request), "follow-up")
        return await self._retrying(lambda: self._launch(change, request), "launch")

    async def _retrying(self, attempt_once: Any, label: str) -> PublishOutcome:
        return await deliver_with_retries(
            attempt_once,
            label=f"coding agent {label}",
            destination_id=self.config.id,
            max_attempts=self.config.max_attempts,
            backoff_base=self.config.backoff_seconds,
            gave_up=lambda error, n: (
                f"{error} after {plural_attempts(n)}: check that the platform is up, then publish again "
                "(the same task_id returns the same run)"
            ),
        )

    async def _launch(self, change: dict[str, Any], request: PublishRequest) -> PublishOutcome:
        body: dict[str, Any] = {
            "task_id": request.idempotency_key,
            "prompt": request.body,
            "incident_id": request.incident_id,
            "reference": change.get("reference"),
            "repository": change.get("repository"),
        }
        webhook = self.webhook_for(str(change["run_id"]))
        if webhook is not None:
            body["webhook"] = webhook
        status, raw, headers = await self._call("POST", "/agents", body)
        if not 200 <= status < 300:
            raise self._refusal("launch", status, headers)
        try:
            answer = json.loads(raw)
        except ValueError:
            answer = None
        run = answer.get("id") if isinstance(answer, dict) else None
        if not isinstance(run, str) or not _RUN_ID.match(run):
            raise DeliveryFailed("launch: the platform's answer has no usable run id ('id', up to 200 safe characters)")
        return PublishOutcome(status="published", external_id=run, external_url=web_url(answer.get("url")))

    async def _follow_up(self, change: dict[str, Any], request: PublishRequest) -> PublishOutcome:
        platform_run_id = str(change.get("platform_run_id") or "")
        status, _, headers = await self._call(
            "POST", f"/agents/{quote(platform_run_id, safe='')}/followup", {"prompt": request.body}
        )
        if not 200 <= status < 300:
            raise self._refusal("follow-up", status, headers)
        return PublishOutcome(status="published", external_id=platform_run_id)

    # --- beside publish: status, stop, ping (service/destination_calls.py, part of the publishing service) -----

    async def run_status(self, platform_run_id: str) -> PlatformStatus:
        try:
            status, raw, _ = await self._call("GET", f"/agents/{quote(platform_run_id, safe='')}")
        except (OutcomeUnknown, DeliveryFailed) as exc:
            raise CallFailed(str(exc)) from None
        if status != 200:
            raise CallFailed(f"status: the platform answered {status}")
        parsed = parse_status(raw)
        if parsed is None:
            raise CallFailed("status: the platform's answer is not a status (status running|finished|error)")
        return parsed

    async def stop(self, platform_run_id: str) -> None:
        """Best effort; a 404 (the platform already cleaned the run up) counts as stopped."""
        try:
            status, _, _ = await self._call("POST", f"/agents/{quote(platform_run_id, safe='')}/stop")
        except (OutcomeUnknown, DeliveryFailed) as exc:
            raise CallFailed(str(exc)) from None
        if not (200 <= status < 300 or status == 404):
            raise CallFailed(f"stop: the platform answered {status}")

    async def ping(self) -> None:
        """``GET /ping``: raises CallFailed saying what failed (readiness is the caller's gate)."""
        try:
            status, _, _ = await self._call("GET", "/ping")
        except (OutcomeUnknown, DeliveryFailed) as exc:
            raise CallFailed(str(exc)) from None
        if status in (401, 403):
            raise CallFailed(f"the platform answered {status}: it refused our bearer token (token)")
        if status == 404:
            raise CallFailed("the platform answered 404: it does not implement GET /ping (launches may still work)")
        if status != 200:
            raise CallFailed(f"the platform answered {status}")
