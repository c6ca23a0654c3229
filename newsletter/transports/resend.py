"""Resend ``POST /emails`` and ``POST /emails/batch`` (up to 100), with idempotency keys."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import httpx

from newsletter.errors import TransportError
from newsletter.render.mime import Message
from newsletter.transports.http_api import HttpApiTransport, headers_of


class ResendTransport(HttpApiTransport):
    name = "resend"
    default_base = "https://api.resend.com"
    batch_size = 100

    single_path, batch_path = "/emails", "/emails/batch"

    def payload(self, m: Message) -> dict[str, Any]:
        return {"from": m.from_header, "to": [m.to], "subject": m.subject, "html": m.html,
                "text": m.text, "headers": headers_of(m)}

    def auth_headers(self, messages: Sequence[Message]) -> dict[str, str]:
        # The same messages retried carry the same key, so the provider sends them once.
        key = hashlib.sha256("".join(m.message_id for m in messages).encode()).hexdigest()[:48]
        return {"Authorization": f"Bearer {self.cfg.api_key}", "Idempotency-Key": key}

    def results(self, response: httpx.Response, messages: Sequence[Message]) -> list[
            str | TransportError]:
        body = response.json()
        if len(messages) == 1:
            return [str(body.get("id") or messages[0].message_id)]
        data = body.get("data") or []
        ids = [str(d.get("id")) for d in data]
        return [ids[i] if i < len(ids) else TransportError("resend: no id for this message")
                for i in range(len(messages))]
