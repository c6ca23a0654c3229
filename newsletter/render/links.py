"""Signed links: unsubscribe, preferences, confirm, view in browser.

Tokens are signed (HMAC), not stored, so a link in a years-old email still works and
nothing has to be written to mint one (a preview writes nothing). Keys rotate:
``[web] secret_keys`` lists keys newest first; the newest signs, all verify.
Unset, the key made when the database was created is used (``store.keys`` reads
them; everything here takes the keys as arguments).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import time
from dataclasses import dataclass
from urllib.parse import quote

from newsletter.config import SenderConfig, WebConfig
from newsletter.errors import InputError

PURPOSES = ("unsubscribe", "preferences", "confirm", "view", "webhook", "feed", "vote")
# ids in base 36 joined by "-", a dot, a 128-bit MAC in unpadded base64url: anything else
# (a non-ASCII byte, padding, a slash) is refused before any HMAC is computed.
TOKEN_SHAPE = re.compile(r"[0-9a-z]{1,13}(?:-[0-9a-z]{1,13}){0,7}\.[A-Za-z0-9_-]{22}")


class Signer:
    """Compact tokens: ``<ids>.<mac>``, the ids dot-free base 36, the MAC an
    HMAC-SHA256 over purpose and ids, truncated to 128 bits and base64url encoded.

    Three tokens go into every email, so they are built without JSON or zlib;
    the newest key signs, every key verifies (rotation without broken links).
    """

    def __init__(self, keys: list[str]) -> None:
        if not keys:
            raise InputError("no signing key")
        self._keys = [hashlib.sha256(k.encode()).digest() for k in keys]

    def _mac(self, key: bytes, purpose: str, body: str) -> str:
        # hmac.digest: OpenSSL's one-shot HMAC, several times cheaper than hmac.new (a
        # dozen tokens go into every email: three links, one per paper for its votes).
        digest = hmac.digest(key, f"{purpose}|{body}".encode(), "sha256")[:16]
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def token(self, purpose: str, subscriber_id: int, *extra: int) -> str:
        if purpose.split(":", 1)[0] not in PURPOSES:
            raise ValueError(purpose)
        body = "-".join(_b36(v) for v in (subscriber_id, *extra))
        return f"{body}.{self._mac(self._keys[0], purpose, body)}"

    def paper_token(self, purpose: str, subscriber_id: int, paper_id: str) -> str:
        """A token for one subscriber *and one paper* (e.g. a vote link): the paper id
        is signed with the subscriber, so a link cannot be re-aimed at another paper."""
        return self.token(f"{purpose}:{paper_id}", subscriber_id)

    def verify_paper(self, purpose: str, token: str, paper_id: str) -> int:
        """The subscriber id of a ``paper_token`` for ``paper_id``."""
        return self.verify(f"{purpose}:{paper_id}", token)[0]

    def verify(self, purpose: str, token: str) -> list[int]:
        if not TOKEN_SHAPE.fullmatch(token):
            raise InputError("this link is not valid (it may have been cut or altered)")
        body, _, mac = token.partition(".")
        if body and mac and any(hmac.compare_digest(mac, self._mac(k, purpose, body))
                                for k in self._keys):
            try:
                return [int(part, 36) for part in body.split("-")]
            except ValueError:
                pass
        raise InputError("this link is not valid (it may have been altered)")


def _b36(value: int) -> str:
    if value < 0:
        raise ValueError(value)
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        value, r = divmod(value, 36)
        out = digits[r] + out
        if not value:
            return out


@dataclass(frozen=True)
class Links:
    unsubscribe: str
    unsubscribe_mailto: str
    preferences: str
    browser: str


class LinkMaker:
    def __init__(self, web: WebConfig, sender: SenderConfig, signer: Signer) -> None:
        self.base = web.base_url.rstrip("/")
        self.mailbox = sender.from_address  # where a mailto: unsubscribe goes
        self.signer = signer
        self._quoted: dict[str, str] = {}  # paper id → its URL path segment

    def for_subscriber(self, subscriber_id: int, edition_id: int) -> Links:
        unsub = self.signer.token("unsubscribe", subscriber_id)
        return Links(
            unsubscribe=f"{self.base}/unsubscribe/{unsub}",
            unsubscribe_mailto=f"mailto:{self.mailbox}?subject={quote('unsubscribe ' + unsub)}",
            preferences=f"{self.base}/preferences/"
                        f"{self.signer.token('preferences', subscriber_id)}",
            browser=f"{self.base}/view/{self.signer.token('view', subscriber_id, edition_id)}",
        )

    def votes(self, subscriber_id: int, entry_id: str) -> dict[str, str]:
        """"More like this" / "less like this" for one paper: one token per subscriber
        and paper, the direction in the path; each opens a page with one button."""
        token = self.signer.paper_token("vote", subscriber_id, entry_id)
        paper = self._quoted.get(entry_id)
        if paper is None:
            paper = self._quoted[entry_id] = quote(entry_id, safe="")
            if len(self._quoted) > 100_000:  # bounded for a long-lived web process
                self._quoted.clear()
        return {"more": f"{self.base}/feedback/up/{token}/{paper}",
                "less": f"{self.base}/feedback/down/{token}/{paper}"}

    def paper(self, entry_id: str) -> str:
        return f"{self.base}/papers/{quote(entry_id, safe='')}"

    def unsubscribe(self, subscriber_id: int) -> str:
        return f"{self.base}/unsubscribe/{self.signer.token('unsubscribe', subscriber_id)}"

    def preferences(self, subscriber_id: int, action: str = "") -> str:
        token = self.signer.token("preferences", subscriber_id)
        return f"{self.base}/preferences/{token}" + (f"/{action}" if action else "")

    def view(self, subscriber_id: int, edition_id: int) -> str:
        return f"{self.base}/view/{self.signer.token('view', subscriber_id, edition_id)}"

    def confirm(self, subscriber_id: int, issued: int | None = None) -> str:
        """A confirmation link stamped with the hour it was issued, so it can expire."""
        hour = int(time.time() // 3600) if issued is None else issued
        return f"{self.base}/confirm/{self.signer.token('confirm', subscriber_id, hour)}"

    def feed(self, subscriber_id: int) -> str:
        return f"{self.base}/feed/{self.signer.token('feed', subscriber_id)}.atom"

    def home(self, path: str = "/") -> str:
        return f"{self.base}{path}"

    def webhook(self, provider: str, token: str) -> str:
        return f"{self.base}/webhooks/{provider}/{token}"
