"""The vote use cases: a reader's "more / less like this" on a paper (from the email's
links or ``newsletter feedback``), and on their preferences page undoing a vote,
removing one learned term, or resetting all learning.

The CLI and the web's feedback pages parse, call one function here, and present
the ``VoteOutcome`` (or the ``InputError``) in their own words. What votes teach is
read by ``service.ranking``; the vote itself is stored by ``store.votes``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from newsletter.config import RankingConfig
from newsletter.errors import InputError
from newsletter.ranking.view import VoteOutcome, learned_terms, moved_terms
from newsletter.service.ranking import RecentSelection, learning_selection
from newsletter.store import votes as store
from newsletter.store.db import session_scope
from newsletter.store.models import Entry, Subscriber

__all__ = ["Cast", "VoteOutcome", "cast_vote", "forget", "read_votes_csv", "record_vote",
           "record_votes", "reset", "undo", "vote_lesson", "without_lesson"]

log = logging.getLogger("newsletter.votes")
VOTES_HEADER = ("email", "paper_id", "vote")
_DIRECTIONS = {"up": 1, "+1": 1, "1": 1, "down": -1, "-1": -1}


@dataclass(frozen=True)
class Cast:
    """A vote just stored, with what saying its lesson needs (plain values: the web
    works the lesson out in a render process, after the vote's transaction ended)."""

    subscriber_id: int
    email: str
    keywords: str
    paper_id: str
    title: str
    direction: int
    replaced: int | None  # the vote's direction before, if any (the same: cast again)


def cast_vote(session: Session, paper_id: str, direction: int, *, by: str,
              email: str | None = None, subscriber_id: int | None = None) -> Cast:
    """Store a vote of the subscriber with ``email`` or ``subscriber_id`` (``by``:
    ``email`` for the email's links, ``cli``), in the caller's transaction."""
    sub = (session.get(Subscriber, subscriber_id) if subscriber_id is not None
           else store.subscriber_by_email(session, email or ""))
    if sub is None:
        raise InputError("this subscription no longer exists")
    vote, before = store.record(session, sub.id, paper_id, direction, by)
    entry = session.get(Entry, paper_id)
    return Cast(sub.id, sub.email, sub.keywords, paper_id,
                entry.title if entry else paper_id, vote.direction, before)


def vote_lesson(cfg: RankingConfig, session: Session, cast: Cast,
                recent: RecentSelection | None = None) -> VoteOutcome:
    """What a stored vote taught, in words: the learned terms it moved its way, read
    against the recent papers (``service.ranking.learning_selection``)."""
    selection = learning_selection(cfg, session, cast.subscriber_id, recent)
    learned = learned_terms(selection, cast.subscriber_id, cast.keywords)
    moved = moved_terms(selection, learned, cast.paper_id, cast.direction)
    return VoteOutcome(cast.email, cast.paper_id, cast.title, cast.direction, cast.replaced,
                       moved[:3])


def record_vote(cfg: RankingConfig, engine: Engine, paper_id: str, direction: int, *,
                by: str, email: str | None = None, subscriber_id: int | None = None,
                recent: RecentSelection | None = None) -> VoteOutcome:
    """``cast_vote`` in a write transaction of its own, and its ``vote_lesson`` read
    after it (``newsletter feedback``; the web does the same in two steps). The recent
    papers' corpus is built before, in a read: a write transaction (on SQLite, the
    database's write lock from its first statement) never waits on a ranking."""
    recent = recent or RecentSelection(cfg)
    with session_scope(engine, readonly=True) as s:
        recent.get(s)
    with session_scope(engine) as s:
        cast = cast_vote(s, paper_id, direction, by=by, email=email,
                         subscriber_id=subscriber_id)
    try:
        with session_scope(engine, readonly=True) as s:
            return vote_lesson(cfg, s, cast, recent)
    except Exception:  # the vote is stored: say so, without what it taught
        return without_lesson(cast)


def without_lesson(cast: Cast) -> VoteOutcome:
    """A stored vote's outcome when its lesson could not be read (logged): the vote
    counted, and answering it with an error would say it had not."""
    log.exception("the lesson of a vote could not be read")
    return VoteOutcome(cast.email, cast.paper_id, cast.title, cast.direction, cast.replaced,
                       [])


def undo(session: Session, subscriber_id: int, paper_id: str) -> bool:
    """Forget one vote: the ranking is as if it had never been cast."""
    return store.undo(session, subscriber_id, paper_id)


def forget(session: Session, subscriber_id: int, term: str, label: str) -> None:
    """Stop learning one term (as ``learned_terms`` keys it) for this subscriber."""
    store.mute(session, subscriber_id, term, label)


def reset(session: Session, subscriber_id: int) -> int:
    """Forget every vote and removed term; the votes removed."""
    return store.reset(session, subscriber_id)


def read_votes_csv(text: str, where: str) -> list[tuple[int, str, str, int]]:
    """``(line, email, paper_id, direction)`` per row of a votes file: a header
    ``email,paper_id,vote`` then one vote a line, ``vote`` being ``up`` or ``down``
    (or ``+1`` / ``-1``). A bad row is an ``InputError`` naming ``where`` and its line."""
    import csv

    reader = csv.reader(text.splitlines())
    rows = _rows_or_one_line(reader, where)
    header = [h.strip().lower() for h in next(rows, [])]
    if tuple(header) != VOTES_HEADER:
        raise InputError(f"{where} line 1: expected the header {','.join(VOTES_HEADER)}, "
                         f"got {','.join(header)[:200] or 'nothing'}")
    out = []
    for n, row in enumerate(rows, start=2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != 3:
            raise InputError(f"{where} line {n}: expected 3 fields (email,paper_id,vote), "
                             f"got {len(row)}")
        address, paper, vote = (cell.strip() for cell in row)
        direction = _DIRECTIONS.get(vote.lower())
        if direction is None:
            raise InputError(f"{where} line {n}: vote {vote!r}: expected up or down")
        out.append((n, address, paper, direction))
    return out


def _rows_or_one_line(reader: Any, where: str) -> Iterator[list[str]]:
    """``reader``'s rows; what the csv module refuses (a field over its size limit, a
    NUL) is an ``InputError`` naming ``where`` and the line, not a traceback."""
    import csv

    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise InputError(f"{where} line {reader.line_num}: {exc}") from None
        yield row


def record_votes(session: Session, votes: list[tuple[int, str, str, int]], *, by: str,
                 where: str) -> dict[str, int]:
    """Record many votes in the caller's transaction: all of them, or (an unknown
    address or paper, naming ``where`` and the line) none. The learned terms are
    not worked out per vote (that costs a ranking of the recent papers): the next
    ranking reads them. Returns counts: up, down, replaced (an earlier vote the other
    way), unchanged (the same vote already there: kept as it was, ``store.record``),
    subscribers."""
    people: dict[str, int] = {}
    counts = {"up": 0, "down": 0, "replaced": 0, "unchanged": 0, "subscribers": 0}
    for line, address, paper, direction in votes:
        try:
            if address not in people:
                people[address] = store.subscriber_by_email(session, address).id
            _, before = store.record(session, people[address], paper, direction, by)
        except InputError as exc:
            raise InputError(f"{where} line {line}: {exc}") from None
        counts["up" if direction > 0 else "down"] += 1
        counts["replaced"] += before is not None and before != direction
        counts["unchanged"] += before == direction
    counts["subscribers"] = len(people)
    return counts
