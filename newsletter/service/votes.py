"""The vote use cases: a reader's "more / less like this" on a paper (from the email's
links or ``newsletter feedback``), and on their preferences page undoing a vote,
removing one learned term, or resetting all learning.

The CLI and the web's feedback pages parse, call one function here, and present
the ``VoteOutcome`` (or the ``InputError``) in their own words.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

from newsletter.config import Settings
from newsletter.errors import InputError
from newsletter.ranking.view import learned_terms, learning_selection
from newsletter.store import votes as store
from newsletter.store.models import Entry, Subscriber


@dataclass(frozen=True)
class VoteOutcome:
    """What a vote did, in words for the thank-you page and the CLI."""

    email: str
    paper_id: str
    title: str
    direction: int
    replaced: int | None
    terms: list[str]  # the learned terms this vote moved, as the paper wrote them

    @property
    def message(self) -> str:
        more = self.direction > 0
        if self.terms:
            listed = ", ".join(self.terms)
            return f"We'll show {'more' if more else 'less'} on {listed}."
        return f"We'll show {'more' if more else 'fewer'} papers like this one."


def record_vote(settings: Settings, session: Session, paper_id: str, direction: int, *,
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
    selection = learning_selection(settings, session)
    learned = learned_terms(settings, session, sub, selection)
    learner = selection.ranker.learner
    moved: list[str] = []
    if learner is not None:
        mine = set(learner.paper_fids(paper_id))
        moved = [t.term for t in learned if t.fid in mine and (t.weight > 0) == (direction > 0)]
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
