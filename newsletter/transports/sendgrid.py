"""SendGrid v3 ``POST /v3/mail/send``: one request per personalized message."""

from __future__ import annotations

from collections.abc import Sequence
from email.utils import parseaddr
from typing import Any

from newsletter.render.mime import Message
from newsletter.transports.http_api import HttpApiTransport, headers_of


class SendGridTransport(HttpApiTransport):
    name = "sendgrid"
    default_base = "https://api.sendgrid.com"

    single_path = "/v3/mail/send"  # no batch: every message has its own content

    def payload(self, m: Message) -> dict[str, Any]:
        name, address = parseaddr(m.from_header)
        return {
            "personalizations": [{"to": [{"email": m.to}]}],
            "from": {"email": address or m.sender, **({"name": name} if name else {})},
            "subject": m.subject,
            "content": [{"type": "text/plain", "value": m.text},
                        {"type": "text/html", "value": m.html}],
            "headers": headers_of(m),
            "custom_args": {"message_id": m.message_id},
        }

    def auth_headers(self, messages: Sequence[Message]) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.cfg.api_key}"}
