"""Postmark: HTTP basic auth, whose user name and password the operator puts in the
webhook URL at Postmark (``https://user:pass@host/webhooks/postmark/<token>``)."""

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
    items,
    parse_json,
    text,
)

REMEMBER_SECONDS = 7 * 24 * 3600


class Postmark(Verifier):
    name = "postmark"

    def configured(self) -> bool:
        return bool(self.config.postmark_username and self.config.postmark_password)

    async def accept(self, req: WebhookRequest) -> list[Notice]:
        scheme, _, encoded = req.header("authorization").partition(" ")
        try:
            user, sep, password = base64.b64decode(encoded, validate=True).partition(b":")
        except (binascii.Error, ValueError):
            user, sep, password = b"", b"", b""
        ok_user = hmac.compare_digest(user, (self.config.postmark_username or "").encode())
        ok_pass = hmac.compare_digest(password, (self.config.postmark_password or "").encode())
        if scheme.lower() != "basic" or not sep or not (ok_user and ok_pass):
            raise Rejected(401, "forged: Postmark's basic auth does not match")
        found = list(notices(parse_json(req.body)))
        # No signature or timestamp here: a notice is its body, remembered for a week.
        self.not_replayed(hashlib.sha256(req.body).hexdigest(), req, REMEMBER_SECONDS)
        return found


def notices(body: Any) -> Iterator[Notice]:
    for event in items(body if isinstance(body, list) else [body], "the records"):
        kind = text(event, "RecordType")
        if kind == "Bounce" and text(event, "Type") in ("HardBounce", "BadEmailAddress"):
            yield text(event, "Email"), "bounce"
        elif kind == "SpamComplaint":
            yield text(event, "Email"), "complaint"
