"""Signed links: unsubscribe, preferences, confirm, view in browser.

Tokens are signed, not stored, so a link in a years-old email still works and
nothing has to be written to mint one (a preview writes nothing). Keys rotate:
``[web] secret_keys`` lists keys newest first; the newest signs, all verify.
Unset, the key made when the database was created is used.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote

from itsdangerous import BadSignature, URLSafeSerializer
from sqlalchemy.orm import Session

from .config import Settings
from .errors import InputError
from .models import Meta

PURPOSES = ("unsubscribe", "preferences", "confirm", "view")


def secret_keys(settings: Settings, session: Session) -> list[str]:
    if settings.web.secret_keys:
        return list(settings.web.secret_keys)
    row = session.get(Meta, "secret_key")
    if row is None:  # pragma: no cover - the migration always makes one
        raise InputError("no signing key: set [web] secret_keys or run `newsletter db upgrade`")
    return [row.value]


class Signer:
    def __init__(self, keys: list[str]) -> None:
        # itsdangerous signs with the *last* key and verifies with all.
        self._by_purpose = {p: URLSafeSerializer(list(reversed(keys)), salt=p) for p in PURPOSES}

    def token(self, purpose: str, subscriber_id: int, *extra: int) -> str:
        return str(self._by_purpose[purpose].dumps([subscriber_id, *extra]))

    def verify(self, purpose: str, token: str) -> list[int]:
        try:
            value = self._by_purpose[purpose].loads(token)
        except BadSignature:
            raise InputError("this link is not valid (it may have been altered)") from None
        if not isinstance(value, list) or not value or not all(isinstance(v, int) for v in value):
            raise InputError("this link is not valid")
        return value


@dataclass(frozen=True)
class Links:
    unsubscribe: str
    unsubscribe_mailto: str
    preferences: str
    browser: str


class LinkMaker:
    def __init__(self, settings: Settings, signer: Signer) -> None:
        self.base = settings.web.base_url.rstrip("/")
        self.mailbox = settings.sender.from_address
        self.signer = signer

    def for_subscriber(self, subscriber_id: int, edition_id: int) -> Links:
        unsub = self.signer.token("unsubscribe", subscriber_id)
        return Links(
            unsubscribe=f"{self.base}/unsubscribe/{unsub}",
            unsubscribe_mailto=f"mailto:{self.mailbox}?subject={quote('unsubscribe ' + unsub)}",
            preferences=f"{self.base}/preferences/"
                        f"{self.signer.token('preferences', subscriber_id)}",
            browser=f"{self.base}/view/{self.signer.token('view', subscriber_id, edition_id)}",
        )

    def paper(self, entry_id: str) -> str:
        return f"{self.base}/papers/{quote(entry_id, safe='')}"
