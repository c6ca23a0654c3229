"""Sources as an operator sees them: what is configured, how each last ingest went,
and a dry run of one source before it goes into ``config.toml``.

Every ingest records, per source, when it ran, what it stored and skipped, and
its error. A failed ingest stores no papers (one transaction), so its error is
recorded in a transaction of its own, after the rollback: the failure is
exactly what ``sources list`` must be able to show.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from newsletter.config import SourceConfig
from newsletter.errors import NewsletterError
from newsletter.ingest.fetch import Fetcher
from newsletter.ingest.formats import Skipped
from newsletter.ingest.papers import Paper, merge_duplicates
from newsletter.ingest.run import IngestReport, fetch_bytes, ingest, parse_bytes, resolve
from newsletter.store.models import FetchState, SourceRun, utcnow

SessionFactory = Callable[[], AbstractContextManager[Session]]


def run_ingest(
    configured: Sequence[SourceConfig], sessions: SessionFactory, specs: list[str],
    strict: bool = False,
) -> IngestReport:
    """``ingest`` in one transaction, with each source's outcome recorded for ``sources list``
    (``configured``: the ``[[sources]]`` entries)."""
    try:
        with sessions() as session:
            report = ingest(configured, session, specs, strict=strict)
            now = utcnow()
            for loaded in report.loaded:
                _save(session, loaded.name or loaded.origin, SourceRun(
                    origin=_stored(loaded.origin), ran_at=now, ok=True, papers=len(loaded.papers),
                    new=loaded.new, updated=loaded.updated, skipped=len(loaded.skipped),
                    not_modified=loaded.not_modified, error=""))
        return report
    except NewsletterError as exc:
        name = getattr(exc, "source_name", None)
        if name:
            with sessions() as session:
                _save(session, name, SourceRun(origin=_stored(getattr(exc, "where", name)),
                                               ran_at=utcnow(), ok=False, error=str(exc)))
        raise


def _stored(origin: str) -> str:
    """A path as an absolute path (the directory ``ingest`` ran in is not known later)."""
    return origin if origin.startswith(("http://", "https://")) else source_key(origin)


def _save(session: Session, name: str, run: SourceRun) -> None:
    row = session.get(SourceRun, name) or SourceRun(name=name)
    for attr in ("origin", "ran_at", "ok", "papers", "new", "updated", "skipped",
                 "not_modified", "error"):
        setattr(row, attr, getattr(run, attr))
    row.papers, row.new, row.updated, row.skipped = (x or 0 for x in (
        row.papers, row.new, row.updated, row.skipped))
    row.not_modified = bool(row.not_modified)
    session.add(row)


def source_key(where: str) -> str:
    """One spelling per source: a URL without a trailing slash, a path made absolute
    (``./a.json``, ``a.json`` and ``/srv/a.json`` typed in /srv are one source)."""
    if where.startswith(("http://", "https://")):
        return where.rstrip("/")
    return os.path.normpath(os.path.abspath(where)) if where else ""


def list_sources(configured: Sequence[SourceConfig], session: Session) -> list[dict[str, Any]]:
    """Every configured source with its last ingest; then each other source ingested by
    hand, once (the newest run of each spelling of the same file or URL)."""
    runs = sorted(session.scalars(select(SourceRun)), key=lambda r: r.ran_at, reverse=True)
    by_name = {r.name: r for r in runs}
    newest: dict[str, SourceRun] = {}
    for r in runs:
        newest.setdefault(source_key(r.origin or r.name), r)
    out, shown = [], set()
    for src in configured:
        where = src.url or src.path or ""
        run = by_name.get(src.name) or newest.get(source_key(where))
        shown.add(source_key(where))
        if run is not None:
            shown.add(source_key(run.origin or run.name))
        out.append({"name": src.name, "kind": src.kind, "where": where,
                    "configured": True, "last": _run_dict(run)})
    for key, run in sorted(newest.items(), key=lambda kv: kv[1].name):
        if key not in shown:
            shown.add(key)
            out.append({"name": run.name, "kind": "auto", "where": run.origin,
                        "configured": False, "last": _run_dict(run)})
    return out


def forget_source(session: Session, spec: str) -> int:
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


def _run_dict(run: SourceRun | None) -> dict[str, Any] | None:
    if run is None:
        return None
    return {"at": run.ran_at.isoformat(timespec="seconds") + "Z", "ok": run.ok,
            "papers": run.papers, "new": run.new, "updated": run.updated,
            "skipped": run.skipped, "not_modified": run.not_modified, "error": run.error}


@dataclass
class DryRun:
    """What ``ingest`` would store from one source, had it been asked."""

    origin: str
    kind: str
    papers: list[Paper] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    folded: int = 0


def dry_run(configured: Sequence[SourceConfig], spec: str, strict: bool = False) -> DryRun:
    """Fetch (no validators: always the full body) and parse one source; store nothing."""
    src = resolve(spec, configured)
    fetcher = Fetcher() if src.url else None
    try:
        origin, body, content_type, _ = fetch_bytes(src, fetcher)
    finally:
        if fetcher:
            fetcher.close()
    assert body is not None  # no validators were sent, so never 304
    parsed = parse_bytes(body, origin, src.kind, content_type, strict)
    merged, folded = merge_duplicates(parsed.papers)
    return DryRun(origin, src.kind, merged, parsed.skipped, folded)


def paper_dict(p: Paper) -> dict[str, Any]:
    """A parsed paper as ``sources test --json`` prints it (the shape of ``entries --json``)."""
    return {
        "id": p.id, "title": p.title, "abstract": p.abstract, "authors": p.authors,
        "affiliations": p.affiliations,
        "published": p.published.isoformat() if p.published else None,
        "featured": p.featured.isoformat() if isinstance(p.featured, dt.date) else None,
        "upvotes": p.upvotes, "url": p.url, "code_url": p.code_url,
        "project_url": p.project_url, "keywords": p.keywords, "version": p.version,
        "source": p.source,
    }
