"""Signing-key rotation, checked before serving.

Every email already sent carries links signed with the key in use then. Setting
``[web] secret_keys`` to new keys without the one stored in the database would
silently break all of them, one-click unsubscribe included. So the server refuses
to start unless the stored key is still configured (anywhere in the list: the
first signs, the rest verify) or explicitly retired by its fingerprint in
``[web] retired_keys``.
"""

from __future__ import annotations

import hashlib

from sqlalchemy.orm import Session

from newsletter.config import WebConfig
from newsletter.errors import ConfigError
from newsletter.store.models import Meta


def fingerprint(key: str) -> str:
    """A short, safe-to-print name for a key."""
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def stored_key(session: Session) -> str | None:
    row = session.get(Meta, "secret_key")
    return row.value if row is not None else None


def check_rotation(config: WebConfig, session: Session) -> None:
    stored = stored_key(session)
    if not config.secret_keys or stored is None or stored in config.secret_keys:
        return
    fp = fingerprint(stored)
    if fp in config.retired_keys:
        return
    raise ConfigError(
        f"[web] secret_keys does not hold the signing key stored in the database "
        f"(fingerprint {fp}): every link already sent would stop working. Add that key "
        f"after your new one (`newsletter keys show` prints it), or retire it on purpose with "
        f'[web] retired_keys = ["{fp}"]')


def describe(config: WebConfig, session: Session) -> dict[str, object]:
    """What `newsletter keys show` prints: the stored key and every key's fingerprint."""
    stored = stored_key(session)
    return {
        "stored_key": stored,
        "stored_fingerprint": fingerprint(stored) if stored else None,
        "configured_fingerprints": [fingerprint(k) for k in config.secret_keys],
        "retired_fingerprints": list(config.retired_keys),
        "signing_with": fingerprint(config.secret_keys[0]) if config.secret_keys
        else (fingerprint(stored) if stored else None),
    }
