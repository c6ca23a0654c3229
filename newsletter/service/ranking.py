"""Ranking over the stored papers and votes: what the next edition would pick for a
subscriber (``newsletter rank``, the preferences page) and what their votes teach
(recording a vote is ``service.votes``).

The reading is here; the ranking itself (``ranking/``) takes the rows it is given.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence
from typing import Any

from sqlalchemy.orm import Session

from newsletter.config import RankingConfig
from newsletter.errors import InputError
from newsletter.ranking.feedback import Learned
from newsletter.ranking.selection import Selection
from newsletter.ranking.view import learned_terms, rank_dicts
from newsletter.store import votes as votes_mod
from newsletter.store.models import Subscriber, utcnow
from newsletter.store.queries import (
    candidate_entries,
    edition_entries,
    sent_map,
    subscriber_rows,
)


def selection_of(cfg: RankingConfig, session: Session, rows: Sequence[Any], today: dt.date,
                 *, sent: bool = True, votes: bool = True) -> Selection:
    """``rows`` ranked with what each subscriber already had (unless ``sent`` is
    False) and everyone's votes (unless ``votes`` is False)."""
    return Selection.build(cfg, rows, today,
                           sent=sent_map(session, [e.id for e in rows]) if sent else None,
                           history=votes_mod.vote_history(session) if votes else None)


def learning_selection(cfg: RankingConfig, session: Session) -> Selection:
    """Every stored paper, as the preferences page ranks them: what votes teach is
    shown against this."""
    rows = candidate_entries(session, since=None, until=utcnow())
    return selection_of(cfg, session, rows, dt.date.today(), sent=False)


def subscriber_learned(cfg: RankingConfig, session: Session, sub: Subscriber,
                       selection: Selection | None = None) -> list[Learned]:
    """What a subscriber's votes teach today, strongest first."""
    selection = selection or learning_selection(cfg, session)
    return learned_terms(selection, sub.id, sub.keywords)


def rank_subscribers(cfg: RankingConfig, session: Session, *, email: str | None = None,
                     limit: int | None = None, all_entries: bool = False,
                     today: dt.date | None = None) -> Iterator[dict[str, Any]]:
    """Per subscriber: the picks the next edition would make (or over every entry).
    A named subscriber is ranked whatever their status (the preferences page, `rank`)."""
    now = utcnow()
    rows = (candidate_entries(session, since=None, until=now) if all_entries
            else edition_entries(session, "", now))
    selection = selection_of(cfg, session, rows, today or dt.date.today(),
                             sent=not all_entries)
    subs = list(subscriber_rows(session, email=email)) if email else None
    if email and not subs:
        raise InputError(f"{email} is not a subscriber")
    yield from rank_dicts(selection, subs if subs is not None else subscriber_rows(session),
                          limit)
