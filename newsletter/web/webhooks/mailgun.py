"""Mailgun: the body carries ``signature: {timestamp, token, signature}``, the last
an HMAC-SHA256 (hex) of timestamp + token under the HTTP webhook signing key. A
stale timestamp or a token seen before is refused."""

from __future__ import annotations

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
    obj,
    parse_json,
    text,
)


class Mailgun(Verifier):
    name = "mailgun"

    def configured(self) -> bool:
        return bool(self.config.mailgun_signing_key)

    async def accept(self, req: WebhookRequest) -> list[Notice]:
        body = parse_json(req.body)
        sig = obj(body, "signature")
        if not sig:
            raise Rejected(401, "unsigned: no Mailgun signature in the body")
        timestamp, token = text(sig, "timestamp", required=True), text(sig, "token", required=True)
        signature = text(sig, "signature", required=True)
        fresh(timestamp, req, self.config.tolerance_seconds)
        expected = hmac.new((self.config.mailgun_signing_key or "").encode(),
                            (timestamp + token).encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected.encode(), signature.encode("utf-8", "replace")):
            raise Rejected(401, "forged: the Mailgun signature does not verify")
        self.not_replayed(token, req)
        return list(notices(body))


def notices(body: Any) -> Iterator[Notice]:
    data = obj(body, "event-data")
    event, severity = text(data, "event"), text(data, "severity")
    if event == "failed" and severity == "permanent":
        yield text(data, "recipient"), "bounce"
    elif event == "complained":
        yield text(data, "recipient"), "complaint"
