"""Signed links: unsubscribe, preferences, confirm, view in browser, and the
emailed links that download a subscriber's data or erase them.

Tokens are signed (HMAC), not stored, so a link in a years-old email still works and
nothing has to be written to mint one (a preview writes nothing). Keys rotate:
``[web] secret_keys`` lists keys newest first; the newest signs, all verify.
Unset, the key made when the database was created is used (``store.keys`` reads
them; everything here takes the keys as arguments).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from newsletter.config import SenderConfig, WebConfig
from newsletter.errors import InputError

PURPOSES = ("unsubscribe", "preferences", "confirm", "view", "webhook", "feed", "vote",
            "data", "erase")
# The purposes only an email to the subscriber's address carries, never a digest: a
# digest gets forwarded, and with it its preferences link, but downloading everything
# stored about someone or erasing them asks for proof that one holds the mailbox.
MAILBOX_PURPOSES = ("data", "erase")
# ids in base 36 joined by "-", then (links made since migration 0010) a dot and the
# subscriber's link nonce in base 36, a dot, a 128-bit MAC in unpadded base64url:
# anything else (a non-ASCII byte, padding, a slash) is refused before any HMAC.
TOKEN_SHAPE = re.compile(
    r"[0-9a-z]{1,13}(?:-[0-9a-z]{1,13}){0,7}(?:\.[0-9a-z]{1,13})?\.[A-Za-z0-9_-]{22}")
_URLSAFE = bytes.maketrans(b"+/", b"-_")
PREFIXED = 10_000  # purposes whose hashed prefix a signer keeps ("vote:<paper>" each)


@dataclass(frozen=True)
class Claims:
    """What a verified token says: its ids (the subscriber's first) and the link nonce
    it carries (None for a link made before nonces: ``store.tokens`` decides)."""

    ids: list[int]
    nonce: int | None


class Signer:
    """Compact tokens: ``<ids>[.<nonce>].<mac>``, ids and nonce dot-free base 36, the
    MAC an HMAC-SHA256 over the purpose and everything before it, truncated to 128 bits
    and base64url encoded. The nonce (the subscriber row's ``link_nonce``) ties a link
    to one person: an id given to someone else later would not carry theirs.

    Three tokens go into every email, so they are built without JSON or zlib;
    the newest key signs, every key verifies (rotation without broken links).
    """

    def __init__(self, keys: list[str]) -> None:
        if not keys:
            raise InputError("no signing key")
        self._keys = [hashlib.sha256(k.encode()).digest() for k in keys]
        # HMAC by hand for the newest key (RFC 2104): SHA-256 states that have already
        # taken the padded key (inner and outer), and the inner one also "<purpose>|",
        # copied for each token: a third of ``hmac.digest``'s cost, which hashes the key
        # pads again for every token (a dozen a message: three links, two per paper).
        key = self._keys[0].ljust(64, b"\0")
        self._inner = hashlib.sha256(bytes(b ^ 0x36 for b in key))
        self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in key))
        self._prefixed: dict[str, Any] = {}

    def _mac(self, key: bytes, purpose: str, body: str) -> str:
        # hmac.digest: OpenSSL's one-shot HMAC (verifying: every key, any purpose).
        digest = hmac.digest(key, f"{purpose}|{body}".encode(), "sha256")[:16]
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def _sign(self, purpose: str, body: str) -> str:
        """``_mac`` with the newest key, from the kept hash states."""
        inner = self._prefixed.get(purpose)
        if inner is None:
            if len(self._prefixed) >= PREFIXED:
                self._prefixed.clear()
            inner = self._prefixed[purpose] = self._inner.copy()
            inner.update(f"{purpose}|".encode())
        h = inner.copy()
        h.update(body.encode())
        outer = self._outer.copy()
        outer.update(h.digest())
        return binascii.b2a_base64(outer.digest()[:16], newline=False)[:22].translate(
            _URLSAFE).decode()

    @staticmethod
    def body(subscriber_id: int, *extra: int, nonce: int | None = None) -> str:
        """What a token signs besides its purpose: ``<ids>[.<nonce>]``; the same for
        every paper's token in one email, so it is made once per subscriber."""
        body = "-".join(base36(v) for v in (subscriber_id, *extra))
        return body if nonce is None else f"{body}.{base36(nonce)}"

    def signed(self, purpose: str, body: str) -> str:
        """The token for ``purpose`` over ``body`` (``Signer.body``)."""
        if purpose.split(":", 1)[0] not in PURPOSES:
            raise ValueError(purpose)
        return f"{body}.{self._sign(purpose, body)}"

    def token(self, purpose: str, subscriber_id: int, *extra: int,
              nonce: int | None = None) -> str:
        return self.signed(purpose, self.body(subscriber_id, *extra, nonce=nonce))

    def paper_token(self, purpose: str, subscriber_id: int, paper_id: str,
                    nonce: int | None = None) -> str:
        """A token for one subscriber *and one paper* (e.g. a vote link): the paper id
        is signed with the subscriber, so a link cannot be re-aimed at another paper."""
        return self.token(f"{purpose}:{paper_id}", subscriber_id, nonce=nonce)

    def verify_paper(self, purpose: str, token: str, paper_id: str) -> int:
        """The subscriber id of a ``paper_token`` for ``paper_id``."""
        return self.verify(f"{purpose}:{paper_id}", token)[0]

    def verify(self, purpose: str, token: str) -> list[int]:
        return self.claims(purpose, token).ids

    def claims(self, purpose: str, token: str) -> Claims:
        """The ids and nonce of a token signed for ``purpose``; ``InputError`` when it
        was not (cut, altered, or for another purpose)."""
        if not TOKEN_SHAPE.fullmatch(token):
            raise InputError("this link is not valid (it may have been cut or altered)")
        signed, _, mac = token.rpartition(".")
        if signed and mac and any(hmac.compare_digest(mac, self._mac(k, purpose, signed))
                                  for k in self._keys):
            ids, _, nonce = signed.partition(".")
            try:
                return Claims([int(part, 36) for part in ids.split("-")],
                              int(nonce, 36) if nonce else None)
            except ValueError:
                pass
        raise InputError("this link is not valid (it may have been altered)")


def issue_hour(issued: int | None = None) -> int:
    """The hour an expiring link is stamped with (hours since the epoch): ``issued``,
    or now."""
    return int(time.time() // 3600) if issued is None else issued


def base36(value: int) -> str:
    """A non-negative id in lower-case base 36: the ids in link tokens and VERP addresses."""
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
    unsubscribe_mailto: str  # "" when no mailbox reads mailto: requests
    preferences: str
    browser: str


class LinkMaker:
    def __init__(self, web: WebConfig, sender: SenderConfig, signer: Signer, *,
                 mailto: str | None = None) -> None:
        """``mailto``: where a mailto: unsubscribe goes; None (no mailbox read there)
        = the List-Unsubscribe header offers only the https URL."""
        self.base = web.base_url.rstrip("/")
        self.mailbox = mailto
        self.signer = signer
        self._quoted: dict[str, str] = {}  # paper id → its URL path segment

    # Every subscriber link takes ``nonce``: the subscriber row's ``link_nonce``. A link
    # made without one works only for subscribers older than migration 0010.

    def for_subscriber(self, subscriber_id: int, edition_id: int,
                       nonce: int | None = None) -> Links:
        signer = self.signer
        body = signer.body(subscriber_id, nonce=nonce)
        unsub = signer.signed("unsubscribe", body)
        return Links(
            unsubscribe=f"{self.base}/unsubscribe/{unsub}",
            unsubscribe_mailto=(f"mailto:{self.mailbox}?subject="
                                f"{quote('unsubscribe ' + unsub)}" if self.mailbox else ""),
            preferences=f"{self.base}/preferences/{signer.signed('preferences', body)}",
            browser=f"{self.base}/view/"
                    f"{signer.token('view', subscriber_id, edition_id, nonce=nonce)}",
        )

    def votes(self, subscriber_id: int, entry_id: str,
              nonce: int | None = None) -> dict[str, str]:
        """"More like this" / "less like this" for one paper: one token per subscriber
        and paper, the direction in the path; each opens a page with one button."""
        return self.votes_for(subscriber_id, [entry_id], nonce)[entry_id]

    def votes_for(self, subscriber_id: int, entry_ids: list[str],
                  nonce: int | None = None) -> dict[str, dict[str, str]]:
        """``votes`` for each of ``entry_ids`` (one email's papers): the signed body is
        made once."""
        body = self.signer.body(subscriber_id, nonce=nonce)
        sign, base, quoted = self.signer._sign, self.base, self._quoted
        out = {}
        for entry_id in entry_ids:
            token = f"{body}.{sign(f'vote:{entry_id}', body)}"
            paper = quoted.get(entry_id)
            if paper is None:
                if len(quoted) > 100_000:  # bounded for a long-lived web process
                    quoted.clear()
                paper = quoted[entry_id] = quote(entry_id, safe="")
            out[entry_id] = {"more": f"{base}/feedback/up/{token}/{paper}",
                             "less": f"{base}/feedback/down/{token}/{paper}"}
        return out

    def paper(self, entry_id: str) -> str:
        return f"{self.base}/papers/{quote(entry_id, safe='')}"

    def unsubscribe(self, subscriber_id: int, nonce: int | None = None) -> str:
        token = self.signer.token("unsubscribe", subscriber_id, nonce=nonce)
        return f"{self.base}/unsubscribe/{token}"

    def preferences(self, subscriber_id: int, action: str = "", nonce: int | None = None
                    ) -> str:
        token = self.signer.token("preferences", subscriber_id, nonce=nonce)
        return f"{self.base}/preferences/{token}" + (f"/{action}" if action else "")

    def view(self, subscriber_id: int, edition_id: int, nonce: int | None = None) -> str:
        return (f"{self.base}/view/"
                f"{self.signer.token('view', subscriber_id, edition_id, nonce=nonce)}")

    def confirm(self, subscriber_id: int, issued: int | None = None, *,
                nonce: int | None = None, change: int | None = None) -> str:
        """A confirmation link stamped with the hour it was issued, so it can expire,
        and naming the sign-up's pending change (``change``) when it made one."""
        hour = issue_hour(issued)
        extra = (hour,) if change is None else (hour, change)
        token = self.signer.token("confirm", subscriber_id, *extra, nonce=nonce)
        return f"{self.base}/confirm/{token}"

    def mailbox_link(self, purpose: str, subscriber_id: int, issued: int | None = None, *,
                     nonce: int | None = None) -> str:
        """A link emailed to the subscriber's own address (``MAILBOX_PURPOSES``: "data"
        downloads what is stored about them, "erase" opens the erasure's one button),
        stamped with the hour it was issued so it expires as a confirmation link does."""
        if purpose not in MAILBOX_PURPOSES:
            raise ValueError(purpose)
        token = self.signer.token(purpose, subscriber_id, issue_hour(issued), nonce=nonce)
        return f"{self.base}/{purpose}/{token}"

    def feed(self, subscriber_id: int, nonce: int | None = None) -> str:
        return f"{self.base}/feed/{self.signer.token('feed', subscriber_id, nonce=nonce)}.atom"

    def home(self, path: str = "/") -> str:
        return f"{self.base}{path}"

    def webhook(self, provider: str, token: str) -> str:
        return f"{self.base}/webhooks/{provider}/{token}"
