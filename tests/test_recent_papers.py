"""The preferences page and a vote's lesson read the recent papers (``[ranking]
recent_papers``), kept once per papers version, and one subscriber's votes: with
every stored paper and everyone's votes, each vote and each voter's page cost
seconds of ranking (about 6 s at 10,000 papers) once a newsletter had run for a
while."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import httpx
from sqlalchemy import select, update

from newsletter.app import App
from newsletter.ranking.selection import Selection
from newsletter.ranking.view import learned_terms
from newsletter.service.ranking import RecentSelection, recent_rows, subscriber_learned
from newsletter.service.votes import cast_vote, record_vote
from newsletter.store.db import session_scope
from newsletter.store.models import Entry, Subscriber, utcnow
from newsletter.store.votes import vote_history
from newsletter.web.picks import PicksCache

from .web_support import post_form, running_site

ADA = "ada@example.org"
ALAN = "alan@example.org"


def _make_newest(engine: Any, ids: list[str]) -> None:
    """These papers arrived a minute ago, every other one a day earlier."""
    now = utcnow()
    with session_scope(engine) as s:
        s.execute(update(Entry).values(arrived_at=now - dt.timedelta(days=1)))
        s.execute(update(Entry).where(Entry.id.in_(ids))
                  .values(arrived_at=now - dt.timedelta(minutes=1)))


def test_the_preferences_picks_come_from_the_recent_papers_only(world) -> None:  # type: ignore[no-untyped-def]
    settings, engine = world
    keywords = "diffusion models, language models, vision transformer, graph neural networks"
    everything = PicksCache(App(settings.replace(ranking={"recent_papers": 100_000}), engine),
                            limit=10)
    best = [p["id"] for p in everything._compute(keywords)]
    assert len(best) == 10
    # the recent five: the 6th-10th best of all, so the best of all are not among them
    recent = best[5:]
    _make_newest(engine, recent)
    cache = PicksCache(App(settings.replace(ranking={"recent_papers": 5}), engine), limit=10)
    picks = [p["id"] for p in cache._compute(keywords)]
    assert picks and set(picks) <= set(recent)
    with session_scope(engine, readonly=True) as s:
        rows = recent_rows(settings.replace(ranking={"recent_papers": 5}).ranking, s)
    assert sorted(e.id for e in rows) == sorted(recent)


def test_a_future_arrival_is_not_recent_yet(world) -> None:  # type: ignore[no-untyped-def]
    """A paper whose arrival is after now (a clock set back) is left out until then."""
    settings, engine = world
    with session_scope(engine) as s:
        first, second = s.scalars(select(Entry.id).order_by(Entry.id).limit(2)).all()
    _make_newest(engine, [first])
    with session_scope(engine) as s:
        s.execute(update(Entry).where(Entry.id == second)
                  .values(arrived_at=utcnow() + dt.timedelta(hours=1)))
    with session_scope(engine, readonly=True) as s:
        rows = recent_rows(settings.replace(ranking={"recent_papers": 1}).ranking, s)
    assert [e.id for e in rows] == [first]


def test_what_votes_teach_is_the_same_read_from_the_voters_own_votes(world) -> None:  # type: ignore[no-untyped-def]
    """A voter's learned terms and a vote's lesson read only their own votes; they are
    what a ranking with everyone's votes teaches them (two voters, overlapping votes,
    opposite directions on one paper)."""
    settings, engine = world
    cfg = settings.ranking
    with session_scope(engine) as s:
        papers = s.scalars(select(Entry.id).order_by(Entry.upvotes.desc()).limit(6)).all()
        for paper, direction in zip(papers[:4], (1, 1, -1, 1), strict=True):
            cast_vote(s, paper, direction, by="cli", email=ADA)
        for paper, direction in zip(papers[2:], (1, -1, 1, 1), strict=True):
            cast_vote(s, paper, direction, by="cli", email=ALAN)
    with session_scope(engine) as s:
        everyone = Selection.build(cfg, recent_rows(cfg, s), dt.date.today(),
                                   history=vote_history(s))
        recent = RecentSelection(cfg)
        for address in (ADA, ALAN):
            sub = s.scalar(select(Subscriber).where(Subscriber.email == address))
            assert sub is not None
            theirs = [(t.key, t.term, round(t.weight, 6))
                      for t in subscriber_learned(cfg, s, sub, recent)]
            expected = [(t.key, t.term, round(t.weight, 6))
                        for t in learned_terms(everyone, sub.id, sub.keywords)]
            assert theirs and theirs == expected
        assert recent.built == 1  # one corpus for both voters
    outcome = record_vote(cfg, engine, papers[5], 1, by="cli", email=ADA, recent=recent)
    assert outcome.terms and recent.built == 1  # a vote changes no paper


def test_the_web_ranks_the_recent_papers_once_for_every_vote_and_page(world) -> None:  # type: ignore[no-untyped-def]
    """Votes and voters' pages in a web process read one kept corpus; a new paper
    makes the next request build it again, once."""
    settings, engine = world
    with session_scope(engine) as s:
        papers = s.scalars(select(Entry.id).order_by(Entry.upvotes.desc()).limit(3)).all()
    with running_site(settings, engine) as site, httpx.Client(
            timeout=60, follow_redirects=True) as client:
        ada = site.sub_id(ADA)
        recent = site.starlette.state.web.picks.recent
        for paper in papers[:2]:
            voted = post_form(client, site.links.votes(ada, paper)["more"], {})
            assert voted.status_code == 200 and "show more on" in voted.text
            page = client.get(site.links.preferences(ada))
            assert page.status_code == 200
            assert re.search(r"more on <strong>[^<]+</strong>", page.text)  # learned terms
        assert recent.built == 1
        with session_scope(engine) as s:
            s.add(Entry(id="2599.00001", title="Diffusion models for state space models",
                        abstract="We study diffusion models and state space models.",
                        authors=["A. Author"], arrived_at=utcnow()))
        voted = post_form(client, site.links.votes(ada, papers[2])["less"], {})
        assert voted.status_code == 200 and re.search(r"show (less|fewer)", voted.text)
        assert recent.built == 2


def test_a_vote_never_holds_the_write_lock_while_the_papers_are_ranked(
        world, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """``newsletter feedback`` ranks the recent papers outside its write transaction: on
    SQLite a write session holds the database's write lock from its first statement,
    and a send's claims and records waited behind the ranking. Another writer probes
    the lock while the corpus is built."""
    import sqlite3

    from newsletter.ranking import selection as selection_mod

    settings, engine = world
    path = settings.database.url.removeprefix("sqlite:///")
    probes: list[str] = []
    real = selection_mod.Selection.build.__func__  # type: ignore[attr-defined]

    def build(cls: Any, *args: Any, **kwargs: Any) -> Any:
        other = sqlite3.connect(path, timeout=0)
        try:
            other.execute("BEGIN IMMEDIATE")
            other.rollback()
            probes.append("free")
        except sqlite3.OperationalError as exc:
            probes.append(str(exc))
        finally:
            other.close()
        return real(cls, *args, **kwargs)

    monkeypatch.setattr(selection_mod.Selection, "build", classmethod(build))
    with session_scope(engine) as s:
        paper = s.scalar(select(Entry.id).order_by(Entry.upvotes.desc()).limit(1))
    assert paper is not None
    record_vote(settings.ranking, engine, paper, 1, by="cli", email=ADA)
    assert probes == ["free"], probes


def test_a_vote_whose_lesson_cannot_be_read_is_still_thanked(world) -> None:  # type: ignore[no-untyped-def]
    """The vote is stored before its lesson is read (elsewhere: a render process); when
    that reading fails, the reader is thanked without the lesson, not shown an error
    for a vote that counted."""
    settings, engine = world
    with session_scope(engine) as s:
        paper = s.scalar(select(Entry.id).order_by(Entry.upvotes.desc()).limit(1))
    with running_site(settings, engine) as site, httpx.Client(
            timeout=60, follow_redirects=True) as client:

        def broken(cast: Any) -> Any:
            raise RuntimeError("the render process is gone")

        site.starlette.state.web.picks.lesson = broken
        voted = post_form(client, site.links.votes(site.sub_id(ADA), paper)["more"], {})
        assert voted.status_code == 200
        assert "We&#39;ll show more papers like this one." in voted.text or \
            "We'll show more papers like this one." in voted.text
    with session_scope(engine) as s:
        from newsletter.store.models import Vote

        assert s.scalar(select(Vote.entry_id)) == paper
