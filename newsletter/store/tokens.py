"""Link tokens checked against the subscriber they name.

A signed token proves we made it, not that the person it was made for is still the
one with that id. So every link also carries the subscriber row's ``link_nonce``,
and a token is honoured only when its nonce is that row's (the web pages and the
mailto unsubscribe of the bounce mailbox both ask here). Subscriber ids are never
given out twice (AUTOINCREMENT on SQLite, a sequence on PostgreSQL), and a new
subscriber gets a new random nonce, so the links of an erased or removed person
answer 410 forever instead of acting for whoever comes next.

Links sent before nonces existed (migration 0010) carry none. They keep working for
the subscribers who existed then, ids up to ``meta.legacy_link_max_id``: no id above
it had been given out when the migration ran, and with AUTOINCREMENT none at or
below it is given out again, so such a link can only name its own person (or, for an
id SQLite had already handed on before the migration, the person who has it now:
that cannot be told apart any more). A nonce-less link naming a newer id is refused.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from newsletter.store.models import Meta, Subscriber

LEGACY_KEY = "legacy_link_max_id"


@dataclass(frozen=True)
class Holder:
    """The subscriber a token names, found and matching: their id, their row's nonce
    (every link made for them from here on carries it) and the token's ids (the
    subscriber's first, then e.g. a confirmation's hour)."""

    id: int
    nonce: int
    values: list[int]


def legacy_max_id(session: Session) -> int:
    """The highest subscriber id whose nonce-less links are honoured (0: none)."""
    row = session.get(Meta, LEGACY_KEY)
    try:
        return int(row.value) if row is not None else 0
    except ValueError:
        return 0


def holder(session: Session, ids: list[int], nonce: int | None, legacy_max: int
           ) -> Holder | None:
    """The subscriber a verified token names (its ``ids``, the subscriber's first, and
    the ``nonce`` it carries), or None: no such row (erased, removed), or a row that is
    not the one the link was made for."""
    sub_id = ids[0]
    current = session.scalar(select(Subscriber.link_nonce).where(Subscriber.id == sub_id))
    if current is None:
        return None
    # A link from before nonces: only for the subscribers who existed then.
    ok = sub_id <= legacy_max if nonce is None else nonce == current
    return Holder(sub_id, int(current), list(ids)) if ok else None
