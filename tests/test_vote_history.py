"""Everyone's votes are read as columns (``store.votes.vote_history``) and turned into
the ranker's arrays without an object per vote (``ranking.selection.learn_votes``):
what they hold must be what the votes say, vote for vote, on both databases. The
reference here reads each vote as a row, as the code did before, and counts its age
from the row's own timestamp; the votes are drawn so the two can disagree (times
just before and after midnight, votes cast after "today", several votes a subscriber,
votes on today's papers and on older ones, removed learned terms)."""

from __future__ import annotations

import datetime as dt
from collections import Counter, defaultdict

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, select

from newsletter.ranking.selection import learn_votes
from newsletter.store import votes as votes_mod
from newsletter.store.db import get_engine, session_scope
from newsletter.store.models import Entry, LearnedMute, Subscriber, Vote
from newsletter.store.votes import vote_history

TODAY = dt.date(2026, 3, 10)
PAPERS = [f"2603.{i:05d}" for i in range(8)]
SUBSCRIBERS = 5

_vote = st.tuples(
    st.integers(1, SUBSCRIBERS),  # subscriber
    st.integers(0, len(PAPERS) - 1),  # paper
    st.sampled_from((1, -1)),
    # from 40 days before today to 2 days after, to the second: midnight's both sides
    st.integers(-40 * 86_400, 2 * 86_400))
_votes = st.lists(_vote, max_size=30, unique_by=lambda v: (v[0], v[1]))


def _fill(engine: object, votes: list[tuple[int, int, int, int]], mutes: list[int]) -> None:
    midnight = dt.datetime.combine(TODAY, dt.time())
    with session_scope(engine) as s:  # type: ignore[arg-type]
        for model in (LearnedMute, Vote, Subscriber, Entry):
            s.execute(delete(model))
        s.flush()
        for i, pid in enumerate(PAPERS):
            s.add(Entry(id=pid, title=f"Sparse attention number {i}", title_key=pid,
                        abstract=f"We study sparse attention {i} for graph transformers.",
                        keywords=["attention"], authors=[f"Author {i}"]))
        for n in range(1, SUBSCRIBERS + 1):
            s.add(Subscriber(id=n, email=f"reader{n}@example.org", keywords="attention"))
        s.flush()
        for sub, paper, direction, second in votes:
            s.add(Vote(subscriber_id=sub, entry_id=PAPERS[paper], direction=direction,
                       source="cli", created_at=midnight + dt.timedelta(seconds=second)))
        for sub in mutes:
            s.add(LearnedMute(subscriber_id=sub, term="spars attent", label="sparse attention"))


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(votes=_votes, mutes=st.lists(st.integers(1, SUBSCRIBERS), unique=True, max_size=2),
       today_papers=st.lists(st.integers(0, len(PAPERS) - 1), unique=True, max_size=5),
       one=st.one_of(st.none(), st.integers(1, SUBSCRIBERS)))
def test_the_columns_say_what_each_vote_says(db_url: str, votes: list[tuple[int, int, int, int]],
                                             mutes: list[int], today_papers: list[int],
                                             one: int | None) -> None:
    engine = get_engine(db_url)
    _fill(engine, votes, mutes)
    entry_ids = [PAPERS[i] for i in today_papers]
    with session_scope(engine, readonly=True) as s:
        rows = list(s.scalars(select(Vote) if one is None
                              else select(Vote).where(Vote.subscriber_id == one)))
        history = vote_history(s, one)
        learned, voted = learn_votes(history, entry_ids, TODAY)
    if not rows:
        assert learned is None and voted == {} and len(history) == 0
        return
    assert learned is not None
    # each vote: (subscriber, paper id, sign, age in whole days, none below zero)
    expected = Counter((v.subscriber_id, v.entry_id, v.direction,
                        max((TODAY - v.created_at.date()).days, 0)) for v in rows)
    got = Counter(zip(learned.keys.tolist(),
                      [learned.entries[p].id for p in learned.papers.tolist()],
                      learned.signs.tolist(), learned.ages.astype(int).tolist(), strict=True))
    assert got == expected
    assert learned.keys.tolist() == sorted(learned.keys.tolist())  # by subscriber
    # the voted papers by id, whatever order the votes came in (ties do not move)
    assert [e.id for e in learned.entries] == sorted({v.entry_id for v in rows})
    assert {e.id: e.title for e in learned.entries} == {
        pid: f"Sparse attention number {i}" for i, pid in enumerate(PAPERS)
        if pid in {v.entry_id for v in rows}}
    # today's papers each voter voted on: never shown to them again
    theirs: dict[int, list[int]] = defaultdict(list)
    for v in rows:
        if v.entry_id in entry_ids:
            theirs[v.subscriber_id].append(entry_ids.index(v.entry_id))
    assert {k: sorted(v) for k, v in voted.items()} == {k: sorted(v) for k, v in theirs.items()}
    wanted = {m for m in mutes if one is None or m == one}
    assert set(learned.mutes) == wanted
    assert all(m == frozenset({"spars attent"}) for m in learned.mutes.values())


def test_a_read_that_fails_midway_leaves_no_cursor_open(
        pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The votes are read through a server-side cursor on PostgreSQL: when turning a
    batch into columns fails, the cursor is closed then, not left open on the server
    (and garbage-collected with a ResourceWarning) until the transaction ends."""
    engine = get_engine(pg_url)
    _fill(engine, [(1, i, 1, 0) for i in range(5)], [])
    monkeypatch.setattr(votes_mod, "VOTE_BATCH", 2)
    real = votes_mod._day_column
    batches: list[tuple[object, ...]] = []

    def failing(days: tuple[object, ...]) -> object:
        batches.append(days)
        if len(batches) == 2:
            raise RuntimeError("a batch could not be read")
        return real(days)

    monkeypatch.setattr(votes_mod, "_day_column", failing)
    with session_scope(engine, readonly=True) as s:
        with pytest.raises(RuntimeError):
            vote_history(s)
        assert s.connection().exec_driver_sql("SELECT name FROM pg_cursors").all() == []
