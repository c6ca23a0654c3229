"""Amazon SES through SNS. Every SNS message is signed (RSA, SHA1 for
SignatureVersion 1, SHA256 for 2) over a canonical "Key\\nvalue\\n" string, with the
certificate at ``SigningCertURL``. That URL is fetched only from
``https://sns.<region>.amazonaws.com/`` and the certificate is cached. A
``SubscriptionConfirmation`` is confirmed (a GET of its ``SubscribeURL``, through
the injectable fetcher) only after its signature checks."""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import re
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from newsletter.web.webhooks.base import (
    Notice,
    Rejected,
    Verifier,
    WebhookRequest,
    items,
    obj,
    parse_json,
    text,
)

SNS_HOST = re.compile(r"sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?")
NOTIFICATION_KEYS = ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type")
CONFIRMATION_KEYS = ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn",
                     "Type")
MAX_AGE = dt.timedelta(hours=1)  # SNS retries for well under this


def amazon_url(url: str, what: str) -> str:
    """``url`` if it is https on an SNS host (no port, no credentials), else refused."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise Rejected(400, f"{what} is not a URL") from None
    if (parts.scheme != "https" or not SNS_HOST.fullmatch(parts.hostname or "")
            or port not in (None, 443) or parts.username or parts.password):
        raise Rejected(401, f"{what} is not an https://sns.<region>.amazonaws.com/ URL")
    return url


def string_to_sign(msg: dict[str, Any]) -> bytes:
    kind = text(msg, "Type", required=True)
    keys = NOTIFICATION_KEYS if kind == "Notification" else CONFIRMATION_KEYS
    out = []
    for key in keys:
        value = text(msg, key, required=key != "Subject")
        if key == "Subject" and "Subject" not in msg:
            continue
        out.append(f"{key}\n{value}\n")
    return "".join(out).encode()


class Ses(Verifier):
    name = "ses"
    _certs: OrderedDict[str, rsa.RSAPublicKey]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._certs = OrderedDict()

    async def _public_key(self, url: str) -> rsa.RSAPublicKey:
        cached = self._certs.get(url)
        if cached is not None:
            return cached
        try:
            pem = await self.fetcher(url)
        except Exception as exc:  # noqa: BLE001 - any failure to fetch is a refusal
            raise Rejected(401, f"cannot fetch the signing certificate: {exc}"[:200]) from None
        try:
            key = x509.load_pem_x509_certificate(pem).public_key()
        except ValueError:
            raise Rejected(401, "the signing certificate is not a PEM certificate") from None
        if not isinstance(key, rsa.RSAPublicKey):
            raise Rejected(401, "the signing certificate's key is not RSA")
        self._certs[url] = key
        while len(self._certs) > 32:
            self._certs.popitem(last=False)
        return key

    async def accept(self, req: WebhookRequest) -> list[Notice]:
        msg = parse_json(req.body)
        if not isinstance(msg, dict):
            raise Rejected(400, "an SNS message is a JSON object")
        kind = text(msg, "Type", required=True)
        if kind not in ("Notification", "SubscriptionConfirmation", "UnsubscribeConfirmation"):
            raise Rejected(400, f"unknown SNS message type {kind[:40]!r}")
        version = text(msg, "SignatureVersion", required=True)
        algorithm = {"1": hashes.SHA1(), "2": hashes.SHA256()}.get(version)
        if algorithm is None:
            raise Rejected(400, f"unknown SignatureVersion {version[:10]!r}")
        try:
            signature = base64.b64decode(text(msg, "Signature", required=True), validate=True)
        except (binascii.Error, ValueError):
            raise Rejected(401, "forged: the SNS signature is not base64") from None
        canonical = string_to_sign(msg)
        key = await self._public_key(amazon_url(text(msg, "SigningCertURL", required=True),
                                                "SigningCertURL"))
        try:
            key.verify(signature, canonical, padding.PKCS1v15(), algorithm)
        except InvalidSignature:
            raise Rejected(401, "forged: the SNS signature does not verify") from None
        topics = self.config.ses_topic_arns
        if topics and text(msg, "TopicArn") not in topics:
            raise Rejected(403, "this SNS topic is not in [webhooks] ses_topic_arns")
        try:
            sent = dt.datetime.fromisoformat(text(msg, "Timestamp").replace("Z", "+00:00"))
        except ValueError:
            raise Rejected(400, "the SNS Timestamp is not ISO 8601") from None
        if sent.tzinfo is None or abs(dt.datetime.fromtimestamp(req.now, dt.UTC) - sent) > MAX_AGE:
            raise Rejected(401, "stale: the SNS message is more than an hour old")
        self.not_replayed(text(msg, "MessageId"), req, 2 * MAX_AGE.total_seconds())
        if kind == "SubscriptionConfirmation":
            url = amazon_url(text(msg, "SubscribeURL", required=True), "SubscribeURL")
            try:
                await self.fetcher(url)
            except Exception as exc:  # noqa: BLE001 - SNS will send the confirmation again
                raise Rejected(502, f"could not confirm the subscription: {exc}"[:200]) \
                    from None
            return []
        if kind == "UnsubscribeConfirmation":
            return []
        inner = parse_json(text(msg, "Message", required=True).encode())
        return list(notices(inner))


def notices(message: Any) -> Iterator[Notice]:
    kind = text(message, "notificationType") or text(message, "eventType")
    if kind == "Bounce":
        bounce = obj(message, "bounce")
        if text(bounce, "bounceType") == "Permanent":
            for r in items(bounce.get("bouncedRecipients"), "bouncedRecipients"):
                yield text(r, "emailAddress"), "bounce"
    elif kind == "Complaint":
        complaint = obj(message, "complaint")
        for r in items(complaint.get("complainedRecipients"), "complainedRecipients"):
            yield text(r, "emailAddress"), "complaint"
