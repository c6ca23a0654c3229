"""Votes and removed learned terms: every change a subscriber's feedback makes.

A vote is one row per (subscriber, paper); voting the other way replaces it (the same
way again changes nothing), undoing deletes it, so undo restores the ranking exactly.
What votes teach is computed when ranking (``newsletter/ranking/feedback.py``), never
stored, so the written profile is never rewritten and a changed formula applies to old
votes too.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from newsletter.errors import InputError
from newsletter.store.models import Entry, Event, LearnedMute, Subscriber, Vote, utcnow
from newsletter.store.subscribers import normalize_email

UP, DOWN = 1, -1


def subscriber_by_email(session: Session, email: str) -> Subscriber:
    sub = session.scalar(select(Subscriber).where(Subscriber.email == normalize_email(email)))
    if sub is None:
        raise InputError(f"{email} is not a subscriber")
    return sub


def record(session: Session, subscriber_id: int, entry_id: str, direction: int,
           source: str) -> tuple[Vote, int | None]:
    """Store a vote (replacing an earlier one on the same paper); returns it and the
    direction the paper had before, if any.

    The same vote again (a link clicked twice, a file imported twice) is not a new
    vote: the row keeps its time and source and no event is recorded. Its time is
    its place in the preferences page's "Your votes" (newest first) and its age in the
    ranking (votes decay from when they were cast), and a repeat moved the vote to the
    top and made it count as new again. A vote that changes direction is a new one."""
    if direction not in (UP, DOWN):
        raise InputError("a vote is up (+1) or down (-1)")
    if session.get(Entry, entry_id) is None:
        raise InputError(f"no paper {entry_id!r} (`newsletter rank --json` prints picks[].id)")
    vote = session.scalar(select(Vote).where(Vote.subscriber_id == subscriber_id,
                                             Vote.entry_id == entry_id))
    before = None
    if vote is None:
        vote = Vote(subscriber_id=subscriber_id, entry_id=entry_id, direction=direction,
                    source=source, created_at=utcnow())
        session.add(vote)
    else:
        before = vote.direction
        if before == direction:
            return vote, before
        vote.direction, vote.source, vote.created_at = direction, source, utcnow()
    session.add(Event(subscriber_id=subscriber_id, kind="vote",
                      detail={"entry": entry_id, "direction": direction, "source": source}))
    session.flush()
    return vote, before


def undo(session: Session, subscriber_id: int, entry_id: str) -> bool:
    """Forget a vote; the ranking is as if it had never been cast."""
    result: Any = session.execute(delete(Vote).where(Vote.subscriber_id == subscriber_id,
                                                     Vote.entry_id == entry_id))
    done = result.rowcount
    if done:
        session.add(Event(subscriber_id=subscriber_id, kind="vote_undone",
                          detail={"entry": entry_id}))
    return bool(done)


def mute(session: Session, subscriber_id: int, term: str, label: str) -> None:
    """Stop learning ``term`` (stems) for this subscriber."""
    if not term.strip():
        raise InputError("no learned term given")
    if session.get(LearnedMute, (subscriber_id, term)) is None:
        session.add(LearnedMute(subscriber_id=subscriber_id, term=term, label=label[:200],
                                created_at=utcnow()))
        session.add(Event(subscriber_id=subscriber_id, kind="learned_removed",
                          detail={"term": term}))


def reset(session: Session, subscriber_id: int) -> int:
    """Forget every vote and removed term of a subscriber; returns the votes removed."""
    result: Any = session.execute(delete(Vote).where(Vote.subscriber_id == subscriber_id))
    n = result.rowcount
    session.execute(delete(LearnedMute).where(LearnedMute.subscriber_id == subscriber_id))
    session.add(Event(subscriber_id=subscriber_id, kind="learning_reset", detail={"votes": n}))
    return int(n or 0)


def votes_of(session: Session, subscriber_id: int) -> list[tuple[Vote, Entry]]:
    rows = session.execute(select(Vote, Entry).join(Entry, Entry.id == Vote.entry_id)
                           .where(Vote.subscriber_id == subscriber_id)
                           .order_by(Vote.created_at.desc(), Vote.id.desc()))
    return [(v, e) for v, e in rows]


def digest(session: Session, subscriber_id: int) -> str | None:
    """A digest of everything that changes what a subscriber's votes teach (each vote
    with its time, each removed term), or None when they have no vote: equal digests,
    equal learning (on the same papers and day)."""
    votes = session.execute(select(Vote.entry_id, Vote.direction, Vote.created_at)
                            .where(Vote.subscriber_id == subscriber_id)
                            .order_by(Vote.entry_id)).all()
    if not votes:
        return None
    mutes = session.scalars(select(LearnedMute.term)
                            .where(LearnedMute.subscriber_id == subscriber_id)
                            .order_by(LearnedMute.term)).all()
    text = repr(([(e, d, at.isoformat()) for e, d, at in votes], list(mutes)))
    return hashlib.sha256(text.encode()).hexdigest()


VOTE_BATCH = 100_000  # votes read and turned into columns at a time


@dataclass(frozen=True)
class VoteHistory:
    """Every vote that counts (everyone's, or one subscriber's) as columns, the papers
    voted on (which need not be among the papers being ranked), and per subscriber the
    learned terms they removed: what ``ranking.selection`` learns from. Empty when
    nobody voted (then the papers and removed terms are not read at all).

    Columns, not a row object per vote: an edition reads everyone's votes, ten million
    for a million readers with ten each, and a Python object (and a ``datetime``) per
    vote cost about three times the reading and a gigabyte and a half of memory.
    Votes keep the order the database gave them, which ``learn_votes`` keeps too."""

    subscribers: np.ndarray  # int64: each vote's subscriber id
    papers_of: np.ndarray  # int32: each vote's paper, an index into ``papers``
    directions: np.ndarray  # int8: +1 more like this, -1 less
    days: np.ndarray  # datetime64[D]: the day (UTC) each vote was cast
    papers: list[Any]  # the voted papers: id, title, abstract, keywords, authors, ...
    mutes: dict[int, frozenset[str]]

    def __len__(self) -> int:
        return len(self.subscribers)


def _empty_history() -> VoteHistory:
    return VoteHistory(np.zeros(0, np.int64), np.zeros(0, np.int32), np.zeros(0, np.int8),
                       np.zeros(0, "datetime64[D]"), [], {})


# What ranking reads of a voted paper (``RankEntry.of``): its columns, not the whole row.
_PAPER_COLUMNS = (Entry.id, Entry.title, Entry.abstract, Entry.keywords, Entry.authors,
                  Entry.upvotes, Entry.published)


_EPOCH = dt.date(1970, 1, 1).toordinal()


def _day_column(days: tuple[Any, ...]) -> np.ndarray:
    """The votes' days as ``datetime64[D]``: SQLite's ``date()`` gives ISO strings,
    which numpy parses quickly; PostgreSQL's gives ``date`` objects, which numpy
    converts one by one at 5 µs each (counted from their ordinals instead)."""
    if days and isinstance(days[0], dt.date):
        return (np.fromiter((d.toordinal() for d in days), np.int64, len(days))
                - _EPOCH).astype("datetime64[D]")
    return np.array(days, dtype="datetime64[D]")


def vote_history(session: Session, subscriber_id: int | None = None) -> VoteHistory:
    """The votes of everyone (or of ``subscriber_id``) with what they need, read in
    batches (a server-side cursor where the database has one) into columns. The day
    of each vote comes from the database (``date()``, in SQLite and PostgreSQL
    alike): its age is counted in days, and parsing a timestamp per vote was most of
    the reading."""
    query = select(Vote.subscriber_id, Vote.entry_id, Vote.direction,
                   func.date(Vote.created_at))
    mutes_query = select(LearnedMute.subscriber_id, LearnedMute.term)
    if subscriber_id is not None:
        query = query.where(Vote.subscriber_id == subscriber_id)
        mutes_query = mutes_query.where(LearnedMute.subscriber_id == subscriber_id)
    code: dict[str, int] = {}  # paper id → its index among the voted papers
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
    # the session's connection, not the session: plain rows, without the ORM's
    # per-row loading, which doubled the time
    connection = session.connection()
    # closed however the loop ends: a server-side cursor left open by an error stays
    # on the server until the transaction ends
    with connection.execute(query.execution_options(yield_per=VOTE_BATCH)) as result:
        for batch in result.partitions():
            subs, entry_ids, directions, days = zip(*batch, strict=True)
            n = len(subs)
            parts.append((
                np.fromiter(subs, np.int64, n),
                np.fromiter((code.setdefault(e, len(code)) for e in entry_ids), np.int32, n),
                np.fromiter(directions, np.int8, n),
                _day_column(days)))
    if not parts:
        return _empty_history()
    ids = list(code)
    found: dict[str, Any] = {}
    for start in range(0, len(ids), 900):
        for row in connection.execute(select(*_PAPER_COLUMNS)
                                   .where(Entry.id.in_(ids[start : start + 900]))):
            found[row.id] = row
    subs_a, papers_a, directions_a, days_a = (np.concatenate(c) for c in zip(*parts,
                                                                             strict=True))
    # The voted papers numbered by id, as the rows were read before (ties between
    # them, such as which liked paper a fill names, do not depend on the votes'
    # order); a paper gone since (its votes go with it) takes its votes along.
    kept = sorted(i for i in ids if i in found)
    rank = {pid: n for n, pid in enumerate(kept)}
    papers_a = np.array([rank.get(pid, -1) for pid in ids], np.int32)[papers_a]
    if len(kept) < len(ids):
        rows = papers_a >= 0
        subs_a, papers_a = subs_a[rows], papers_a[rows]
        directions_a, days_a = directions_a[rows], days_a[rows]
        if not len(subs_a):
            return _empty_history()
    ids = kept
    mutes: dict[int, set[str]] = defaultdict(set)
    for sub_id, term in session.execute(mutes_query):
        mutes[sub_id].add(term)
    return VoteHistory(subs_a, papers_a, directions_a, days_a, [found[i] for i in ids],
                       {k: frozenset(v) for k, v in mutes.items()})
