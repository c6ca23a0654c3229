"""SendGrid's signed Event Webhook: an ECDSA P-256 signature (SHA-256) over the
timestamp header followed by the raw body, checked with the "verification key"
SendGrid shows (base64 DER SubjectPublicKeyInfo; PEM accepted too). A notice is
known by what was signed (timestamp and body), so re-encoding its signature as
(r, n - s) does not make it new."""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
from collections.abc import Iterator
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from newsletter.web.webhooks.base import (
    Notice,
    Rejected,
    Verifier,
    WebhookRequest,
    fresh,
    items,
    parse_json,
    text,
)

SIGNATURE = "x-twilio-email-event-webhook-signature"
TIMESTAMP = "x-twilio-email-event-webhook-timestamp"


@functools.lru_cache(maxsize=8)  # parsed once per configured key, not per notice
def load_key(raw: str) -> ec.EllipticCurvePublicKey:
    raw = raw.strip()
    try:
        if raw.startswith("-----BEGIN"):
            key = serialization.load_pem_public_key(raw.encode())
        else:
            key = serialization.load_der_public_key(base64.b64decode(raw, validate=True))
    except (ValueError, binascii.Error, TypeError) as exc:
        raise ValueError(f"[webhooks] sendgrid_public_key: not a public key: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise ValueError("[webhooks] sendgrid_public_key: expected an ECDSA P-256 key")
    return key


class SendGrid(Verifier):
    name = "sendgrid"

    def configured(self) -> bool:
        return bool(self.config.sendgrid_public_key)

    async def accept(self, req: WebhookRequest) -> list[Notice]:
        key = load_key(self.config.sendgrid_public_key or "")
        signature, timestamp = req.header(SIGNATURE), req.header(TIMESTAMP)
        if not signature or not timestamp:
            raise Rejected(401, "unsigned: the signed event webhook headers are missing")
        fresh(timestamp, req, self.config.tolerance_seconds)
        try:
            key.verify(base64.b64decode(signature, validate=True),
                       timestamp.encode() + req.body, ec.ECDSA(hashes.SHA256()))
        except (InvalidSignature, ValueError, binascii.Error):
            raise Rejected(401, "forged: the SendGrid signature does not verify") from None
        # The notice is its signed content, not its signature: ECDSA signatures are
        # malleable ((r, s) and (r, n - s) both verify, and SendGrid does not promise
        # low-s), so a replay with the other one is still the same notice.
        self.not_replayed(hashlib.sha256(timestamp.encode() + b"." + req.body).hexdigest(), req)
        return list(notices(parse_json(req.body)))


def notices(body: Any) -> Iterator[Notice]:
    for event in items(body if isinstance(body, list) else [body], "the events"):
        kind = text(event, "event")
        if kind == "bounce" and (text(event, "type") or "bounce") == "bounce":
            yield text(event, "email"), "bounce"
        elif kind == "spamreport":
            yield text(event, "email"), "complaint"
