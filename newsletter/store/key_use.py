"""Which link-signing keys have signed links that left the service.

Rotating ``[web] secret_keys`` must never silently drop a key that links already
sent were signed with (every one-click unsubscribe in past emails would break), but
a key that never signed anything can be replaced freely: the key migration 0002
stores in every new database, say, when the operator configures their own before
the first send. So every command that hands out signed links (``send``, ``run``,
``worker``, ``web``) records the key it signs with, once, and only recorded keys
are protected.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from newsletter.config import WebConfig
from newsletter.store.keys import stored_key
from newsletter.store.models import SigningKeyUse, utcnow


def fingerprint(key: str) -> str:
    """A short, safe-to-print name for a key (migration 0013 holds a frozen copy)."""
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def configured_keys(cfg: WebConfig, session: Session) -> list[str]:
    """The keys in force, newest first (``store.keys.secret_keys``), or ``[]``."""
    if cfg.secret_keys:
        return list(cfg.secret_keys)
    stored = stored_key(session)
    return [stored] if stored else []


def record_use(session: Session, key: str, by: str) -> None:
    """Note that ``key`` signs links from now on (the first time only); two processes
    racing both succeed."""
    values = {"fingerprint": fingerprint(key), "first_used_at": utcnow(), "used_by": by[:32]}
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        session.execute(pg_insert(SigningKeyUse).values(values).on_conflict_do_nothing())
    elif dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        session.execute(sqlite_insert(SigningKeyUse).values(values).on_conflict_do_nothing())
    elif session.get(SigningKeyUse, values["fingerprint"]) is None:  # pragma: no cover
        session.add(SigningKeyUse(**values))


@dataclass(frozen=True)
class UsedKey:
    fingerprint: str
    first_used_at: dt.datetime
    used_by: str


def used_keys(session: Session) -> list[UsedKey]:
    rows = session.scalars(select(SigningKeyUse).order_by(SigningKeyUse.first_used_at))
    return [UsedKey(r.fingerprint, r.first_used_at, r.used_by) for r in rows]


def dropped_keys(cfg: WebConfig, session: Session) -> list[UsedKey]:
    """Keys that signed links but are neither configured nor retired on purpose in
    ``[web] retired_keys``: the links they signed would stop working."""
    kept = {fingerprint(k) for k in configured_keys(cfg, session)} | set(cfg.retired_keys)
    return [u for u in used_keys(session) if u.fingerprint not in kept]
