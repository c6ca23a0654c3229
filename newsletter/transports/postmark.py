"""Postmark ``POST /email`` and ``POST /email/batch`` (up to 500 per request)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import httpx

from ..errors import TransportError
from ..mime import Message
from .http_api import HttpApiTransport, headers_of

INACTIVE_RECIPIENT = 406  # Postmark's ErrorCode for a bounced / suppressed address


class PostmarkTransport(HttpApiTransport):
    name = "postmark"
    default_base = "https://api.postmarkapp.com"
    batch_size = 500

    def _one(self, m: Message) -> dict[str, Any]:
        return {"From": m.from_header, "To": m.to, "Subject": m.subject, "HtmlBody": m.html,
                "TextBody": m.text, "MessageStream": "broadcast",
                "Headers": [{"Name": k, "Value": v} for k, v in headers_of(m).items()]}

    def request(self, messages: Sequence[Message]) -> dict[str, Any]:
        headers = {"X-Postmark-Server-Token": self.cfg.api_key or "",
                   "Accept": "application/json"}
        if len(messages) == 1:
            return {"method": "POST", "url": f"{self.base}/email", "headers": headers,
                    "json": self._one(messages[0])}
        return {"method": "POST", "url": f"{self.base}/email/batch", "headers": headers,
                "json": [self._one(m) for m in messages]}

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
