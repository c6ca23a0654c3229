"""One newsletter day: the edition row (created once, however many processes ask)
and the context that ranks and renders it."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.exc import IntegrityError

from newsletter.config import Settings
from newsletter.delivery import shown
from newsletter.delivery.plan import Job
from newsletter.frequency import WEEK_DAYS, WEEKLY
from newsletter.ranking.selection import Selection
from newsletter.render.digest import PaperInfo
from newsletter.render.links import LinkMaker, Signer
from newsletter.render.renderer import Recipient, Rendered, Renderer
from newsletter.store.db import session_scope
from newsletter.store.keys import secret_keys
from newsletter.store.models import Edition, Entry, Subscriber, SubscriberStatus, utcnow
from newsletter.store.queries import candidate_entries, edition_entries, sent_map
from newsletter.store.votes import vote_history


def get_or_create_edition(engine: Engine, day: dt.date, slot: str = "") -> Edition:
    """The edition for (day, slot); created once, however many processes ask."""
    with session_scope(engine) as s:
        found = s.scalar(select(Edition).where(Edition.day == day, Edition.slot == slot))
        if found is not None:
            return found
    try:
        with session_scope(engine) as s:
            now = utcnow()
            edition = Edition(day=day, slot=slot, created_at=now, cutoff=now)
            s.add(edition)
        return edition
    except IntegrityError:  # another process created it first
        with session_scope(engine) as s:
            return s.scalars(select(Edition).where(Edition.day == day, Edition.slot == slot)).one()


class EditionContext:
    """Per-edition state: the ranking selection (for explanations) and the renderer."""

    def __init__(self, settings: Settings, session: Any, edition: Edition,
                 rows: list[Entry], *, keys: list[str] | None = None,
                 ignore_sent: bool = False, week: list[Entry] | None = None) -> None:
        sent = None if ignore_sent else sent_map(session, [e.id for e in rows])
        history = vote_history(session)
        self.selection = Selection.build(settings.ranking, rows, edition.day, sent=sent,
                                         history=history)
        # weekly subscribers rank over the week's papers (``newsletter.frequency``)
        self.week_selection: Selection | None = None
        if week:
            week_sent = None if ignore_sent else sent_map(session, [e.id for e in week])
            self.week_selection = Selection.build(settings.ranking, week, edition.day,
                                                  sent=week_sent, history=history)
        keys = keys or secret_keys(settings.web, session)
        links = LinkMaker(settings.web, settings.sender, Signer(keys))
        self.rows = rows
        self.index = {e.id: i for i, e in enumerate(rows)}
        extra = [e for e in week or [] if e.id not in self.index]
        for e in extra:  # after the day's rows: their indices stay the selection's
            self.index[e.id] = len(self.index)
        self.week_index = {e.id: i for i, e in enumerate(week or [])}
        self.selection_index = {e.id: i for i, e in enumerate(rows)}
        papers = [PaperInfo.of(e, links.paper(e.id), edition.day) for e in rows + extra]
        self.renderer = Renderer(settings.render, settings.sender, settings.web, keys=keys,
                                 day=edition.day, edition_id=edition.id or 0, papers=papers,
                                 acronyms=self.selection.ranker.corpus.acronyms)

    def render(self, job: Job) -> Rendered:
        weekly = job.weekly and self.week_selection is not None
        known = [e for e in job.entry_ids if e in self.index
                 and (not weekly or e in self.week_index)]
        picks = [self.index[e] for e in known]
        if job.trending:
            explanations: list[Any] = [None] * len(picks)
        elif weekly:
            assert self.week_selection is not None
            explanations = list(self.week_selection.ranker.explain_many(
                job.recipient.keywords, [self.week_index[e] for e in known],
                key=job.recipient.id))
        else:
            explanations = list(self.selection.ranker.explain_many(
                job.recipient.keywords, picks, key=job.recipient.id))
        rendered = self.renderer.render(job.recipient, picks, explanations, job.trending,
                                        weekly=job.weekly)
        record = shown.encode(job.recipient.keywords, known, explanations,
                              trending=job.trending, weekly=job.weekly)
        return dataclasses.replace(rendered, shown=record)

    def render_shown(self, recipient: Recipient, record: shown.Shown) -> Rendered:
        """The email as it was sent, from its record: its picks, sections and
        explanations, the excerpts highlighted for the keywords it was sent for."""
        known = [p for p in record.picks if p.id in self.index]
        picks = [self.index[p.id] for p in known]
        if record.trending:
            explanations: list[Any] = [None] * len(picks)
        else:
            ranked = [p for p in known if p.id in self.selection_index]
            features = {p.id: ex.features for p, ex in zip(ranked, self.selection.ranker
                        .explain_many(record.keywords, [self.selection_index[p.id]
                                                        for p in ranked]), strict=True)}
            explanations = [shown.explanation(p, features.get(p.id, ())) for p in known]
        as_sent = Recipient(recipient.id, recipient.email, recipient.name, record.keywords)
        return self.renderer.render(as_sent, picks, explanations, record.trending,
                                    weekly=record.weekly)




def open_edition(settings: Settings, session: Any, edition: Edition,
                 rows: list[Entry] | None = None, *, ignore_sent: bool = False
                 ) -> EditionContext:
    """The one way to open an edition: its candidate papers (or ``rows``, e.g. the
    papers one stored email carried) and the context that ranks and renders them.
    Send, preview, the queue worker and the web's "view in browser" all call this.

    ``ignore_sent`` skips loading which papers each subscriber already had: only
    planning needs it, and for a delivery worker joining a large edition midway it
    is millions of rows (every paper sent so far) held in memory for nothing."""
    if rows is None:
        rows = edition_entries(session, edition.slot, edition.cutoff)
        week = week_entries(session, edition) if has_weekly(session) else None
    else:
        week = None
    return EditionContext(settings, session, edition, rows, ignore_sent=ignore_sent,
                          week=week)


def has_weekly(session: Any) -> bool:
    """Whether anyone receiving chose a weekly email (else no week selection is built)."""
    return session.scalar(select(Subscriber.id).where(
        Subscriber.frequency.like(f"{WEEKLY}%"),
        Subscriber.status == SubscriberStatus.ACTIVE).limit(1)) is not None


def week_entries(session: Any, edition: Edition) -> list[Entry]:
    """A weekly email's candidates: the papers that arrived in the seven days up to
    the edition's cutoff (after the cutoff of the same slot's edition of a week
    before, when there is one)."""
    week_ago = edition.day - dt.timedelta(days=WEEK_DAYS)
    since = session.scalar(select(Edition.cutoff).where(
        Edition.slot == edition.slot, Edition.day <= week_ago)
        .order_by(Edition.cutoff.desc()).limit(1))
    floor = edition.cutoff - dt.timedelta(days=WEEK_DAYS)
    return candidate_entries(session, since=max(since, floor) if since else floor,
                             until=edition.cutoff)

