"""Amazon SES through SNS. Every SNS message is signed (RSA, SHA1 for
SignatureVersion 1, SHA256 for 2) over a canonical "Key\\nvalue\\n" string, with the
certificate at ``SigningCertURL``. That URL must have the shape Amazon's have
(``https://sns.<region>.amazonaws.com/SimpleNotificationService-<id>.pem``); the
cheap checks (type, topic, age) come before any fetch; a certificate is cached, a
failed fetch is not retried for a while, and new certificate URLs are fetched at most
``CERT_FETCHES`` times per ``CERT_WINDOW`` seconds, so forged notices naming many URLs
cost a few fetches, not one each. A ``SubscriptionConfirmation`` is confirmed (a GET
of its ``SubscribeURL``, through the injectable fetcher) only after its signature
checks."""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import re
import time
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from newsletter.web.webhooks.base import (
    Fetcher,
    Notice,
    Rejected,
    Verifier,
    WebhookRequest,
    items,
    obj,
    parse_json,
    text,
)

# sns.<region>.amazonaws.com (or .amazonaws.com.cn), region like us-east-1, us-gov-west-1
SNS_HOST = re.compile(r"sns\.[a-z]{2}(?:-[a-z]+)+-[0-9]{1,2}\.amazonaws\.com(?:\.cn)?")
CERT_PATH = re.compile(r"/SimpleNotificationService-[0-9A-Za-z]{1,64}\.pem")
NOTIFICATION_KEYS = ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type")
CONFIRMATION_KEYS = ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn",
                     "Type")
MAX_AGE = dt.timedelta(hours=1)  # SNS retries for well under this
CERT_FETCHES, CERT_WINDOW = 3, 600.0  # new certificate URLs fetched per window
FAILED_FOR = 600.0  # a URL that did not give a certificate is not fetched again before


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


def certificate_url(url: str) -> str:
    """``url`` if it is where Amazon keeps SNS signing certificates, else refused."""
    amazon_url(url, "SigningCertURL")
    parts = urlsplit(url)
    if not CERT_PATH.fullmatch(parts.path) or parts.query or parts.fragment:
        raise Rejected(401, "SigningCertURL is not an SNS certificate "
                            "(/SimpleNotificationService-<id>.pem)")
    return url


class Certificates:
    """Signing keys by certificate URL: cached, failures remembered, new fetches
    rationed (``CERT_FETCHES`` per ``CERT_WINDOW``)."""

    def __init__(self, fetcher: Fetcher) -> None:
        self.fetcher = fetcher
        self.keys: OrderedDict[str, rsa.RSAPublicKey] = OrderedDict()
        self.failed: OrderedDict[str, float] = OrderedDict()  # url -> when
        self.fetched: list[float] = []  # when each new URL was fetched, in the window

    async def key(self, url: str, now: float | None = None) -> rsa.RSAPublicKey:
        cached = self.keys.get(url)
        if cached is not None:
            return cached
        now = time.monotonic() if now is None else now
        if now - self.failed.get(url, -FAILED_FOR) < FAILED_FOR:
            raise Rejected(401, "this signing certificate could not be fetched just before")
        self.fetched = [t for t in self.fetched if now - t < CERT_WINDOW]
        if len(self.fetched) >= CERT_FETCHES:
            raise Rejected(503, "too many new signing certificates: try again later")
        self.fetched.append(now)
        try:
            key = await self._fetch(url)
        except Rejected:
            self.failed[url] = now
            while len(self.failed) > 256:
                self.failed.popitem(last=False)
            raise
        self.keys[url] = key
        while len(self.keys) > 32:
            self.keys.popitem(last=False)
        return key

    async def _fetch(self, url: str) -> rsa.RSAPublicKey:
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
        return key


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

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.certificates = Certificates(self.fetcher)

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
        # Everything that needs no certificate first: a forged notice for a topic we do
        # not take, or an old one, costs no fetch.
        topics = self.config.ses_topic_arns
        if topics and text(msg, "TopicArn") not in topics:
            raise Rejected(403, "this SNS topic is not in [webhooks] ses_topic_arns")
        self._check_age(msg, req)
        url = certificate_url(text(msg, "SigningCertURL", required=True))
        key = await self.certificates.key(url)
        try:
            key.verify(signature, canonical, padding.PKCS1v15(), algorithm)
        except InvalidSignature:
            raise Rejected(401, "forged: the SNS signature does not verify") from None
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

    @staticmethod
    def _check_age(msg: dict[str, Any], req: WebhookRequest) -> None:
        try:
            sent = dt.datetime.fromisoformat(text(msg, "Timestamp").replace("Z", "+00:00"))
        except ValueError:
            raise Rejected(400, "the SNS Timestamp is not ISO 8601") from None
        if sent.tzinfo is None or abs(dt.datetime.fromtimestamp(req.now, dt.UTC) - sent) > MAX_AGE:
            raise Rejected(401, "stale: the SNS message is more than an hour old")


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
