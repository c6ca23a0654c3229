"""Any RSS or Atom feed, through feedparser.

HTML in summaries is reduced to text; an arXiv id anywhere in the entry's id or
links still becomes the paper's id, so a blog feed that links arXiv papers
merges with the arXiv listing of the same papers.
"""

from __future__ import annotations

import datetime as dt
import html
import re
import xml.sax
from html.parser import HTMLParser
from typing import Any, ClassVar

import feedparser

from newsletter.errors import SourceError
from newsletter.ingest.papers import Paper, arxiv_id_from_url, parse_arxiv_id

_XML_START = re.compile(r"^\s*(<\?xml[^>]*>\s*)?(<!--.*?-->\s*)*<(rss|feed|rdf:RDF)\b", re.S)


class _TextExtractor(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []

    def handle_data(self, data: str) -> None:
        self.parts.append(data)

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        if tag in ("p", "br", "div", "li"):
            self.parts.append(" ")


def strip_html(text: str) -> str:
    if "<" not in text:
        return html.unescape(text)
    parser = _TextExtractor()
    parser.feed(text)
    parser.close()
    return "".join(parser.parts)


def parse_feed(text: str, origin: str) -> Any:
    """feedparser's result, or a SourceError saying why it is not a usable feed.

    feedparser recovers what it can from broken XML; we refuse instead, since a
    truncated download would otherwise be stored as a shorter, valid-looking day.
    """
    parsed = feedparser.parse(text, sanitize_html=False, resolve_relative_uris=False)
    exc = parsed.get("bozo_exception")
    if isinstance(exc, xml.sax.SAXException) or (not parsed.get("version") and not parsed.entries):
        line = getattr(exc, "getLineNumber", lambda: None)() if exc else None
        where = f"{origin}:{line}" if line else origin
        problem = getattr(exc, "getMessage", lambda: str(exc))() if exc else "no feed elements"
        raise SourceError(where, f"malformed RSS/Atom feed: {problem}")
    return parsed


def entry_date(entry: Any) -> dt.date | None:
    for key in ("published_parsed", "updated_parsed", "created_parsed"):
        value = entry.get(key)
        if value:
            return dt.date(value.tm_year, value.tm_mon, value.tm_mday)
    return None


def entry_authors(entry: Any) -> list[str]:
    names = [a.get("name", "") for a in entry.get("authors", []) if a.get("name")]
    if len(names) == 1 and "," in names[0]:  # dc:creator "A, B, C"
        names = [n.strip() for n in names[0].split(",")]
    return names


def entry_arxiv(entry: Any) -> tuple[str, int] | None:
    for value in (entry.get("id", ""), entry.get("link", "")):
        found = parse_arxiv_id(value) if "arxiv" in value.lower() else None
        found = found or arxiv_id_from_url(value)
        if found:
            return found
    for link in entry.get("links", []):
        found = arxiv_id_from_url(link.get("href", ""))
        if found:
            return found
    return None


class FeedSource:
    kind: ClassVar[str] = "feed"

    def sniff(self, text: str) -> bool:
        return bool(_XML_START.match(text[:4000]))

    def parse(self, text: str, origin: str) -> list[Paper]:
        parsed = parse_feed(text, origin)
        out = []
        for i, entry in enumerate(parsed.entries, 1):
            title = strip_html(entry.get("title", ""))
            if not title.strip():
                raise SourceError(f"{origin}: entry {i}", "missing <title>")
            paper = Paper(
                title=title,
                abstract=strip_html(entry.get("summary", "")),
                authors=entry_authors(entry),
                published=entry_date(entry),
                url=entry.get("link", ""),
                keywords=[t.get("term", "") for t in entry.get("tags", []) if t.get("term")],
                source=self.kind,
            )
            found = entry_arxiv(entry)
            if found:
                paper.arxiv_id, paper.version = found
            out.append(paper.finish())
        return out
