"""The per-message envelope sender (VERP): ``bounces+<token>@example.org``.

A bounce goes to the envelope sender, and servers keep that address when every
other trace of the original is lost (a relay's DSN may quote no headers at all),
so the address itself names the delivery it answers. The token carries the
delivery id *and* the subscriber id, both checked against the ledger row: a
delivery id alone could name another person's row once rows are deleted.

The token is lower-case letters and digits only (base 36 ids, base 32 MAC),
because some servers lower-case the local part of the address they report;
an 80-bit MAC keeps the address short and still unforgeable in practice.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from dataclasses import dataclass

from newsletter.render.links import base36

PLACEHOLDER = "{token}"
TOKEN = re.compile(r"([0-9a-z]{1,13})-([0-9a-z]{1,13})-([a-z2-7]{16})")


@dataclass(frozen=True)
class Verp:
    """Makes and reads return paths for one ``[bounces] return_path`` template."""

    template: str  # e.g. "bounces+{token}@digest.example.org"
    keys: tuple[str, ...]  # newest first: the newest signs, every one verifies

    def __post_init__(self) -> None:
        if self.template.count(PLACEHOLDER) != 1 or "@" not in self.template:
            raise ValueError(f"[bounces] return_path: expected one {PLACEHOLDER} and an "
                             f"@domain, got {self.template!r}")
        if not self.keys:
            raise ValueError("no signing key")

    def address(self, delivery_id: int, subscriber_id: int) -> str:
        body = f"{base36(delivery_id)}-{base36(subscriber_id)}"
        return self.template.replace(PLACEHOLDER, f"{body}-{_mac(self.keys[0], body)}")

    def read(self, address: str) -> tuple[int, int] | None:
        """(delivery id, subscriber id) named by ``address``, or None when it is not
        one of ours or its MAC does not verify."""
        prefix, _, suffix = self.template.lower().partition(PLACEHOLDER)
        addr = address.strip().strip("<>").lower()
        if not (addr.startswith(prefix) and addr.endswith(suffix)):
            return None
        m = TOKEN.fullmatch(addr[len(prefix):len(addr) - len(suffix)])
        if m is None:
            return None
        body = f"{m.group(1)}-{m.group(2)}"
        if not any(hmac.compare_digest(m.group(3), _mac(k, body)) for k in self.keys):
            return None
        return int(m.group(1), 36), int(m.group(2), 36)

    def find(self, addresses: tuple[str, ...] | list[str]) -> tuple[int, int] | None:
        for address in addresses:
            found = self.read(address)
            if found is not None:
                return found
        return None


def _mac(key: str, body: str) -> str:
    digest = hmac.digest(hashlib.sha256(key.encode()).digest(), f"verp|{body}".encode(),
                         "sha256")[:10]
    return base64.b32encode(digest).decode().lower()
