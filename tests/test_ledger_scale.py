"""The ledger's scale paths on SQLite and PostgreSQL: claims that resume after the last
claimed id still take back rows put back behind them, and recording many outcomes at
once (arrays on PostgreSQL) marks exactly the rows this process holds."""

from __future__ import annotations

import datetime as dt
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, func, select, update

from newsletter.config import Settings
from newsletter.delivery.ledger import DbLedger, Outcome
from newsletter.service.ingest import ingest
from newsletter.store.db import connection_scope, get_engine, session_scope
from newsletter.store.models import Delivery, DeliveryStatus, SentEntry
from newsletter.store.subscribers import add

from .conftest import ROOT
from .editions_support import plan_edition

# The scale paths, an edition planned per test (~1.3 s on SQLite): the slow tier.
pytestmark = pytest.mark.slow

DAY = dt.date(2025, 12, 26)


def planned(url: str, n: int) -> tuple[DbLedger, int]:
    settings = Settings().replace(database={"url": url})
    engine = get_engine(url)
    with session_scope(engine) as s:
        ingest(settings.sources, s, [str(ROOT / "newsletter" / "data" / "sample_papers.json")])
    with session_scope(engine) as s:
        for i in range(n):
            add(s, f"r{i}@example.org", keywords="attention, diffusion, graph neural networks")
    p = plan_edition(settings, engine, DAY)
    return DbLedger(engine, p.edition), p.pending


def test_claims_resume_and_still_find_rows_put_back(db_url: str) -> None:
    ledger, pending = planned(db_url, 30)
    assert pending == 30
    first = ledger.claim(10)
    second = ledger.claim(10)
    assert max(j.delivery_id or 0 for j in first) < min(j.delivery_id or 0 for j in second)
    # a row of the first batch goes back to pending (as a reclaim would do)
    back = first[0].delivery_id
    with session_scope(ledger.engine) as s:
        s.execute(update(Delivery).where(Delivery.id == back)
                  .values(status=DeliveryStatus.PENDING, lease_owner=""))
    rest = ledger.claim(100)
    assert len(rest) == 10 and back not in {j.delivery_id for j in rest}
    again = ledger.claim(100)  # nothing ahead: it looks from the start once more
    assert [j.delivery_id for j in again] == [back]
    assert ledger.claim(100) == []


def test_a_claim_reads_its_rows_without_sqlites_write_lock(tmp_path: Path) -> None:
    """SQLite's write lock is the whole database's: a claim holds it only to choose and
    lease its rows, and reads them (and their subscribers) after. While it read them
    under the lock, a claim made in a thread beside a rendering loop held it 30-100 ms,
    and another process's first claim waited that long before sending anything."""
    db = tmp_path / "subscribers.db"
    ledger, _ = planned(f"sqlite:///{db}", 12)
    free: list[bool] = []

    def probe(conn: Any, cursor: Any, statement: str, *_args: Any) -> None:
        if "JOIN subscribers" not in statement:
            return
        other = sqlite3.connect(db, timeout=0, isolation_level=None)
        try:  # another process wanting to write at this moment
            other.execute("BEGIN IMMEDIATE")
            other.execute("ROLLBACK")
            free.append(True)
        except sqlite3.OperationalError:  # "database is locked"
            free.append(False)
        finally:
            other.close()

    event.listen(ledger.engine, "before_cursor_execute", probe)
    try:
        jobs = ledger.claim(5)
    finally:
        event.remove(ledger.engine, "before_cursor_execute", probe)
    assert free == [True]
    assert len(jobs) == 5
    with session_scope(ledger.engine) as s:  # leased to this ledger, sent by nobody else
        leased = s.execute(select(Delivery.id, Delivery.lease_owner).where(
            Delivery.status == DeliveryStatus.SENDING)).all()
    assert sorted(leased) == sorted((j.delivery_id, ledger.owner) for j in jobs)


def test_a_claim_that_fails_after_leasing_gives_its_rows_back(db_url: str) -> None:
    """The lease is committed before the rows are read: when the read fails (a dropped
    connection, a lock never granted), the rows go back to the queue at once, as the
    rollback of one transaction left them, not after their lease runs out."""
    ledger, _ = planned(db_url, 6)

    def fail(conn: Any, cursor: Any, statement: str, *_args: Any) -> None:
        if "JOIN subscribers" in statement:
            raise RuntimeError("the connection dropped")

    event.listen(ledger.engine, "before_cursor_execute", fail)
    try:
        with pytest.raises(Exception, match="the connection dropped"):
            ledger.claim(4)
    finally:
        event.remove(ledger.engine, "before_cursor_execute", fail)
    with session_scope(ledger.engine, readonly=True) as s:
        rows = s.execute(select(Delivery.status, Delivery.lease_owner, Delivery.attempts,
                                Delivery.lease_expires)).all()
    assert sorted(set(rows)) == [(DeliveryStatus.PENDING, "", 0, None)]
    assert len(ledger.claim(10)) == 6


def test_the_ledgers_plain_transactions_commit_roll_back_and_lock_as_sessions_do(
        db_url: str) -> None:
    """``connection_scope`` (the ledger's claims and records, without an ORM session):
    what a block writes is committed when it ends, and nothing of it when it raises; on
    SQLite a writing block holds the write lock from its start and a reading one never
    takes it."""
    ledger, _ = planned(db_url, 3)
    ids = [j.delivery_id for j in ledger.claim(3)]

    def reason(i: int | None) -> str:
        with session_scope(ledger.engine, readonly=True) as s:
            return str(s.scalar(select(Delivery.reason).where(Delivery.id == i)))

    with connection_scope(ledger.engine) as c:
        c.execute(update(Delivery).where(Delivery.id == ids[0]).values(reason="kept"))
    with pytest.raises(RuntimeError), connection_scope(ledger.engine) as c:
        c.execute(update(Delivery).where(Delivery.id == ids[1]).values(reason="lost"))
        raise RuntimeError("a failure mid-transaction")
    assert (reason(ids[0]), reason(ids[1])) == ("kept", "")
    if not db_url.startswith("sqlite"):
        return
    path = ledger.engine.url.database
    assert path

    def can_write() -> bool:
        other = sqlite3.connect(path, timeout=0, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")
            other.execute("ROLLBACK")
            return True
        except sqlite3.OperationalError:
            return False
        finally:
            other.close()

    with connection_scope(ledger.engine, readonly=True) as c:
        c.execute(select(Delivery.id)).all()
        assert can_write()
    with connection_scope(ledger.engine) as c:
        assert not can_write()
    assert can_write()


def test_recording_many_outcomes_marks_only_rows_this_process_holds(db_url: str) -> None:
    ledger, _ = planned(db_url, 40)
    jobs = ledger.claim(40)
    stolen = jobs[0].delivery_id  # another process took this row back meanwhile
    with session_scope(ledger.engine) as s:
        s.execute(update(Delivery).where(Delivery.id == stolen)
                  .values(lease_owner="elsewhere:1:x"))
    ledger.record([Outcome(j, DeliveryStatus.SENT, message_id=f"<m{j.delivery_id}@x>")
                   for j in jobs])
    with session_scope(ledger.engine) as s:
        rows = {d.id: d for d in s.scalars(select(Delivery))}
        papers = s.scalar(select(func.count()).select_from(SentEntry))
    assert rows[stolen].status == DeliveryStatus.SENDING
    for j in jobs[1:]:
        d = rows[j.delivery_id]
        assert (d.status, d.message_id, d.lease_owner) == (
            DeliveryStatus.SENT, f"<m{j.delivery_id}@x>", "")
        assert d.sent_at is not None
    # the papers of every outcome are recorded (the stolen row's too: it was accepted)
    assert papers == sum(len(j.entry_ids) for j in jobs)
    ledger.record([Outcome(jobs[1], DeliveryStatus.SENT, message_id="<again@x>")])
    with session_scope(ledger.engine) as s:  # a repeat neither fails nor duplicates
        assert s.scalar(select(func.count()).select_from(SentEntry)) == papers
        assert s.get(Delivery, jobs[1].delivery_id).message_id == f"<m{jobs[1].delivery_id}@x>"


def test_loops_sharing_an_edition_split_its_end_and_claim_each_row_once(db_url: str) -> None:
    """Two ledgers claiming by turns with ``sharers=2`` take whole batches while a batch
    for each is left, then shrinking shares of the rest (never under an eighth of a
    batch), so neither is left with a whole batch when the other runs dry; every row is
    claimed once. Alone (``sharers=1``) a claim takes a whole batch to the end."""
    from newsletter.delivery.ledger import end_share

    ledger, pending = planned(db_url, 100)
    assert pending == 100
    other = DbLedger(ledger.engine, ledger.edition, sharers=2)
    ledger.sharers = 2
    sizes: list[int] = []
    seen: list[int] = []
    turn = [ledger, other]
    while batch := turn[len(sizes) % 2].claim(16):
        sizes.append(len(batch))
        seen += [j.delivery_id or 0 for j in batch]
    assert sorted(seen) == sorted(set(seen)) and len(seen) == 100
    # 100, 84, 68, 52 and 36 left: two batches or more, whole ones; then 20, 15, 11,
    # 8, 6, 4, 2 left: a quarter of them, at least 2
    assert sizes == [16, 16, 16, 16, 16, 5, 4, 3, 2, 2, 2, 2]
    assert [end_share(128, 1, left) for left in (1, 100, 1000)] == [128, 128, 128]
    assert [end_share(128, 2, left) for left in (256, 255, 100, 40, 1)] == [128, 64, 25, 16, 16]


def test_a_claim_beside_another_sharers_open_claim_still_gets_rows(pg_url: str) -> None:
    """PostgreSQL: while one process's claim holds its rows (FOR UPDATE SKIP LOCKED),
    another's claim at that moment still gets some near the end of the queue: the look
    ahead that sizes the share locks nothing, so only the rows taken are held."""
    import threading

    from newsletter.delivery import ledger as ledger_mod

    a, pending = planned(pg_url, 30)
    assert pending == 30
    a.sharers = 2
    b = DbLedger(a.engine, a.edition, sharers=2)
    beside: list[list[Any]] = []
    original = ledger_mod.DbLedger._pending_ids

    def hooked(self: DbLedger, s: Any, n: int, after: int, *, lock: bool = True) -> list[int]:
        ids = original(self, s, n, after, lock=lock)
        if self is a and lock and not beside:  # b claims while a's transaction is open
            t = threading.Thread(target=lambda: beside.append(b.claim(16)))
            t.start()
            t.join(60)
        return ids

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ledger_mod.DbLedger, "_pending_ids", hooked)
        first = a.claim(16)
    assert first and beside and beside[0], (len(first), beside)
    seen = [j.delivery_id for j in first + beside[0]]
    while more := (a.claim(16) or b.claim(16)):
        seen += [j.delivery_id for j in more]
    assert sorted(seen) == sorted(set(seen)) and len(seen) == 30
