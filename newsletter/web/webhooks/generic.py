"""Generic: the operator's own scripts report bounces and complaints (a relay's log
reader, another system's suppression list), as JSON::

    {"email": "ada@example.org", "type": "hard", "reason": "550 5.1.1 no such user"}
    {"message_id": "<20261201.7.42.ab12@digest.example.org>", "type": "soft"}

one object or a list of them; ``type`` is ``hard``, ``soft`` or ``complaint``. The
proof is the secret token in the URL (``newsletter webhooks urls``; rotate it with
``newsletter webhooks rotate generic``), since the caller is the operator: there is
no third party's signature to check. Soft reports count toward ``[bounces]
soft_limit`` the same way those read from the bounce mailbox do.

Each notice is ``(email or <message-id>, "type:reason")``: the shared notice shape,
with the reason carried after the type.
"""

from __future__ import annotations

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

TYPES = ("hard", "soft", "complaint")
MOST = 1000  # reports in one request


class Generic(Verifier):
    name = "generic"

    async def accept(self, req: WebhookRequest) -> list[Notice]:
        body = parse_json(req.body)
        reports = items(body if isinstance(body, list) else [body], "the reports")
        if len(reports) > MOST:
            raise Rejected(400, f"at most {MOST} reports in one request")
        return list(notices(reports))


def notices(reports: list[Any]) -> Iterator[Notice]:
    for report in reports:
        email, mid = text(report, "email").strip(), text(report, "message_id").strip()
        kind, reason = text(report, "type", required=True), text(report, "reason")
        if kind not in TYPES:
            raise Rejected(400, f"field 'type' must be one of {', '.join(TYPES)}")
        if bool(email) == bool(mid):
            raise Rejected(400, "give one of 'email' or 'message_id'")
        if mid and not (mid.startswith("<") and mid.endswith(">")):
            mid = f"<{mid.strip('<>')}>"  # as the ledger stores it
        yield email or mid, f"{kind}:{reason[:300]}"
