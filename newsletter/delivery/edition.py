"""One newsletter day: the edition row (created once, however many processes ask),
the config sections it reads, and the context that ranks and renders it."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.exc import IntegrityError

from newsletter.config import (
    RankingConfig,
    RenderConfig,
    ScheduleConfig,
    SenderConfig,
    Settings,
    TransportConfig,
    WebConfig,
)
from newsletter.delivery.plan import Job
from newsletter.ranking.selection import Selection, VoteHistoryLike
from newsletter.render.digest import PaperInfo
from newsletter.render.links import LinkMaker, Signer
from newsletter.render.renderer import Rendered, Renderer
from newsletter.store.db import session_scope
from newsletter.store.models import Edition, Entry, utcnow


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

    @classmethod
    def of(cls, settings: Settings) -> EditionConfig:
        return cls(settings.ranking, settings.render, settings.sender, settings.web,
                   settings.transport, settings.schedule)


class EditionContext:
    """Per-edition state: the ranking selection (for explanations) and the renderer.
    It reads nothing: ``newsletter.service.editions.open_edition`` (the one place
    that makes it) reads the papers, what was sent, the votes and the keys."""

    def __init__(self, config: EditionConfig, edition: Edition, rows: list[Entry], *,
                 keys: list[str], sent: Mapping[int, list[int]] | None,
                 history: VoteHistoryLike | None) -> None:
        self.selection = Selection.build(config.ranking, rows, edition.day, sent=sent,
                                         history=history)
        links = LinkMaker(config.web, config.sender, Signer(keys))
        papers = [PaperInfo.of(e, links.paper(e.id)) for e in rows]
        self.edition = edition
        self.rows = rows
        self.index = {e.id: i for i, e in enumerate(rows)}
        self.renderer = Renderer(config.render, config.sender, config.web, keys=keys,
                                 day=edition.day, edition_id=edition.id or 0, papers=papers,
                                 acronyms=self.selection.ranker.corpus.acronyms)

    def has(self, entry_ids: list[str]) -> bool:
        """Whether every one of these papers is among this edition's candidates."""
        return all(e in self.index for e in entry_ids)

    def render(self, job: Job) -> Rendered:
        """One subscriber's email: the job's picks, explained, through the templates."""
        picks = [self.index[e] for e in job.entry_ids if e in self.index]
        if job.trending:
            explanations: list[Any] = [None] * len(picks)
        else:
            explanations = list(self.selection.ranker.explain_many(
                job.recipient.keywords, picks, key=job.recipient.id))
        return self.renderer.render(job.recipient, picks, explanations, job.trending)
