"""Storing papers: an upsert keyed by the stable paper id, so re-ingesting the same
page, or the same paper from another source, refreshes rather than duplicates.

The papers come from ingest, which the store does not import: ``PaperRecord`` names
what is read of each (ingest's ``Paper`` is one). Ingest settles the id, the arXiv id
and the title key (its rules, ``ingest.papers``) and folds duplicates within a batch;
the store finds an already stored paper by any of the three.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any, NamedTuple, Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session

from newsletter.store.models import Entry, EntryTitle, utcnow

UPSERT_CHUNK = 500  # papers looked up per query


class PaperRecord(Protocol):
    """One normalized paper as ingest produces it. ``upvotes`` None: unknown, not 0."""

    @property
    def id(self) -> str: ...
    @property
    def arxiv_id(self) -> str: ...
    @property
    def title_key(self) -> str: ...  # ``ingest.papers.title_id`` of the title
    @property
    def title(self) -> str: ...
    @property
    def abstract(self) -> str: ...
    @property
    def authors(self) -> list[str]: ...
    @property
    def affiliations(self) -> dict[str, list[str]]: ...
    @property
    def published(self) -> dt.date | None: ...
    @property
    def featured(self) -> dt.date | None: ...
    @property
    def upvotes(self) -> int | None: ...
    @property
    def url(self) -> str: ...
    @property
    def code_url(self) -> str: ...
    @property
    def project_url(self) -> str: ...
    @property
    def keywords(self) -> list[str]: ...
    @property
    def version(self) -> int: ...
    @property
    def source(self) -> str: ...


class Stored(NamedTuple):
    new: int
    updated: int
    unchanged: int  # stored before this run (``now``) and found as they were
    # carried by another source of this run too, which stored them (new once)
    repeated: int = 0


def upsert_papers(session: Session, papers: Sequence[PaperRecord],
                  now: dt.datetime | None = None) -> Stored:
    """Insert new papers and refresh known ones (``refresh``): how many were new,
    updated, and stored before and unchanged (the same file ingested twice updates
    nothing). ``now``: the run's time, the same for all its sources (a paper two of
    them carry is new once, then neither updated nor "stored before"). The papers are
    distinct (ingest folds duplicates first)."""
    now = now or utcnow()
    new = updated = unchanged = repeated = 0
    for start in range(0, len(papers), UPSERT_CHUNK):
        chunk = papers[start : start + UPSERT_CHUNK]
        existing, known = _stored(session, chunk)
        for p in chunk:
            row = existing.get(p.id)
            if row is None:
                row = existing.get(p.title_key)
                if row is not None and p.arxiv_id and row.arxiv_id not in (None, p.arxiv_id):
                    row = None  # two arXiv papers that share a title are two papers
            if row is None:
                entry = Entry(**_values(p), arrived_at=now, updated_at=now)
                session.add(entry)
                existing[p.id] = existing[p.title_key] = entry
                _title_known(session, known, p.title_key, entry.id)
                new += 1
                continue
            changed = refresh(row, p, now)
            # every title it has had: a new version's, and an older version's that
            # arrives after it (its source may list the paper under it, without an id)
            _title_known(session, known, row.title_key, row.id)
            _title_known(session, known, p.title_key, row.id)
            if row.arrived_at == now:  # stored by this run (another source): new once
                repeated += 1
                continue
            updated += changed
            unchanged += not changed
        session.flush()
    return Stored(new, updated, unchanged, repeated)


def _stored(session: Session, chunk: Sequence[PaperRecord]
            ) -> tuple[dict[str, Entry], set[tuple[str, str]]]:
    """The stored entries of ``chunk``, each under its id, arXiv id and title keys
    (its current title's and every earlier one's, ``entry_titles``): a paper first seen
    without an arXiv id is found again by its title, also once a new version retitled
    it. And the (title key, entry id) pairs already recorded among them."""
    keys = [p.title_key for p in chunk if p.title_key]
    titled = list(session.execute(select(EntryTitle.title_key, EntryTitle.entry_id)
                                  .where(EntryTitle.title_key.in_(keys))).all())
    rows = session.scalars(select(Entry).where(
        Entry.id.in_([p.id for p in chunk] + [entry_id for _, entry_id in titled])
        | Entry.arxiv_id.in_([p.arxiv_id for p in chunk if p.arxiv_id])
        | Entry.title_key.in_(keys)))
    existing: dict[str, Entry] = {}
    by_id: dict[str, Entry] = {}
    for e in rows:
        by_id[e.id] = e
        existing.setdefault(e.id, e)
        if e.arxiv_id:
            existing.setdefault(e.arxiv_id, e)
        existing.setdefault(e.title_key, e)
    for key, entry_id in titled:  # an earlier title, after the current ones
        if entry_id in by_id:
            existing.setdefault(key, by_id[entry_id])
    known = {(key, entry_id) for key, entry_id in session.execute(
        select(EntryTitle.title_key, EntryTitle.entry_id)
        .where(EntryTitle.entry_id.in_(list(by_id))))}
    return existing, known


def _title_known(session: Session, known: set[tuple[str, str]], key: str,
                 entry_id: str) -> None:
    """Record that ``entry_id`` has (had) the title ``key``, once."""
    if key and (key, entry_id) not in known:
        known.add((key, entry_id))
        session.add(EntryTitle(title_key=key, entry_id=entry_id))


def _values(p: PaperRecord) -> dict[str, Any]:
    return {
        "id": p.id, "title": p.title, "abstract": p.abstract, "authors": p.authors,
        "published": p.published, "upvotes": p.upvotes or 0, "url": p.url,
        "code_url": p.code_url, "project_url": p.project_url, "keywords": p.keywords,
        "version": p.version, "source": p.source, "arxiv_id": p.arxiv_id or None,
        "title_key": p.title_key, "featured": p.featured, "affiliations": p.affiliations,
    }


_REFRESHED = ("title", "title_key", "abstract", "version", "arxiv_id", "authors", "published",
              "keywords", "featured", "affiliations", "upvotes", "url", "code_url",
              "project_url")


def refresh(row: Entry, p: PaperRecord, now: dt.datetime) -> bool:
    """The same paper seen again: counts and links refreshed, a newer version's text
    taken; whether anything changed (only then is ``updated_at`` moved)."""
    before = [getattr(row, a) for a in _REFRESHED]
    _refresh(row, p)
    if [getattr(row, a) for a in _REFRESHED] == before:
        return False
    row.updated_at = now
    return True


def _refresh(row: Entry, p: PaperRecord) -> None:
    if p.version > row.version or (p.version == row.version and not row.abstract):
        if p.title:
            row.title, row.title_key = p.title, p.title_key
        row.abstract = p.abstract or row.abstract
        row.version = max(p.version, row.version)
    if p.arxiv_id and not row.arxiv_id:
        row.arxiv_id = p.arxiv_id
    row.authors = row.authors or p.authors
    row.published = row.published or p.published
    row.keywords = row.keywords or p.keywords
    if p.featured and (row.featured is None or p.featured > row.featured):
        row.featured = p.featured
    if p.affiliations and not row.affiliations:
        row.affiliations = p.affiliations
    if p.upvotes is not None:
        row.upvotes = p.upvotes
    for attr in ("url", "code_url", "project_url"):
        value = getattr(p, attr)
        if value and not (attr == "url" and row.url.startswith("https://arxiv.org/")):
            setattr(row, attr, value)
