"""Ranked picks as plain data: what ``newsletter rank --json``, the preview and the
web preferences page show, built by one function so they never disagree."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

from sqlalchemy.orm import Session

from .config import Settings
from .errors import InputError
from .models import utcnow
from .selection import Selection, active_subscribers, candidate_entries, previous_cutoff


def pick_dicts(selection: Selection, chunk: Any, row: int) -> list[dict[str, Any]]:
    out = []
    section = "trending" if chunk.trending[row] else "matches"
    for rank, idx in enumerate(chunk.picks[row], 1):
        if idx < 0:
            break
        e = selection.entries[idx]
        ex = selection.ranker.explain(chunk.profiles[row], int(idx))
        out.append({
            "rank": rank,
            "id": e.id,
            "title": e.title,
            "score": round(float(chunk.scores[row][rank - 1]), 4),
            "parts": {"relevance": ex.relevance, "popularity": ex.popularity,
                      "recency": ex.recency},
            "matched": [t for t, _ in ex.matched],
            "section": section,
        })
    return out


def rank_subscribers(settings: Settings, session: Session, *, email: str | None = None,
                     limit: int | None = None, all_entries: bool = False,
                     today: dt.date | None = None, any_status: bool = False,
                     ) -> Iterator[dict[str, Any]]:
    """Per subscriber: the picks the next edition would make (or over every entry)."""
    since = None if all_entries else previous_cutoff(session)
    rows = candidate_entries(session, since=since, until=utcnow())
    selection = Selection.build(settings, session, rows, today or dt.date.today(),
                                ignore_sent=all_entries)
    subs = list(active_subscribers(session, email, any_status=any_status)) if email else None
    if email and not subs:
        raise InputError(f"{email} is not a subscriber")
    source = subs if subs is not None else active_subscribers(session)
    emails: dict[int, str] = {}

    def keyed() -> Iterator[tuple[int, str]]:
        for sub_id, address, keywords in source:
            emails[sub_id] = address
            yield sub_id, keywords

    for chunk in selection.ranker.rank(keyed(), sent=selection.sent, k=limit,
                                       keep_profiles=True, chunk_size=2000):
        for row, key in enumerate(chunk.keys):
            yield {"subscriber": emails.pop(key), "profile": str(chunk.profiles[row]),
                   "candidates": len(selection.entries),
                   "picks": pick_dicts(selection, chunk, row)}
