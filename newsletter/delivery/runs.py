"""The operator's runs: ``send`` (plan + deliver through the ledger) and ``preview``
(the same pipeline with a memory ledger and a file transport; writes nothing to
the database)."""

from __future__ import annotations

import datetime as dt
import statistics
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, func, inspect, select
from sqlalchemy.orm import Session

from newsletter.config import Settings
from newsletter.delivery.deliver import DeliverReport, deliver, run_async
from newsletter.delivery.edition import EditionContext, get_or_create_edition, open_edition
from newsletter.delivery.ledger import DbLedger, MemoryLedger, Outcome
from newsletter.delivery.plan import PlanReport, plan_jobs, slot_filter
from newsletter.errors import InputError
from newsletter.render.mime import Message
from newsletter.store.db import MIGRATIONS, READONLY, session_scope
from newsletter.store.models import Delivery, DeliveryStatus, Edition, Subscriber, utcnow
from newsletter.store.queries import subscriber_rows
from newsletter.transports import Transport, make_transport
from newsletter.transports.outbox import SAFE_NAME, OutboxTransport


@dataclass
class SendSummary:
    edition: Edition
    candidates: int
    plan: PlanReport
    reclaimed: int
    report: DeliverReport


@dataclass
class Planned:
    edition: Edition
    ledger: DbLedger
    context: EditionContext
    plan: PlanReport
    reclaimed: int
    candidates: int
    pending: int


def plan_edition(settings: Settings, engine: Engine, day: dt.date, slot: str = "") -> Planned:
    """Create (or find) the edition, take back unfinished rows, and plan everyone not yet
    planned. Safe to repeat: a second call plans only who is new."""
    if slot and not (slot.isdigit() and 0 <= int(slot) <= 23):
        raise InputError(f"--slot: expected a UTC hour 00-23, got {slot!r}")
    slot = f"{int(slot):02d}" if slot else ""
    edition = get_or_create_edition(engine, day, slot)
    ledger = DbLedger(engine, edition)
    reclaimed = ledger.reclaim() + ledger.retry_failed()
    with session_scope(engine, readonly=True) as s:
        slot_pairs = None
        if slot:
            zones = list(s.scalars(select(Subscriber.tz).distinct()))
            slot_pairs = slot_filter(day, int(slot), zones)
        ctx = open_edition(settings, s, edition)
        rows = ctx.rows
        plan = ledger.plan(plan_jobs(ctx.selection, subscriber_rows(
            s, unsent_day=day, slot=slot_pairs), settings.ranking.max_papers))
    with session_scope(engine, readonly=True) as s:
        pending = s.scalar(select(func.count()).select_from(Delivery).where(
            Delivery.edition_id == edition.id, Delivery.status == DeliveryStatus.PENDING)) or 0
    return Planned(edition, ledger, ctx, plan, reclaimed, len(rows), int(pending))


def run_send(settings: Settings, engine: Engine, day: dt.date, *, slot: str = "",
             transport: Transport | None = None,
             on_progress: Callable[[Outcome], None] | None = None,
             on_planned: Callable[[int], None] | None = None) -> SendSummary:
    p = plan_edition(settings, engine, day, slot)
    if on_planned:
        on_planned(p.pending)
    report = run_async(deliver(settings, p.ledger, p.context,
                               transport or make_transport(settings), on_progress=on_progress))
    return SendSummary(p.edition, p.candidates, p.plan, p.reclaimed, report)


class PreviewTransport(OutboxTransport):
    """Files named after the recipient, so an operator can find one person's email."""

    name = "preview"

    def file_for(self, message: Message) -> Path:
        return self.path / f"{SAFE_NAME.sub('_', message.to)}.eml"


@dataclass
class PreviewReport:
    out: Path
    candidates: int
    outcomes: list[Outcome] = field(default_factory=list)
    empty_profiles: int = 0
    screenshots: list[Path] = field(default_factory=list)
    context: EditionContext | None = None  # what ranked and rendered it (the "why")

    def summary(self) -> dict[str, Any]:
        rendered = [o.rendered for o in self.outcomes if o.rendered is not None]
        papers = [r.papers for r in rendered]
        sizes = [len(r.html.encode()) for r in rendered]
        terms: Counter[str] = Counter(t for r in rendered for t in r.matched_terms)

        def spread(values: list[int]) -> dict[str, float]:
            if not values:
                return {"min": 0, "median": 0, "max": 0}
            return {"min": min(values), "median": statistics.median(values),
                    "max": max(values)}

        return {
            "subscribers": len(self.outcomes),
            "candidates": self.candidates,
            "papers_per_email": spread(papers),
            "no_match_trending_only": sum(1 for r in rendered if r.trending and not r.papers),
            "nothing_to_send": sum(1 for o in self.outcomes if o.status == DeliveryStatus.SKIPPED),
            "empty_profiles": self.empty_profiles,
            "html_bytes": spread(sizes),
            "over_gmail_clip": sum(1 for s in sizes if s > 102 * 1024),
            "top_matched_terms": terms.most_common(10),
            "failed": [o.error for o in self.outcomes if o.status == DeliveryStatus.FAILED][:10],
        }


def require_database(engine: Engine) -> None:
    """Preview reads; it never creates or migrates a database (nor makes a signing key)."""
    with engine.connect() as conn:
        if not inspect(conn).has_table("alembic_version"):
            raise InputError("no database yet: ingest papers and add subscribers first")
        current = set(MigrationContext.configure(conn).get_current_heads())
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    if current != set(ScriptDirectory.from_config(cfg).get_heads()):
        raise InputError("the database schema is old: run `newsletter db upgrade` first")


def run_preview(settings: Settings, engine: Engine, day: dt.date, out: Path, *,
                email: str | None = None, limit: int | None = None,
                recipients: list[tuple[int, str, str, str]] | None = None,
                on_progress: Callable[[Outcome], None] | None = None) -> PreviewReport:
    """``recipients`` (id, email, name, keywords) previews people who need not be
    subscribers: the console's "type any keywords"."""
    require_database(engine)
    with engine.connect().execution_options(**{READONLY: True}) as conn, \
            Session(bind=conn) as s:  # read-only; nothing committed
        existing = s.scalar(select(Edition).where(Edition.day == day, Edition.slot == ""))
        edition = existing or Edition(id=0, day=day, slot="", cutoff=utcnow())
        ctx = open_edition(settings, s, edition)
        rows = ctx.rows
        subs = recipients if recipients is not None else list(subscriber_rows(s, email=email))
        if email and not subs:
            raise InputError(f"{email} is not a subscriber")
        if limit:
            subs = subs[:limit]
        empty = sum(1 for _, _, _, kw in subs if not kw.strip())
        jobs = [j for chunk in plan_jobs(ctx.selection, iter(subs),
                                         settings.ranking.max_papers) for j in chunk]
        conn.rollback()
    ledger = MemoryLedger([j for j in jobs if j.entry_ids])
    skipped = [Outcome(j, DeliveryStatus.SKIPPED, error="no papers matched and no trending section")
               for j in jobs if not j.entry_ids]
    out.mkdir(parents=True, exist_ok=True)
    transport = PreviewTransport(out)

    def progress(o: Outcome) -> None:
        if o.rendered is not None:
            stem = str(out / SAFE_NAME.sub("_", o.job.recipient.email))
            Path(stem + ".html").write_text(o.rendered.html, encoding="utf-8")
            Path(stem + ".txt").write_text(o.rendered.text, encoding="utf-8")
        if on_progress:
            on_progress(o)

    run_async(deliver(settings, ledger, ctx, transport, on_progress=progress))
    report = PreviewReport(out, len(rows), ledger.outcomes + skipped, empty, context=ctx)
    return report
