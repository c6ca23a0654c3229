"""A vote cast again as it stands (a "more like this" link clicked twice, a votes file
imported twice) is not a new vote: it keeps its place in "Your votes" and its time,
which is also its age in the ranking (votes decay from when they were cast). A vote
that changes direction is a new vote."""

from __future__ import annotations

import datetime as dt
import html
import re
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, func, select

from newsletter.service.votes import record_votes
from newsletter.store import votes as votes_mod
from newsletter.store.db import get_engine, session_scope
from newsletter.store.models import Entry, Event, LearnedMute, Subscriber, Vote

from .web_support import post_form, running_site

PAPERS = [f"2603.{i:05d}" for i in range(4)]
START = dt.datetime(2026, 3, 10, 9, 0)

# one reader's clicks, one a minute: (paper, +1 / -1), or (paper, 0) for undo
_clicks = st.lists(st.tuples(st.integers(0, len(PAPERS) - 1), st.sampled_from((1, -1, 0))),
                   max_size=20)


def _fresh(engine: Any) -> int:
    with session_scope(engine) as s:
        for model in (LearnedMute, Event, Vote, Subscriber, Entry):
            s.execute(delete(model))
        s.flush()
        for i, pid in enumerate(PAPERS):
            s.add(Entry(id=pid, title=f"Paper {i}", title_key=pid, abstract="", keywords=[],
                        authors=[]))
        sub = Subscriber(email="reader@example.org", keywords="attention")
        s.add(sub)
        s.flush()
        return sub.id


@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(clicks=_clicks)
def test_a_repeated_vote_keeps_its_place_and_time(
        db_url: str, monkeypatch: pytest.MonkeyPatch, clicks: list[tuple[int, int]]) -> None:
    """Whatever the clicks: each vote's time is when it was first cast as it stands
    (its first click, or the click that changed its direction); "Your votes" lists the
    newest such first; only those clicks are recorded as votes in the reader's history."""
    engine = get_engine(db_url)
    sub_id = _fresh(engine)
    now = [START]
    monkeypatch.setattr(votes_mod, "utcnow", lambda: now[0])
    expected: dict[str, tuple[int, dt.datetime]] = {}  # paper → (direction, cast at)
    changes = 0
    for n, (paper, direction) in enumerate(clicks):
        now[0] = START + dt.timedelta(minutes=n)
        pid = PAPERS[paper]
        with session_scope(engine) as s:
            if direction == 0:
                votes_mod.undo(s, sub_id, pid)
                expected.pop(pid, None)
                continue
            vote, before = votes_mod.record(s, sub_id, pid, direction, "email")
            assert vote.direction == direction
            assert before == (expected[pid][0] if pid in expected else None)
        if expected.get(pid, (None,))[0] != direction:
            expected[pid] = (direction, now[0])
            changes += 1
    with session_scope(engine, readonly=True) as s:
        listed = [(e.id, v.direction, v.created_at) for v, e in votes_mod.votes_of(s, sub_id)]
        recorded = s.scalar(select(func.count()).select_from(Event).where(
            Event.subscriber_id == sub_id, Event.kind == "vote"))
    assert listed == sorted(((pid, d, at) for pid, (d, at) in expected.items()),
                            key=lambda x: x[2], reverse=True)
    assert recorded == changes


def test_a_votes_file_counts_a_vote_already_there_as_neither_new_nor_replaced(
        sqlite_url: str) -> None:
    engine = get_engine(sqlite_url)
    _fresh(engine)
    rows = [(2, "reader@example.org", PAPERS[0], 1), (3, "reader@example.org", PAPERS[1], -1)]
    with session_scope(engine) as s:
        first = record_votes(s, rows, by="cli", where="votes.csv")
        cast = {v.entry_id: v.created_at for v in s.scalars(select(Vote))}
    with session_scope(engine) as s:
        again = record_votes(s, [*rows, (4, "reader@example.org", PAPERS[1], 1)],
                             by="cli", where="votes.csv")
        after = {v.entry_id: (v.direction, v.created_at) for v in s.scalars(select(Vote))}
    assert first == {"up": 1, "down": 1, "replaced": 0, "unchanged": 0, "subscribers": 1}
    assert again == {"up": 2, "down": 1, "replaced": 1, "unchanged": 2, "subscribers": 1}
    assert after[PAPERS[0]] == (1, cast[PAPERS[0]])
    assert after[PAPERS[1]][0] == 1 and after[PAPERS[1]][1] > cast[PAPERS[1]]


def test_clicking_a_vote_link_again_keeps_your_votes_in_order(world) -> None:  # type: ignore[no-untyped-def]
    """Through the real pages: "more like this" on A, then on B, then A's button again
    leaves "Your votes" as B, A (A's vote is the same vote); "less like this" on A is a
    new vote and comes first."""
    settings_, engine = world
    with session_scope(engine) as s:
        papers = [e.id for e in s.scalars(select(Entry).order_by(Entry.id).limit(2))]
    with running_site(settings_, engine) as site, httpx.Client(
            timeout=60, follow_redirects=True) as client:
        ada = site.sub_id("ada@example.org")

        def vote(paper: str, which: str) -> None:
            page = post_form(client, site.links.votes(ada, paper)[which], {})
            assert page.status_code == 200 and "Thank you" in page.text, page.text

        def your_votes() -> list[tuple[str, str]]:
            page = client.get(site.links.preferences(ada)).text
            listed = page.split("<h3>Your votes</h3>", 1)[1]
            return [(html.unescape(p), d) for p, d in re.findall(
                r'name="paper" value="([^"]+)">\s*(more|less) like', listed)]

        a, b = papers
        vote(a, "more")
        vote(b, "more")
        assert your_votes() == [(b, "more"), (a, "more")]
        vote(a, "more")
        assert your_votes() == [(b, "more"), (a, "more")]
        vote(a, "less")
        assert your_votes() == [(a, "less"), (b, "more")]
