"""The vote use cases: a reader's "more / less like this" on a paper (from the email's
links or ``newsletter feedback``), and on their preferences page undoing a vote,
removing one learned term, or resetting all learning.

The CLI and the web's feedback pages parse, call one function here, and present
the ``VoteOutcome`` (or the ``InputError``) in their own words. What votes teach is
read by ``service.ranking``; the vote itself is stored by ``store.votes``.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from newsletter.config import RankingConfig
from newsletter.errors import InputError
from newsletter.ranking.view import VoteOutcome, learned_terms, moved_terms
from newsletter.service.ranking import learning_selection
from newsletter.store import votes as store
from newsletter.store.models import Entry, Subscriber

__all__ = ["VoteOutcome", "forget", "record_vote", "reset", "undo"]


def record_vote(cfg: RankingConfig, session: Session, paper_id: str, direction: int, *,
                by: str, email: str | None = None,
                subscriber_id: int | None = None) -> VoteOutcome:
    """Record a vote (of the subscriber with ``email`` or ``subscriber_id``; ``by``:
    ``email`` for the email's links, ``cli``) and say what it taught."""
    sub = (session.get(Subscriber, subscriber_id) if subscriber_id is not None
           else store.subscriber_by_email(session, email or ""))
    if sub is None:
        raise InputError("this subscription no longer exists")
    vote, before = store.record(session, sub.id, paper_id, direction, by)
    entry = session.get(Entry, paper_id)
    selection = learning_selection(cfg, session)
    learned = learned_terms(selection, sub.id, sub.keywords)
    moved = moved_terms(selection, learned, paper_id, direction)
    return VoteOutcome(sub.email, paper_id, entry.title if entry else paper_id, vote.direction,
                       before, moved[:3])


def undo(session: Session, subscriber_id: int, paper_id: str) -> bool:
    """Forget one vote: the ranking is as if it had never been cast."""
    return store.undo(session, subscriber_id, paper_id)


def forget(session: Session, subscriber_id: int, term: str, label: str) -> None:
    """Stop learning one term (as ``learned_terms`` keys it) for this subscriber."""
    store.mute(session, subscriber_id, term, label)


def reset(session: Session, subscriber_id: int) -> int:
    """Forget every vote and removed term; the votes removed."""
    return store.reset(session, subscriber_id)
