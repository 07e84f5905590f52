"""The local server's webhooks, as fal sends its own: signed with ED25519 over request id, user
id, timestamp and the body's SHA-256, by a key its JWKS publishes, and retried when delivery
fails (fal: 10 times over about 2 hours; here the same count over seconds, so tests see it)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json

import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse

from wansweep.localfal.queue import FalRequest

WEBHOOK_ATTEMPTS = 10


class WebhookMixin:
    """Part of :class:`~wansweep.localfal.server.LocalFal`: signing and delivering webhooks."""

    WEBHOOK_USER = "local-user"

    def sign_webhook(
        self, request_id: str, body: bytes, timestamp: float | None = None
    ) -> dict[str, str]:
        """fal's webhook headers: ED25519 over request id, user id, timestamp (now, by default)
        and the body's SHA-256, with the key its JWKS publishes."""
        timestamp = str(int(self.now() if timestamp is None else timestamp))
        digest = hashlib.sha256(body).hexdigest()
        message = "\n".join([request_id, self.WEBHOOK_USER, timestamp, digest]).encode()
        return {
            "Content-Type": "application/json",
            "X-Fal-Webhook-Request-Id": request_id,
            "X-Fal-Webhook-User-Id": self.WEBHOOK_USER,
            "X-Fal-Webhook-Timestamp": timestamp,
            "X-Fal-Webhook-Signature": self._webhook_key.sign(message).hex(),
        }

    async def jwks(self, request: Request) -> JSONResponse:
        """The public key of its webhooks, as fal publishes its own (public, no key needed)."""
        from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

        raw = self._webhook_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        x = base64.urlsafe_b64encode(raw).decode().rstrip("=")
        return JSONResponse({"keys": [{"kty": "OKP", "crv": "Ed25519", "x": x, "kid": "local"}]})

    async def _deliver_webhook(self, job: FalRequest) -> None:
        """POST the webhook; retried as fal does when it fails (fal: 10 times over ~2 hours;
        here the same count over seconds, so tests see it)."""
        body = {
            "request_id": job.request_id,
            "gateway_request_id": job.request_id,
            "status": "ERROR" if job.error else "OK",
            "payload": job.output if not job.error else job.error["body"],
            "error": None if not job.error else f"Request failed ({job.status_code})",
        }
        if self._webhook_client is None:  # one client: a TLS context per call costs ms of CPU
            self._webhook_client = httpx.AsyncClient(verify=self._ssl(), timeout=10)
        content = json.dumps(body).encode()
        for attempt in range(WEBHOOK_ATTEMPTS):
            try:
                headers = self.sign_webhook(job.request_id, content)  # fresh timestamp per try
                answer = await self._webhook_client.post(
                    job.webhook, content=content, headers=headers
                )
                answer.raise_for_status()
                self.stats["webhooks_sent"] += 1
                return
            except Exception:
                self.stats["webhooks_failed"] += 1
                await asyncio.sleep(min(10.0, 0.5 * 2**attempt))
