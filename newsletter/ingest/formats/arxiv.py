"""arXiv: the Atom API (``export.arxiv.org/api/query``) and the RSS/Atom listings.

Listing items carry ids like ``oai:arXiv.org:2508.13426v1``, an ``announce_type``
(new / cross / replace / replace-cross) and abstracts prefixed with
``arXiv:2508.13426v1 Announce Type: new Abstract:``. A ``replace`` is a new
version of a paper we may already have: the same id, a higher version.
"""

from __future__ import annotations

import re
from typing import ClassVar

from newsletter.errors import SourceError
from newsletter.ingest.formats.feed import (
    _XML_START,
    entry_arxiv,
    entry_authors,
    entry_date,
    parse_feed,
    strip_html,
)
from newsletter.ingest.papers import Paper

_PREFIX = re.compile(
    r"^\s*arXiv:\S+\s+Announce\s+Type:\s*[\w-]+\s*(Abstract:\s*)?", re.IGNORECASE
)
_MARKERS = ("oai:arXiv.org:", "arxiv.org/schemas/atom", "<id>http://arxiv.org/abs/",
            "<id>https://arxiv.org/abs/")


class ArxivSource:
    kind: ClassVar[str] = "arxiv"

    def sniff(self, text: str) -> bool:
        head = text[:20000]
        return bool(_XML_START.match(head[:4000])) and any(m in head for m in _MARKERS)

    def parse(self, text: str, origin: str) -> list[Paper]:
        parsed = parse_feed(text, origin)
        out = []
        for i, entry in enumerate(parsed.entries, 1):
            where = f"{origin}: entry {i}"
            found = entry_arxiv(entry)
            if not found:
                raise SourceError(where, "no arXiv id in <id> or links")
            title = strip_html(entry.get("title", ""))
            if not title.strip():
                raise SourceError(where, "missing <title>")
            abstract = _PREFIX.sub("", strip_html(entry.get("summary", "")))
            paper = Paper(
                title=title,
                abstract=abstract,
                authors=entry_authors(entry),
                published=entry_date(entry),
                url=f"https://arxiv.org/abs/{found[0]}",
                keywords=[t.get("term", "") for t in entry.get("tags", []) if t.get("term")],
                source=self.kind,
            )
            paper.arxiv_id, paper.version = found
            if entry.get("arxiv_announce_type", "").startswith("replace") and not paper.version:
                paper.version = 2
            out.append(paper.finish())
        return out
