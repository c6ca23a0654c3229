"""What the store keeps about sources: the validators of each URL's last fetch (for
conditional GET) and how each source's last ingest went (for ``sources list``), one
record per source, whichever way its path or URL was spelled (``source_key``)."""

from __future__ import annotations

import datetime as dt
import os
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


def source_runs(session: Session) -> list[SourceRun]:
    """Every source's last ingest, newest first."""
    return sorted(session.scalars(select(SourceRun)), key=lambda r: r.ran_at, reverse=True)


def source_key(where: str) -> str:
    """One spelling per source: a URL without a trailing slash, a path made absolute
    (``./a.json``, ``a.json`` and ``/srv/a.json`` typed in /srv are one source)."""
    if where.startswith(("http://", "https://")):
        return where.rstrip("/")
    return os.path.normpath(os.path.abspath(where)) if where else ""


def stored_origin(origin: str) -> str:
    """A path as an absolute path (the directory ``ingest`` ran in is not known later)."""
    return origin if origin.startswith(("http://", "https://")) else source_key(origin)


def forget(session: Session, spec: str) -> int:
    """Drop the ingest record of a source (a ``source_runs`` name, or any spelling of
    its URL or path) and the fetch validators of its URL; the papers it brought stay.
    Returns how many records went; 0 means nothing is known by that name."""
    key = source_key(spec)
    rows = [r for r in session.scalars(select(SourceRun))
            if r.name == spec or source_key(r.origin or r.name) == key]
    for r in rows:
        if r.origin.startswith(("http://", "https://")):
            state = session.get(FetchState, r.origin)
            if state is not None:
                session.delete(state)
        session.delete(r)
    return len(rows)
