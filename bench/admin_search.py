"""The console's subscriber list on PostgreSQL with a million rows: keyset pages vs
OFFSET, and "contains" search with the trigram indexes (migration 0008) vs without.

    python bench/admin_search.py [--subscribers 1000000] [--pg postgresql://postgres@127.0.0.1:5432/test]

Makes its own database (dropped at the end), fills it server-side, and times the
console's own query function (``newsletter.web.admin.data.find_subscribers``), the
median of 5 runs each, against the other way of asking the same thing.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import select, text  # noqa: E402

from newsletter.store.db import get_engine, session_scope  # noqa: E402
from newsletter.store.models import Subscriber  # noqa: E402
from newsletter.web.admin.data import find_subscribers  # noqa: E402

KEYWORDS = ["gnn, diffusion", "state space models, mamba", "vision transformer, -medical",
            '"mixture of experts", llm', "reinforcement learning, robotics", "nerf, 3d"]


def timed(fn: Callable[[], Any], runs: int = 5) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(runs):
        t = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000, result


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--subscribers", type=int, default=1_000_000)
    ap.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/test")
    args = ap.parse_args()
    import psycopg

    n = args.subscribers
    name = f"nl_bench_admin_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(args.pg, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = args.pg.replace("postgresql://", "postgresql+psycopg://").rsplit("/", 1)[0] + "/" + name
    try:
        engine = get_engine(url)
        t = time.perf_counter()
        with engine.begin() as c:
            c.execute(text("DROP INDEX ix_subscribers_email_trgm; "
                           "DROP INDEX ix_subscribers_keywords_trgm"))
            kw = "(ARRAY[" + ",".join("'" + k.replace("'", "''") + "'" for k in KEYWORDS) + "])"
            c.execute(text(
                "INSERT INTO subscribers (email, name, keywords, tz, send_hour, frequency, "
                "status, consent_source, bounce_count, created_at, updated_at) "
                "SELECT 'user' || g || '@' || (ARRAY['lab','uni','corp'])[g % 3 + 1] "
                "|| '.example.org', '', "
                f"{kw}[g % {len(KEYWORDS)} + 1] || CASE WHEN g % 50000 = 7 THEN ', quantum "
                "annealing' ELSE '' END, 'UTC', 7, 'daily', "
                "CASE WHEN g % 10 = 0 THEN 'paused' ELSE 'active' END, '', 0, now(), now() "
                f"FROM generate_series(1, {n}) g"))
            c.execute(text("CREATE INDEX ix_subscribers_email_trgm ON subscribers "
                           "USING gin (email gin_trgm_ops)"))
            c.execute(text("CREATE INDEX ix_subscribers_keywords_trgm ON subscribers "
                           "USING gin (keywords gin_trgm_ops)"))
        with engine.begin() as c:
            c.execute(text("ANALYZE subscribers"))
        setup = time.perf_counter() - t
        rows: list[tuple[str, float, float, str]] = []
        with session_scope(engine, readonly=True) as s:
            last = s.scalar(select(Subscriber.id).order_by(Subscriber.id.desc()).limit(1))
            deep = int(last or 0) - 1000

            def offset_page(offset: int, status: str = "") -> list[Any]:
                q = select(Subscriber)
                if status:
                    q = q.where(Subscriber.status == status)
                return list(s.scalars(q.order_by(Subscriber.id).offset(offset).limit(51)))

            k_first, _ = timed(lambda: find_subscribers(s, size=50))
            o_first, _ = timed(lambda: offset_page(0))
            rows.append(("first page", k_first, o_first, "OFFSET 0"))
            k_deep, page = timed(lambda: find_subscribers(s, after=deep, size=50))
            assert len(page.rows) == 50
            o_deep, _ = timed(lambda: offset_page(n - 1000))
            rows.append((f"page at row {n - 1000:,}", k_deep, o_deep, "OFFSET"))
            k_st, _ = timed(lambda: find_subscribers(s, status="paused", after=deep - 5000,
                                                     size=50))
            o_st, _ = timed(lambda: offset_page(n // 10 - 600, "paused"))
            rows.append(("paused, near the end", k_st, o_st, "OFFSET"))

            def both(label: str, **kw: Any) -> None:
                fast, found = timed(lambda: find_subscribers(s, size=50, **kw))
                s.execute(text("SET enable_bitmapscan = off"))
                slow, again = timed(lambda: find_subscribers(s, size=50, **kw))
                s.execute(text("SET enable_bitmapscan = on"))
                assert [x.id for x in found.rows] == [x.id for x in again.rows]
                rows.append((f"{label} ({len(found.rows)} found)", fast, slow,
                             "sequential scan"))

            both("address contains 'user777777'", q="user777777")
            both("keywords contain 'quantum annealing'", q="quantum annealing", by="keyword")
        print(f"{n:,} subscribers on PostgreSQL (setup {setup:.0f} s)\n")
        print("| query | console (keyset, trigram) | other way | which |")
        print("|---|---|---|---|")
        for label, mine, other, which in rows:
            print(f"| {label} | {mine:.1f} ms | {other:.1f} ms | {which} |")
    finally:
        from newsletter.store.db import dispose_all

        dispose_all()
        with psycopg.connect(args.pg, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
