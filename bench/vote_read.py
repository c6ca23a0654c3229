"""Reading everyone's votes when an edition opens: CPU and memory.

    python bench/vote_read.py [--subscribers 30000] [--papers 12000] [--votes 10]
                              [--url sqlite:///...|postgresql+psycopg://...] [--rounds 3]

Builds a database of ``--subscribers`` readers with ``--votes`` votes each over
``--papers`` papers (SQLite in a temporary folder unless ``--url``), then, alternating
in each round:

* ``columns``: ``store.votes.vote_history`` + ``ranking.selection.learn_votes``, what
  an edition does (votes read in batches into numpy columns);
* ``a row per vote``: each vote as a Python object with its timestamp, the papers as
  ORM rows, and the ranker's arrays made from Python lists (how it was done before);
* ``driver floor``: the database driver's own cursor fetching the same four columns
  and nothing else, no arrays made: the least any reading can cost.

CPU seconds (user + sys of this process) and, in a second run, the peak of Python
allocations.
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import sys
import tempfile
import time
import tracemalloc
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import insert, select  # noqa: E402

from bench.common import sample_papers  # noqa: E402
from newsletter.ranking.corpus import RankEntry  # noqa: E402
from newsletter.ranking.feedback import Votes  # noqa: E402
from newsletter.ranking.selection import learn_votes  # noqa: E402
from newsletter.store.db import get_engine, session_scope  # noqa: E402
from newsletter.store.models import Entry, Subscriber, Vote  # noqa: E402
from newsletter.store.votes import vote_history  # noqa: E402

TODAY = dt.date(2026, 12, 1)


def build(url: str, subscribers: int, papers: int, per: int) -> None:
    engine = get_engine(url)
    texts = sample_papers()
    rng = random.Random(1)
    now = dt.datetime.combine(TODAY, dt.time(6))
    with engine.begin() as c:
        c.execute(insert(Entry), [dict(
            id=f"p{i}", title=f"{texts[i % len(texts)]['title']} {i}",
            abstract=texts[i % len(texts)]["abstract"], authors=[], keywords=[],
            title_key=f"k{i}", arrived_at=now - dt.timedelta(minutes=i),
            updated_at=now - dt.timedelta(minutes=i)) for i in range(papers)])
        c.execute(insert(Subscriber), [dict(email=f"r{i}@example.org", keywords="attention")
                                       for i in range(subscribers)])
        first = c.scalar(select(Subscriber.id).order_by(Subscriber.id).limit(1)) or 1
        for start in range(0, subscribers, 10_000):
            c.execute(insert(Vote), [dict(
                subscriber_id=first + s, entry_id=f"p{e}", direction=rng.choice((1, -1)),
                source="email", created_at=now - dt.timedelta(seconds=rng.randint(0, 90 * 86400)))
                for s in range(start, min(start + 10_000, subscribers))
                for e in rng.sample(range(papers), per)])


def columns(session: Any, today_ids: list[str]) -> int:
    history = vote_history(session)
    learn_votes(history, today_ids, TODAY)
    return len(history)


def row_per_vote(session: Any, today_ids: list[str]) -> int:
    votes = list(session.execute(select(Vote.subscriber_id, Vote.entry_id, Vote.direction,
                                        Vote.created_at)))
    ids = sorted({v.entry_id for v in votes})
    rows: list[Entry] = []
    for start in range(0, len(ids), 900):
        rows.extend(session.scalars(select(Entry).where(Entry.id.in_(ids[start:start + 900]))))
    position = {eid: i for i, eid in enumerate(today_ids)}
    index = {e.id: i for i, e in enumerate(rows)}
    texts = [RankEntry.of(e) for e in rows]
    voted: dict[int, list[int]] = defaultdict(list)
    data = []
    for v in votes:
        if v.entry_id in position:
            voted[v.subscriber_id].append(position[v.entry_id])
        data.append((v.subscriber_id, index[v.entry_id], 1 if v.direction > 0 else -1,
                     max((TODAY - v.created_at.date()).days, 0)))
    Votes.of(data, texts)
    return len(votes)


def driver_floor(session: Any, today_ids: list[str]) -> int:
    cursor = session.connection().connection.dbapi_connection.cursor()
    cursor.execute("SELECT subscriber_id, entry_id, direction, created_at FROM votes")
    n = 0
    while batch := cursor.fetchmany(100_000):
        n += len(batch)
    cursor.close()
    return n


def measure(url: str, fn: Callable[[Any, list[str]], int]) -> tuple[float, float, int]:
    """CPU seconds of one run, then the peak of Python allocations in another (tracing
    allocations slows the run that allocates most: it is not timed)."""
    engine = get_engine(url)
    today_ids = [f"p{i}" for i in range(500)]
    with session_scope(engine, readonly=True) as s:
        cpu = time.process_time()
        n = fn(s, today_ids)
        cpu = time.process_time() - cpu
    with session_scope(engine, readonly=True) as s:
        tracemalloc.start()
        fn(s, today_ids)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return cpu, peak / 2**20, n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--subscribers", type=int, default=30_000)
    ap.add_argument("--papers", type=int, default=12_000)
    ap.add_argument("--votes", type=int, default=10, help="votes per subscriber")
    ap.add_argument("--url", help="an empty database to fill (default: a new SQLite file)")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = args.url or f"sqlite:///{tmp}/votes.db"
        t = time.perf_counter()
        build(url, args.subscribers, args.papers, args.votes)
        print(f"{args.subscribers * args.votes:,} votes of {args.subscribers:,} readers on "
              f"{args.papers:,} papers ({url.split(':')[0]}), built in "
              f"{time.perf_counter() - t:.0f} s; {args.rounds} alternated rounds")
        print("| round | method | CPU s | peak MB (Python allocations) | votes |")
        print("|---|---|---|---|---|")
        methods = [("columns (store.votes.vote_history + learn_votes)", columns),
                   ("a row per vote (before)", row_per_vote),
                   ("driver floor: the cursor alone", driver_floor)]
        for r in range(1, args.rounds + 1):
            for name, fn in methods:
                cpu, peak, n = measure(url, fn)
                print(f"| {r} | {name} | {cpu:.2f} | {peak:,.0f} | {n:,} |", flush=True)


if __name__ == "__main__":
    main()
