"""The link-signing keys: ``[web] secret_keys`` (newest first: the first signs, all
verify) or, unset, the key made when the database was created.

Reading them is the store's part; signing and verifying (``render.links.Signer``)
take the keys as arguments, so a preview or a test signs without a database.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from newsletter.config import WebConfig
from newsletter.errors import InputError
from newsletter.store.models import Meta


def stored_key(session: Session) -> str | None:
    """The key the database was created with (migration 0002), if any."""
    row = session.get(Meta, "secret_key")
    return row.value if row is not None else None


def secret_keys(cfg: WebConfig, session: Session) -> list[str]:
    """The keys to sign and verify with, newest first."""
    if cfg.secret_keys:
        return list(cfg.secret_keys)
    stored = stored_key(session)
    if stored is None:  # pragma: no cover - the migration always makes one
        raise InputError("no signing key: set [web] secret_keys or run `newsletter db upgrade`")
    return [stored]
