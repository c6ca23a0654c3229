"""The ledger's scale paths on SQLite and PostgreSQL: claims that resume after the last
claimed id still take back rows put back behind them, and recording many outcomes at
once (arrays on PostgreSQL) marks exactly the rows this process holds."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import func, select, update

from newsletter.config import Settings
from newsletter.delivery.ledger import DbLedger, Outcome
from newsletter.service.ingest import ingest
from newsletter.store.db import get_engine, session_scope
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
