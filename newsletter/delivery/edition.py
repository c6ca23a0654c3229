"""One newsletter day: the edition row (created once, however many processes ask)
and the context that ranks and renders it."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.exc import IntegrityError

from newsletter.config import Settings
from newsletter.delivery.plan import Job
from newsletter.ranking.selection import Selection
from newsletter.render.digest import PaperInfo
from newsletter.render.links import LinkMaker, Signer
from newsletter.render.renderer import Rendered, Renderer
from newsletter.store.db import session_scope
from newsletter.store.keys import secret_keys
from newsletter.store.models import Edition, Entry, utcnow
from newsletter.store.queries import edition_entries, sent_map
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
                 ignore_sent: bool = False) -> None:
        sent = None if ignore_sent else sent_map(session, [e.id for e in rows])
        self.selection = Selection.build(settings.ranking, rows, edition.day, sent=sent,
                                         history=vote_history(session))
        keys = keys or secret_keys(settings.web, session)
        links = LinkMaker(settings.web, settings.sender, Signer(keys))
        papers = [PaperInfo.of(e, links.paper(e.id)) for e in rows]
        self.rows = rows
        self.index = {e.id: i for i, e in enumerate(rows)}
        self.renderer = Renderer(settings.render, settings.sender, settings.web, keys=keys,
                                 day=edition.day, edition_id=edition.id or 0, papers=papers,
                                 acronyms=self.selection.ranker.corpus.acronyms)

    def render(self, job: Job) -> Rendered:
        picks = [self.index[e] for e in job.entry_ids if e in self.index]
        if job.trending:
            explanations: list[Any] = [None] * len(picks)
        else:
            explanations = list(self.selection.ranker.explain_many(
                job.recipient.keywords, picks, key=job.recipient.id))
        return self.renderer.render(job.recipient, picks, explanations, job.trending)




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
    return EditionContext(settings, session, edition, rows, ignore_sent=ignore_sent)

