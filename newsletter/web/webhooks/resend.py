"""Resend signs through Svix: ``svix-signature`` holds space-separated ``v1,<base64>``
HMAC-SHA256 signatures of ``{svix-id}.{svix-timestamp}.{body}`` under the secret's
bytes (``whsec_`` + base64). A stale timestamp or a message id seen before is refused."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Iterator
from typing import Any

from newsletter.web.webhooks.base import (
    Notice,
    Rejected,
    Verifier,
    WebhookRequest,
    fresh,
    items,
    obj,
    parse_json,
    text,
)


def secret_bytes(secret: str) -> bytes:
    raw = secret.strip().removeprefix("whsec_")
    try:
        return base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("[webhooks] resend_secret: expected whsec_ followed by base64") \
            from None


class Resend(Verifier):
    name = "resend"

    def configured(self) -> bool:
        return bool(self.config.resend_secret)

    async def accept(self, req: WebhookRequest) -> list[Notice]:
        key = secret_bytes(self.config.resend_secret or "")
        msg_id = req.header("svix-id", "webhook-id")
        timestamp = req.header("svix-timestamp", "webhook-timestamp")
        signatures = req.header("svix-signature", "webhook-signature")
        if not (msg_id and timestamp and signatures):
            raise Rejected(401, "unsigned: the svix-id/timestamp/signature headers are missing")
        fresh(timestamp, req, self.config.tolerance_seconds)
        signed = msg_id.encode() + b"." + timestamp.encode() + b"." + req.body
        expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest())
        if not any(version == "v1" and hmac.compare_digest(sig.encode(), expected)
                   for version, _, sig in (p.partition(",") for p in signatures.split())):
            raise Rejected(401, "forged: the Svix signature does not verify")
        self.not_replayed(msg_id, req)
        return list(notices(parse_json(req.body)))


def notices(body: Any) -> Iterator[Notice]:
    kind = text(body, "type")
    data = obj(body, "data")
    to = data.get("to")
    for address in items(to if isinstance(to, list) or to is None else [to], "data.to"):
        if not isinstance(address, str):
            raise Rejected(400, "data.to must hold strings")
        if kind == "email.bounced":
            yield address, "bounce"
        elif kind == "email.complained":
            yield address, "complaint"
