"""A dry run of one source before it goes into ``config.toml``: fetched and parsed
as ``ingest`` would, nothing stored; and a parsed paper as ``sources test --json``
prints it. (Each source's last ingest is kept by the store, ``store/sources.py``.)
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from newsletter.config import SourceConfig
from newsletter.ingest.fetch import Fetcher
from newsletter.ingest.formats import Skipped
from newsletter.ingest.papers import Paper, merge_duplicates
from newsletter.ingest.run import fetch_bytes, parse_bytes, reading, resolve


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
    with reading(src):
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
