"""One newsletter day: the edition row (created once, however many processes ask),
the config sections it reads, and the context that ranks and renders it."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.exc import IntegrityError

from newsletter.bounces.verp import Verp
from newsletter.config import (
    BouncesConfig,
    DeliveryConfig,
    RankingConfig,
    RenderConfig,
    ScheduleConfig,
    SenderConfig,
    Settings,
    TransportConfig,
    WebConfig,
)
from newsletter.delivery import shown
from newsletter.delivery.plan import Job
from newsletter.errors import NewsletterError
from newsletter.ranking.selection import Selection, VoteHistoryLike
from newsletter.render.digest import PaperInfo
from newsletter.render.links import LinkMaker, Signer
from newsletter.render.renderer import Recipient, Rendered, Renderer
from newsletter.store.db import hold_papers_clock, session_scope
from newsletter.store.models import Edition, Entry, utcnow


def get_or_create_edition(engine: Engine, day: dt.date, slot: str = "") -> Edition:
    """The edition for (day, slot); created once, however many processes ask."""
    with session_scope(engine) as s:
        found = s.scalar(select(Edition).where(Edition.day == day, Edition.slot == slot))
        if found is not None:
            return found
    try:
        with session_scope(engine) as s:
            hold_papers_clock(s, exclusive=True)  # after every ingest storing meanwhile
            now = utcnow()
            edition = Edition(day=day, slot=slot, created_at=now, cutoff=now)
            s.add(edition)
        return edition
    except IntegrityError:  # another process created it first
        with session_scope(engine) as s:
            return s.scalars(select(Edition).where(Edition.day == day, Edition.slot == slot)).one()


@dataclass(frozen=True)
class EditionConfig:
    """The sections an edition reads to rank, render and deliver: what the editions
    use cases take instead of the whole Settings."""

    ranking: RankingConfig
    render: RenderConfig
    sender: SenderConfig
    web: WebConfig
    transport: TransportConfig
    schedule: ScheduleConfig
    bounces: BouncesConfig = BouncesConfig()
    delivery: DeliveryConfig = DeliveryConfig()

    @classmethod
    def of(cls, settings: Settings) -> EditionConfig:
        return cls(settings.ranking, settings.render, settings.sender, settings.web,
                   settings.transport, settings.schedule, settings.bounces,
                   settings.delivery)


@dataclass
class EditionPapers:
    """What opening an edition reads (``service.editions.open_edition``): its papers,
    the week's papers for weekly subscribers (None: nobody receives weekly), the
    papers since Friday's edition for weekdays subscribers' Monday (None: no such
    email is planned now or left to send), what was
    already sent of each (None: not needed), the votes and the signing keys."""

    rows: list[Entry]
    keys: list[str]
    history: VoteHistoryLike | None
    sent: Mapping[int, list[int]] | None = None
    week: list[Entry] | None = None
    week_sent: Mapping[int, list[int]] | None = None
    # a weekdays subscriber's papers after the weekend (None: no such email is due)
    gap: list[Entry] | None = None
    gap_sent: Mapping[int, list[int]] | None = None


class EditionContext:
    """Per-edition state: the ranking selections (the day's; the week's for weekly
    subscribers; the papers since Friday's for weekdays subscribers on Monday) and the
    renderer. It reads nothing: ``newsletter.service.editions.
    open_edition``, the one place that makes it, reads its ``EditionPapers``."""

    def __init__(self, config: EditionConfig, edition: Edition, read: EditionPapers) -> None:
        rows, week = read.rows, read.week
        self.selection = Selection.build(config.ranking, rows, edition.day, sent=read.sent,
                                         history=read.history)
        # weekly subscribers rank over the week's papers (``newsletter.frequency``)
        self.week_selection: Selection | None = None
        if week:
            self.week_selection = Selection.build(config.ranking, week, edition.day,
                                                  sent=read.week_sent, history=read.history)
        # weekdays subscribers after the weekend rank over the papers since their last
        self.gap_selection: Selection | None = None
        if read.gap:
            self.gap_selection = Selection.build(config.ranking, read.gap, edition.day,
                                                 sent=read.gap_sent, history=read.history)
        links = LinkMaker(config.web, config.sender, Signer(read.keys))
        self.edition = edition
        self.rows = rows
        self.index = {e.id: i for i, e in enumerate(rows)}
        extra = []
        for e in [*(week or []), *(read.gap or [])]:  # after the day's rows: their
            if e.id not in self.index:                # indices stay the selection's
                self.index[e.id] = len(self.index)
                extra.append(e)
        self.week_index = {e.id: i for i, e in enumerate(week or [])}
        self.gap_index = {e.id: i for i, e in enumerate(read.gap or [])}
        self.selection_index = {e.id: i for i, e in enumerate(rows)}
        self._config, self._keys, self._links = config, read.keys, links
        self._entries = rows + extra
        self.renderer = self._renderer_of(edition.day)
        # A slot's edition goes to people on either side of the date line: each email is
        # dated (and says "Featured today") by the subscriber's own day, the row's.
        self._renderers = {edition.day: self.renderer}
        # Each message's envelope sender names its delivery, so a bounce names it too.
        return_path = config.bounces.return_path
        self.verp = Verp(return_path, tuple(read.keys)) if return_path else None

    def _renderer_of(self, day: dt.date) -> Renderer:
        config = self._config
        papers = [PaperInfo.of(e, self._links.paper(e.id), day) for e in self._entries]
        return Renderer(config.render, config.sender, config.web, keys=self._keys, day=day,
                        edition_id=self.edition.id or 0, papers=papers,
                        acronyms=self.selection.ranker.corpus.acronyms,
                        unsubscribe_mailto=config.bounces.unsubscribe_mailto(
                            config.sender.from_address))

    def renderer_for(self, day: dt.date | None) -> Renderer:
        """The renderer of emails dated ``day`` (a subscriber's own day; None: the
        edition's), made on first ask; it shares the first one's analysis of the
        abstracts (highlighters), which no date changes."""
        if day is None:
            return self.renderer
        found = self._renderers.get(day)
        if found is None:  # (published once it shares: a web thread may ask meanwhile)
            found = self._renderer_of(day)
            found.digest.share_analysis(self.renderer.digest)
            found = self._renderers.setdefault(day, found)
        return found

    def has(self, entry_ids: list[str]) -> bool:
        """Whether every one of these papers is among this edition's candidates."""
        return all(e in self.index for e in entry_ids)

    def ranks(self, entry_ids: list[str]) -> bool:
        """Whether the day's selection ranks every one of these papers (what rendering
        a record's explanations needs)."""
        return all(e in self.selection_index for e in entry_ids)

    def prepare(self, papers: Collection[str]) -> None:
        """Make now what rendering these papers (ids) reads, their highlighters: before
        delivery forks, so its processes share them. Papers no email shows (the week's,
        on a day nobody's weekly email is due) are left alone."""
        self.renderer.prepare([self.index[e] for e in papers if e in self.index])

    def selection_for(self, weekly: bool, gap: bool
                      ) -> tuple[Selection | None, Mapping[str, int]]:
        """The selection an email of this kind is ranked over, and each of its papers'
        position in it: the week's (``weekly``), the papers since Friday's (``gap``),
        else the day's. None when this opening does not hold that window."""
        if weekly:
            return self.week_selection, self.week_index
        if gap:
            return self.gap_selection, self.gap_index
        return self.selection, self.selection_index

    def render(self, job: Job) -> Rendered:
        """One subscriber's email: the job's picks, explained, through the templates,
        with the record of what it showed (``shown``)."""
        wide, wide_index = (self.selection_for(job.weekly, job.gap)
                            if job.weekly or job.gap else (None, {}))
        if (job.weekly or job.gap) and wide is None and not self.ranks(job.entry_ids):
            # ranked over more papers than this opening holds: sent as it is, the email
            # would leave those papers out without a word; failed, the row says why
            raise NewsletterError("the edition was opened without the "
                                  f"{'week' if job.weekly else 'weekend'}'s papers this "
                                  "email was ranked over")
        known = [e for e in job.entry_ids if e in self.index
                 and (wide is None or e in wide_index)]
        picks = [self.index[e] for e in known]
        if job.trending:
            explanations: list[Any] = [None] * len(picks)
        elif wide is not None:  # ranked over the week's papers, or the weekend's
            explanations = list(wide.ranker.explain_many(
                job.recipient.keywords, [wide_index[e] for e in known],
                key=job.recipient.id))
        else:
            explanations = list(self.selection.ranker.explain_many(
                job.recipient.keywords, picks, key=job.recipient.id))
        rendered = self.renderer_for(job.day).render(job.recipient, picks, explanations,
                                                     job.trending, weekly=job.weekly,
                                                     gap=job.gap)
        record = shown.encode(job.recipient.keywords, known, explanations,
                              trending=job.trending, weekly=job.weekly, gap=job.gap)
        if self.verp is None or job.delivery_id is None:  # a preview has no delivery
            return dataclasses.replace(rendered, shown=record)
        sender = self.verp.address(job.delivery_id, job.recipient.id)
        return dataclasses.replace(rendered, shown=record, message=dataclasses.replace(
            rendered.message, sender=sender))

    def render_shown(self, recipient: Recipient, record: shown.Shown,
                     day: dt.date | None = None) -> Rendered:
        """The email as it was sent, from its record: its picks, sections and
        explanations, the excerpts highlighted for the keywords it was sent for, dated
        ``day`` (the row's: the subscriber's own day)."""
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
        as_sent = Recipient(recipient.id, recipient.email, recipient.name, record.keywords,
                            recipient.nonce)
        return self.renderer_for(day).render(as_sent, picks, explanations, record.trending,
                                             weekly=record.weekly, gap=record.gap)

