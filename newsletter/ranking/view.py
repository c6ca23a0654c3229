"""Ranked picks as plain data: what ``newsletter rank --json``, the preview and the
web preferences page show, built by one function so they never disagree."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

from sqlalchemy.orm import Session

from newsletter.config import Settings
from newsletter.errors import InputError
from newsletter.ranking.feedback import Learned
from newsletter.ranking.profile import parse_profile
from newsletter.ranking.selection import Selection
from newsletter.store.models import Subscriber, utcnow
from newsletter.store.queries import candidate_entries, edition_entries, subscriber_rows


def pick_dicts(selection: Selection, chunk: Any, row: int, keywords: str) -> list[
        dict[str, Any]]:
    out = []
    section = "trending" if chunk.trending[row] else "matches"
    picks = [int(i) for i in chunk.picks[row] if i >= 0]
    explanations = selection.ranker.explain_many(keywords, picks, key=chunk.keys[row])
    for rank, (idx, ex) in enumerate(zip(picks, explanations, strict=True), 1):
        e = selection.entries[idx]
        out.append({
            "rank": rank,
            "id": e.id,
            "title": e.title,
            "score": round(float(chunk.scores[row][rank - 1]), 4),
            "parts": {"relevance": ex.relevance, "popularity": ex.popularity,
                      "recency": ex.recency},
            "matched": [t for t, _ in ex.matched],
            "also_like": [{"term": h.term, "value": h.value, "liked": h.liked,
                           "disliked": h.disliked} for h in ex.learned],
            "why": ex.why,
            "section": section,
        })
    return out


def learning_selection(settings: Settings, session: Session) -> Selection:
    """Every stored paper, as the preferences page ranks them: what votes teach is
    shown against this."""
    now = utcnow()
    return Selection.build(settings, session, candidate_entries(session, since=None, until=now),
                           dt.date.today(), ignore_sent=True)


def learned_terms(settings: Settings, session: Session, sub: Subscriber,
                  selection: Selection | None = None) -> list[Learned]:
    """What a subscriber's votes teach today, strongest first."""
    selection = selection or learning_selection(settings, session)
    learner = selection.ranker.learner
    if learner is None:
        return []
    written = {f for f, _, _, _ in selection.ranker._terms_of(sub.keywords)}
    return learner.learned(sub.id, written)


def rank_subscribers(settings: Settings, session: Session, *, email: str | None = None,
                     limit: int | None = None, all_entries: bool = False,
                     today: dt.date | None = None) -> Iterator[dict[str, Any]]:
    """Per subscriber: the picks the next edition would make (or over every entry).
    A named subscriber is ranked whatever their status (the preferences page, `rank`)."""
    now = utcnow()
    rows = (candidate_entries(session, since=None, until=now) if all_entries
            else edition_entries(session, "", now))
    selection = Selection.build(settings, session, rows, today or dt.date.today(),
                                ignore_sent=all_entries)
    subs = list(subscriber_rows(session, email=email)) if email else None
    if email and not subs:
        raise InputError(f"{email} is not a subscriber")
    source = subs if subs is not None else subscriber_rows(session)
    people: dict[int, tuple[str, str]] = {}

    def keyed() -> Iterator[tuple[int, str]]:
        for sub_id, address, _name, keywords in source:
            people[sub_id] = (address, keywords)
            yield sub_id, keywords

    for chunk in selection.ranker.rank(keyed(), sent=selection.sent, k=limit, chunk_size=2000):
        for row, key in enumerate(chunk.keys):
            address, keywords = people.pop(key)
            yield {"subscriber": address, "profile": str(parse_profile(keywords)),
                   "candidates": len(selection.entries),
                   "picks": pick_dicts(selection, chunk, row, keywords)}
