"""Postmark ``POST /email`` and ``POST /email/batch`` (up to 500 per request)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import httpx

from newsletter.errors import TransportError
from newsletter.render.mime import Message
from newsletter.transports.http_api import HttpApiTransport, headers_of

INACTIVE_RECIPIENT = 406  # Postmark's ErrorCode for a bounced / suppressed address


class PostmarkTransport(HttpApiTransport):
    name = "postmark"
    default_base = "https://api.postmarkapp.com"
    batch_size = 500

    single_path, batch_path = "/email", "/email/batch"

    def payload(self, m: Message) -> dict[str, Any]:
        return {"From": m.from_header, "To": m.to, "Subject": m.subject, "HtmlBody": m.html,
                "TextBody": m.text, "MessageStream": "broadcast",
                "Headers": [{"Name": k, "Value": v} for k, v in headers_of(m).items()]}

    def auth_headers(self, messages: Sequence[Message]) -> dict[str, str]:
        return {"X-Postmark-Server-Token": self.cfg.api_key or "", "Accept": "application/json"}

    def results(self, response: httpx.Response, messages: Sequence[Message]) -> list[
            str | TransportError]:
        body = response.json()
        items = body if isinstance(body, list) else [body]
        out: list[str | TransportError] = []
        for m, item in zip(messages, items, strict=False):
            code = int(item.get("ErrorCode", 0))
            if code == 0:
                out.append(str(item.get("MessageID") or m.message_id))
            else:
                out.append(TransportError(f"postmark: {code} {item.get('Message', '')}",
                                          permanent=True, bounce=code == INACTIVE_RECIPIENT))
        while len(out) < len(messages):
            out.append(TransportError("postmark: no result for this message"))
        return out
