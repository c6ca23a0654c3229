"""SendGrid v3 ``POST /v3/mail/send``: one request per personalized message."""

from __future__ import annotations

from collections.abc import Sequence
from email.utils import parseaddr
from typing import Any

from ..mime import Message
from .http_api import HttpApiTransport, headers_of


class SendGridTransport(HttpApiTransport):
    name = "sendgrid"
    default_base = "https://api.sendgrid.com"

    def request(self, messages: Sequence[Message]) -> dict[str, Any]:
        [m] = messages
        name, address = parseaddr(m.from_header)
        return {
            "method": "POST", "url": f"{self.base}/v3/mail/send",
            "headers": {"Authorization": f"Bearer {self.cfg.api_key}"},
            "json": {
                "personalizations": [{"to": [{"email": m.to}]}],
                "from": {"email": address or m.sender, **({"name": name} if name else {})},
                "subject": m.subject,
                "content": [{"type": "text/plain", "value": m.text},
                            {"type": "text/html", "value": m.html}],
                "headers": headers_of(m),
                "custom_args": {"message_id": m.message_id},
            },
        }
