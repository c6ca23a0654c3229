"""arXiv: the Atom API (``export.arxiv.org/api/query``) and the RSS/Atom listings.

Listing items carry ids like ``oai:arXiv.org:2508.13426v1``, an ``announce_type``
(new / cross / replace / replace-cross) and abstracts prefixed with
``arXiv:2508.13426v1 Announce Type: new Abstract:``. A ``replace`` is a new
version of a paper we may already have: the same id, a higher version.

The API puts each author's affiliations in ``<arxiv:affiliation>`` inside
``<author>``; feedparser keeps only the last one per entry, so those are read
from the XML directly. arXiv reports a bad query as a feed (an "Error" entry in
the API, a "Feed error for query" listing): that is an error naming the query.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from typing import Any, ClassVar

from newsletter.errors import SourceError
from newsletter.ingest.encoding import repair_double_utf8, xml_as_utf8
from newsletter.ingest.formats.base import Skipped, collect
from newsletter.ingest.formats.feed import (
    entry_arxiv,
    entry_authors,
    entry_date,
    entry_ident,
    entry_title,
    field_text,
    parse_feed,
    starts_a_feed,
)
from newsletter.ingest.papers import Paper, arxiv_id_from_url, parse_arxiv_id

_PREFIX = re.compile(
    r"^\s*arXiv:\S+\s+Announce\s+Type:\s*[\w-]+\s*(Abstract:\s*)?", re.IGNORECASE
)
_MARKERS = ("oai:arXiv.org:", "arxiv.org/schemas/atom", "<id>http://arxiv.org/abs/",
            "<id>https://arxiv.org/abs/", "Feed error for query")
_ATOM = "{http://www.w3.org/2005/Atom}"
_ARXIV = "{http://arxiv.org/schemas/atom}"


def api_affiliations(text: str) -> dict[str, dict[str, list[str]]]:
    """arXiv id -> author -> affiliations, from the API's ``<arxiv:affiliation>``."""
    if "affiliation" not in text:
        return {}
    try:
        root = ET.fromstring(xml_as_utf8(text).encode("utf-8"))
    except ET.ParseError:
        return {}
    out: dict[str, dict[str, list[str]]] = {}
    for entry in root.iter(f"{_ATOM}entry"):
        ident = (entry.findtext(f"{_ATOM}id") or "").strip()
        found = arxiv_id_from_url(ident) or parse_arxiv_id(ident)
        if not found:
            continue
        for author in entry.iter(f"{_ATOM}author"):
            name = repair_double_utf8(" ".join((author.findtext(f"{_ATOM}name") or "").split()))
            affs = [" ".join((a.text or "").split()) for a in author.iter(f"{_ARXIV}affiliation")]
            if name and any(affs):
                out.setdefault(found[0], {})[name] = [a for a in affs if a]
    return out


class ArxivSource:
    kind: ClassVar[str] = "arxiv"

    def sniff(self, text: str) -> bool:
        head = text[:20000]
        return starts_a_feed(head[:4000]) and any(m in head for m in _MARKERS)

    def parse(self, text: str, origin: str, skipped: list[Skipped] | None = None) -> list[Paper]:
        parsed = parse_feed(text, origin)
        affiliations = api_affiliations(text)
        return collect(
            parsed.entries,
            lambda i, e: self._paper(e, f"{origin}: entry {i}", affiliations),
            skipped, entry_ident,
        )

    def _paper(self, entry: Any, where: str,
               affiliations: dict[str, dict[str, list[str]]]) -> Paper:
        found = entry_arxiv(entry)
        if not found:
            raise SourceError(where, "no arXiv id in <id> or links")
        try:
            title = entry_title(entry)
        except SourceError as exc:
            raise SourceError(where, exc.problem) from None
        # arXiv abstracts are plain text with LaTeX; the RSS listing types them as
        # HTML only because RSS descriptions are. Old listings carried real <p> markup.
        abstract = _PREFIX.sub("", field_text(entry, "summary", plain_unless_markup=True))
        paper = Paper(
            title=title,
            abstract=abstract,
            authors=entry_authors(entry),
            affiliations=dict(affiliations.get(found[0], {})),
            published=entry_date(entry),
            url=f"https://arxiv.org/abs/{found[0]}",
            keywords=[t.get("term", "") for t in entry.get("tags", []) if t.get("term")],
            source=self.kind,
        )
        paper.arxiv_id, paper.version = found
        if entry.get("arxiv_announce_type", "").startswith("replace") and not paper.version:
            paper.version = 2
        return paper.finish()
