"""What the store keeps about sources: the validators of each URL's last fetch (for
conditional GET) and how each source's last ingest went (for ``sources list``)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from newsletter.store.models import FetchState, SourceRun, utcnow


def fetch_state(session: Session, url: str) -> FetchState | None:
    """The validators (ETag, Last-Modified) and time of ``url``'s last fetch, if any."""
    return session.get(FetchState, url)


def save_validators(session: Session, url: str, etag: str, last_modified: str,
                    now: dt.datetime | None = None) -> None:
    """Remember what ``url`` sent, to send it back on the next fetch."""
    state = session.get(FetchState, url) or FetchState(url=url)
    state.etag = etag
    state.last_modified = last_modified
    state.fetched_at = now or utcnow()
    session.add(state)


@dataclass(frozen=True)
class RunOutcome:
    """One source's ingest as ``record_run`` stores it: stored counts, or an error."""

    origin: str
    ok: bool
    papers: int = 0
    new: int = 0
    updated: int = 0
    skipped: int = 0
    not_modified: bool = False
    error: str = ""


def record_run(session: Session, name: str, outcome: RunOutcome,
               now: dt.datetime | None = None) -> None:
    """The last ingest of source ``name`` (a ``[[sources]]`` name, a URL or a path),
    replacing the one before."""
    row = session.get(SourceRun, name) or SourceRun(name=name)
    row.origin, row.ran_at, row.ok = outcome.origin, now or utcnow(), outcome.ok
    row.papers, row.new, row.updated = outcome.papers, outcome.new, outcome.updated
    row.skipped, row.not_modified, row.error = (outcome.skipped, outcome.not_modified,
                                                outcome.error)
    session.add(row)


def source_runs(session: Session) -> dict[str, SourceRun]:
    """Every source's last ingest, by source name."""
    return {r.name: r for r in session.scalars(select(SourceRun))}
