"""Erased addresses: what erasure leaves behind (a hash), and the checks that keep an
erased address from coming back through an import, the CLI or a sign-up.

Both the subscriber lifecycle (erasure, sign-up) and the subscriber commands (add,
import) ask these questions, so they live apart from either.
"""

from __future__ import annotations

import hashlib

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from newsletter.errors import InputError
from newsletter.store.models import Suppression


def address_hash(address: str) -> str:
    """What an erased address leaves behind: enough to refuse it, not to read it."""
    return hashlib.sha256(f"newsletter-suppression:{address.strip().lower()}".encode()).hexdigest()


def is_suppressed(session: Session, address: str) -> bool:
    return session.get(Suppression, address_hash(address)) is not None


def suppressed_among(session: Session, addresses: list[str]) -> set[str]:
    """The addresses (of ``addresses``) that were erased; for bulk imports."""
    by_hash = {address_hash(a): a for a in addresses}
    found: set[str] = set()
    keys = list(by_hash)
    for start in range(0, len(keys), 900):
        chunk = keys[start : start + 900]
        found.update(by_hash[h] for h in session.scalars(
            select(Suppression.hash).where(Suppression.hash.in_(chunk))))
    return found


def lift_suppression(session: Session, address: str) -> None:
    """The erased address's owner confirmed a new sign-up themselves: it may be stored
    again (imports and the CLI never lift it)."""
    session.execute(delete(Suppression).where(Suppression.hash == address_hash(address)))


def refuse_suppressed(session: Session, address: str) -> None:
    if is_suppressed(session, address):
        raise InputError(f"{address} asked to be erased and cannot be added again")
