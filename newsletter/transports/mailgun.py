"""Mailgun ``POST /v3/{domain}/messages`` (form fields, HTTP basic auth as ``api``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from newsletter.render.mime import Message
from newsletter.transports.http_api import HttpApiTransport, headers_of


class MailgunTransport(HttpApiTransport):
    name = "mailgun"
    default_base = "https://api.mailgun.net"
    needs = ("api_key", "domain")

    def request(self, messages: Sequence[Message]) -> dict[str, Any]:
        [m] = messages
        data = {"from": m.from_header, "to": m.to, "subject": m.subject, "text": m.text,
                "html": m.html, "h:Message-Id": m.message_id}
        data.update({f"h:{k}": v for k, v in headers_of(m).items()})
        return {"method": "POST", "url": f"{self.base}/v3/{self.cfg.domain}/messages",
                "auth": ("api", self.cfg.api_key or ""), "data": data}
