"""Ingest: read every SOURCE, parse it all, then store it all in one transaction.

Parsing everything before writing anything is what makes a bad file harmless:
one malformed source among five stores nothing, and the error names the file
and line. Storing is an upsert keyed by the stable paper id, so re-ingesting
the same page, or the same paper from another source, refreshes rather than
duplicates.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from newsletter.config import SourceConfig
from newsletter.errors import InputError, NewsletterError, SourceError
from newsletter.ingest import encoding
from newsletter.ingest.fetch import Fetcher, Validators
from newsletter.ingest.formats import BY_KIND, SOURCES, Skipped
from newsletter.ingest.papers import Paper, merge_duplicates, title_id
from newsletter.store.models import Entry, FetchState, utcnow

MAX_BYTES = 200 * 1024 * 1024


def decode(data: bytes, origin: str, content_type: str = "") -> str:
    """Text from bytes as feed readers do it (BOM, HTTP charset, XML prolog), else
    strict UTF-8; junk is refused with the line it starts on. See ``encoding``."""
    return encoding.decode(data, origin, content_type)


def parse_text(
    text: str, origin: str, kind: str = "auto", skipped: list[Skipped] | None = None
) -> list[Paper]:
    """Papers in ``text``; the format is told from the content unless ``kind`` says.

    With a ``skipped`` list, unusable items are recorded there and the rest kept;
    without one, the first unusable item is an error (``ingest --strict``).
    """
    if kind != "auto":
        return BY_KIND[kind].parse(text, origin, skipped)
    for source in SOURCES:
        if source.sniff(text):
            return source.parse(text, origin, skipped)
    head = text.lstrip()[:200].lower()
    if head.startswith(("<!doctype html", "<html")) or "<body" in text[:4000].lower():
        raise SourceError(origin, "this is an HTML page, not a feed: expected RSS/Atom XML")
    raise SourceError(
        origin,
        "unrecognised format: expected daily-papers JSON, entries JSON/JSONL, RSS/Atom, "
        "JSON Feed, or a page dump",
    )


@dataclass
class Parsed:
    """What one source yields: the usable papers and the items it could not use."""

    papers: list[Paper]
    skipped: list[Skipped]


def parse_bytes(
    data: bytes, origin: str, kind: str = "auto", content_type: str = "", strict: bool = False
) -> Parsed:
    """Decode and parse one payload (a file's bytes or an HTTP body)."""
    skipped: list[Skipped] | None = None if strict else []
    papers = parse_text(decode(data, origin, content_type), origin, kind, skipped)
    if skipped and not papers:  # items, none usable: nothing to keep, so say why
        more = f" (and {len(skipped) - 1} more unusable items)" if len(skipped) > 1 else ""
        raise SourceError(origin, f"{skipped[0]}{more} (no usable item)")
    return Parsed(papers, skipped or [])


@dataclass
class Loaded:
    origin: str
    papers: list[Paper]
    folded: int = 0
    validators: Validators | None = None
    not_modified: bool = False
    skipped: list[Skipped] = field(default_factory=list)
    name: str = ""  # the SOURCE as given: a [[sources]] name, a URL or a path
    new: int = 0
    updated: int = 0


@dataclass
class IngestReport:
    loaded: list[Loaded] = field(default_factory=list)
    new: int = 0
    updated: int = 0

    @property
    def total(self) -> int:
        return sum(len(x.papers) for x in self.loaded)

    @property
    def skipped(self) -> int:
        return sum(len(x.skipped) for x in self.loaded)


def resolve(spec: str, configured: Sequence[SourceConfig]) -> SourceConfig:
    """A SOURCE argument: a ``[[sources]]`` name (of ``configured``), a URL, or a path."""
    for src in configured:
        if src.name == spec:
            if not (src.url or src.path):
                raise InputError(f"[[sources]] {spec}: needs url or path")
            return src
    if spec.startswith(("http://", "https://")):
        return SourceConfig(name=spec, url=spec)
    return SourceConfig(name=spec, path=spec)


def fetch_bytes(
    src: SourceConfig, fetcher: Fetcher | None, validators: Validators | None = None
) -> tuple[str, bytes | None, str, Validators | None]:
    """(origin, body or None when not modified, content type, validators) of one source."""
    if src.url:
        assert fetcher is not None
        got = fetcher.get(src.url, validators)
        if got.body is not None and len(got.body) > MAX_BYTES:
            raise SourceError(src.url, f"response larger than {MAX_BYTES // 2**20} MB")
        return src.url, got.body, got.content_type, got.validators
    path = Path(src.path or "")
    origin = str(path)
    try:
        size = path.stat().st_size
        if path.is_dir():
            raise SourceError(origin, "is a directory: expected a file")
        if size > MAX_BYTES:
            raise SourceError(origin, f"file larger than {MAX_BYTES // 2**20} MB")
        data = path.read_bytes()
    except FileNotFoundError:
        raise SourceError(origin, "no such file (nor a [[sources]] name or URL)") from None
    except OSError as exc:
        raise SourceError(origin, f"cannot read: {exc.strerror}") from None
    return origin, data, "", None


def load(src: SourceConfig, session: Session, fetcher: Fetcher | None,
         strict: bool = False) -> Loaded:
    validators = None
    if src.url:
        state = session.get(FetchState, src.url)
        validators = Validators(state.etag, state.last_modified) if state else None
    origin, body, content_type, got = fetch_bytes(src, fetcher, validators)
    if body is None:
        return Loaded(origin, [], validators=got, not_modified=True, name=src.name)
    parsed = parse_bytes(body, origin, src.kind, content_type, strict)
    merged, folded = merge_duplicates(parsed.papers)
    return Loaded(origin, merged, folded, validators=got, skipped=parsed.skipped,
                  name=src.name)


def store(session: Session, papers: list[Paper], now: dt.datetime | None = None) -> tuple[int, int]:
    """Upsert papers by id. Returns (new, updated)."""
    now = now or utcnow()
    merged, _ = merge_duplicates(papers)
    new = updated = 0
    for start in range(0, len(merged), 500):
        chunk = merged[start : start + 500]
        keys = {p.id: title_id(p.title) for p in chunk}
        rows = session.scalars(select(Entry).where(
            Entry.id.in_(list(keys)) | Entry.arxiv_id.in_([p.arxiv_id for p in chunk
                                                           if p.arxiv_id])
            | Entry.title_key.in_(list(keys.values()))))
        existing: dict[str, Entry] = {}
        for e in rows:  # an entry is found by its id, its arXiv id, or its title
            existing.setdefault(e.id, e)
            if e.arxiv_id:
                existing.setdefault(e.arxiv_id, e)
            existing.setdefault(e.title_key, e)
        for p in chunk:
            row = existing.get(p.id) or existing.get(keys[p.id])
            if row is None:
                values = p.as_row()
                values["upvotes"] = values["upvotes"] or 0
                entry = Entry(**values, arrived_at=now, updated_at=now)
                session.add(entry)
                existing[p.id] = existing[keys[p.id]] = entry
                new += 1
                continue
            refresh(row, p, now)
            updated += 1
        session.flush()
    return new, updated


def refresh(row: Entry, p: Paper, now: dt.datetime) -> None:
    """The same paper seen again: counts and links refreshed, a newer version's text taken."""
    if p.version > row.version or (p.version == row.version and not row.abstract):
        row.title = p.title or row.title
        row.title_key = title_id(row.title)
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
    row.updated_at = now


def ingest(
    configured: Sequence[SourceConfig], session: Session, specs: list[str], strict: bool = False
) -> IngestReport:
    """Load every source, then store them all; any source-level error stores nothing.
    ``specs`` name sources (``resolve``); none: every ``configured`` one (``[[sources]]``).

    Unusable items inside a usable source are skipped and listed in the report,
    unless ``strict``, when the first one is an error like any other.
    """
    sources = [resolve(s, configured) for s in specs] or list(configured)
    if not sources:
        raise InputError("nothing to ingest: name a file, URL or [[sources]] entry")
    fetcher = Fetcher() if any(s.url for s in sources) else None
    report = IngestReport()
    try:
        for src in sources:
            try:
                report.loaded.append(load(src, session, fetcher, strict))
            except NewsletterError as exc:
                exc.source_name = src.name  # type: ignore[attr-defined]
                raise
    finally:
        if fetcher:
            fetcher.close()
    for loaded in report.loaded:  # one source at a time, for per-source counts
        loaded.new, loaded.updated = store(session, loaded.papers)
        report.new += loaded.new
        report.updated += loaded.updated
    for loaded in report.loaded:
        if loaded.validators and (loaded.validators.etag or loaded.validators.last_modified):
            state = session.get(FetchState, loaded.origin) or FetchState(url=loaded.origin)
            state.etag = loaded.validators.etag
            state.last_modified = loaded.validators.last_modified
            state.fetched_at = utcnow()
            session.add(state)
    return report
