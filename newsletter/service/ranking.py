"""Ranking over the stored papers and votes: what the next edition would pick for a
subscriber (``newsletter rank``, the preferences page) and what their votes teach
(recording a vote is ``service.votes``).

The reading is here; the ranking itself (``ranking/``) takes the rows it is given.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator, Sequence
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from newsletter.config import RankingConfig
from newsletter.errors import InputError
from newsletter.ranking.feedback import Learned
from newsletter.ranking.selection import Selection
from newsletter.ranking.view import learned_terms, rank_dicts
from newsletter.store import votes as votes_mod
from newsletter.store.models import Entry, Subscriber, utcnow
from newsletter.store.queries import (
    candidate_entries,
    edition_entries,
    newest_entries,
    sent_map,
    subscriber_rows,
)


def selection_of(cfg: RankingConfig, session: Session, rows: Sequence[Any], today: dt.date,
                 *, sent: bool = True, votes: bool = True) -> Selection:
    """``rows`` ranked with what each subscriber already had (unless ``sent`` is
    False) and everyone's votes (unless ``votes`` is False)."""
    return Selection.build(cfg, rows, today,
                           sent=sent_map(session, rows) if sent else None,
                           history=votes_mod.vote_history(session) if votes else None)


def papers_version(session: Session) -> tuple[Any, ...]:
    """What changes when the stored papers do or the day does (recency): the key under
    which a ranking of the recent papers is kept. Papers are never deleted, and a paper
    stored or changed gets a newer ``updated_at`` (its arrival's, at first): the
    newest one, read from its index, where counting them read every paper at each
    page and vote."""
    return (session.scalar(select(func.max(Entry.updated_at))), dt.date.today())


def recent_rows(cfg: RankingConfig, session: Session) -> list[Entry]:
    """The newest ``recent_papers`` papers that have arrived, oldest first (the order
    an edition's candidates come in)."""
    rows = newest_entries(session, cfg.recent_papers, until=utcnow())
    rows.reverse()
    return rows


class RecentSelection:
    """The recent papers (``recent_rows``) ranked with nobody's votes, kept while the
    papers and the day stay the same: what the preferences page's picks, a voter's
    learned terms and a vote's lesson are read from. Each of those adds one
    subscriber's votes to it (``Selection.for_subscriber``, cheap: the corpus is
    shared), so a long-lived process (the web's) builds the corpus once per ingest,
    not once per click. One run of a command makes one and uses it once."""

    def __init__(self, cfg: RankingConfig) -> None:
        self.cfg = cfg
        self._lock = threading.Lock()
        self._kept: tuple[tuple[Any, ...], Selection] | None = None
        self.built = 0  # corpora built so far (the web's tests read it)

    def get(self, session: Session) -> tuple[tuple[Any, ...], Selection]:
        """(papers version, the selection for it), built when the version changed."""
        version = papers_version(session)
        with self._lock:
            if self._kept is None or self._kept[0] != version:
                selection = Selection.build(self.cfg, recent_rows(self.cfg, session),
                                            dt.date.today())
                self._kept = (version, selection)
                self.built += 1
            return self._kept


def learning_selection(cfg: RankingConfig, session: Session, subscriber_id: int,
                       recent: RecentSelection | None = None) -> Selection:
    """The recent papers with this subscriber's votes counting: what their votes teach
    is shown against this. Only their own votes are read (everyone's were, for every
    click: millions of rows for one person's page)."""
    _, base = (recent or RecentSelection(cfg)).get(session)
    return base.for_subscriber(subscriber_id, votes_mod.vote_history(session, subscriber_id))


def subscriber_learned(cfg: RankingConfig, session: Session, sub: Subscriber,
                       recent: RecentSelection | None = None) -> list[Learned]:
    """What a subscriber's votes teach today, strongest first."""
    return learned_terms(learning_selection(cfg, session, sub.id, recent), sub.id,
                         sub.keywords)


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
