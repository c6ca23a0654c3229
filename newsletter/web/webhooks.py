"""Bounce and complaint notifications from the email APIs, one small parser each.

Each provider posts its own JSON; every parser answers the same question: which
addresses hard-bounced, and which complained. Those subscribers are suppressed
(``bounced`` / ``complained``) so the next edition does not go to them. The URL
carries a signed token (``/webhooks/<provider>/<token>``) so nobody else can
unsubscribe people by posting here.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

Notice = tuple[str, str]  # (address, "bounce" | "complaint")


def _as_list(body: Any) -> list[Any]:
    return body if isinstance(body, list) else [body]


def sendgrid(body: Any) -> Iterator[Notice]:
    for event in _as_list(body):
        kind = event.get("event")
        if kind == "bounce" and event.get("type", "bounce") == "bounce":
            yield event.get("email", ""), "bounce"
        elif kind == "spamreport":
            yield event.get("email", ""), "complaint"


def postmark(body: Any) -> Iterator[Notice]:
    for event in _as_list(body):
        kind = event.get("RecordType")
        if kind == "Bounce" and event.get("Type") in ("HardBounce", "BadEmailAddress"):
            yield event.get("Email", ""), "bounce"
        elif kind == "SpamComplaint":
            yield event.get("Email", ""), "complaint"


def mailgun(body: Any) -> Iterator[Notice]:
    data = body.get("event-data", body) if isinstance(body, dict) else {}
    if data.get("event") == "failed" and data.get("severity") == "permanent":
        yield data.get("recipient", ""), "bounce"
    elif data.get("event") == "complained":
        yield data.get("recipient", ""), "complaint"


def ses(body: Any) -> Iterator[Notice]:
    message = body.get("Message", body) if isinstance(body, dict) else {}
    if isinstance(message, str):  # delivered through SNS: the notification is a string
        message = json.loads(message)
    kind = message.get("notificationType") or message.get("eventType")
    if kind == "Bounce" and message.get("bounce", {}).get("bounceType") == "Permanent":
        for r in message["bounce"].get("bouncedRecipients", []):
            yield r.get("emailAddress", ""), "bounce"
    elif kind == "Complaint":
        for r in message.get("complaint", {}).get("complainedRecipients", []):
            yield r.get("emailAddress", ""), "complaint"


def resend(body: Any) -> Iterator[Notice]:
    kind = body.get("type") if isinstance(body, dict) else None
    to = body.get("data", {}).get("to", []) if isinstance(body, dict) else []
    for address in to if isinstance(to, list) else [to]:
        if kind == "email.bounced":
            yield address, "bounce"
        elif kind == "email.complained":
            yield address, "complaint"


PARSERS: dict[str, Callable[[Any], Iterator[Notice]]] = {
    "sendgrid": sendgrid, "postmark": postmark, "mailgun": mailgun, "ses": ses, "resend": resend,
}
