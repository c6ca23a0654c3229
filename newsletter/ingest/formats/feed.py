"""Any RSS or Atom feed, through feedparser.

Each text field is read as the feed declares it: HTML (``type="html"``,
``xhtml``, an RSS description) goes through a real HTML tokenizer that keeps
math like ``$T<T_{RW}$``; plain text (``type="text"``) is taken as it is, its
entities already decoded once by the XML parser. An arXiv id anywhere in the
entry's id or links still becomes the paper's id, so a blog feed that links
arXiv papers merges with the arXiv listing of the same papers.
"""

from __future__ import annotations

import datetime as dt
import re
import xml.sax
from typing import Any, ClassVar

import feedparser

from newsletter.errors import SourceError
from newsletter.ingest.authors import split_author_list
from newsletter.ingest.encoding import repair_double_utf8, xml_as_utf8
from newsletter.ingest.formats.base import Skipped, collect
from newsletter.ingest.htmltext import HTML_ELEMENTS, html_to_text
from newsletter.ingest.papers import Paper, arxiv_id_from_url, parse_arxiv_id

_ROOT = re.compile(r"<(rss|feed|rdf:RDF)\b", re.I)
_DOCTYPE = re.compile(r"<!DOCTYPE", re.I)


def starts_a_feed(head: str) -> bool:
    """Whether ``head`` opens with a feed's root element (``rss``, ``feed``,
    ``rdf:RDF``) after any prolog, comments and DOCTYPE (with an internal subset).
    Scanned part by part, each end found once: as one regular expression (comments in
    a repeated group) its time doubled with every comment before a root it did not
    know, and 300 bytes of comments held `ingest` for minutes."""
    at, size = 0, len(head)
    while True:
        while at < size and head[at].isspace():
            at += 1
        if head.startswith("<?xml", at):
            end = head.find(">", at)
        elif head.startswith("<!--", at):
            end = head.find("-->", at + 4)
            end = end + 2 if end >= 0 else -1
        elif _DOCTYPE.match(head, at):
            close, bracket = head.find(">", at), head.find("[", at)
            if 0 <= bracket < close:  # an internal subset: its "]", then the ">"
                close = head.find("]", bracket)
                close = head.find(">", close) if close >= 0 else -1
            end = close
        else:
            return _ROOT.match(head, at) is not None
        if end < 0:
            return False
        at = end + 1
_CLOSING = re.compile(r"</([A-Za-z][A-Za-z0-9]*)\s*>")
_BLOCK_TAG = re.compile(r"<(?:p|br|div)(?:\s[^<>]*)?/?>", re.I)
# arXiv answers a bad listing query with a feed, not an HTTP error: its title (or its
# only item) says "Feed error for query: astroph", and the API's error entries have
# ids under arxiv.org/api/errors.
_ARXIV_FEED_ERROR = re.compile(r"Feed error for query\s*:?\s*(?P<query>[^\s<]*)", re.I)


def looks_like_html(text: str) -> bool:
    """True when ``text`` has real markup: a closing tag of an HTML element, or a
    ``<p>``/``<br>``. Math such as ``$a<b>c$`` has neither."""
    return any(m.group(1).lower() in HTML_ELEMENTS for m in _CLOSING.finditer(text)) \
        or bool(_BLOCK_TAG.search(text))


def field_text(entry: Any, key: str, plain_unless_markup: bool = False) -> str:
    """A text field as the feed declared it: HTML converted, plain text untouched.

    ``plain_unless_markup`` is for sources whose HTML-typed field is plain text by
    contract (an RSS description holding an arXiv abstract): converted only when
    it really carries markup, so ``$a<b>c$`` is not read as bold.
    """
    value = entry.get(key)
    detail = entry.get(f"{key}_detail") or {}
    if not value and key == "summary" and entry.get("content"):
        detail = entry["content"][0]  # Atom <content> when there is no <summary>
        value = detail.get("value", "")
    if not isinstance(value, str):
        return ""
    kind = str(detail.get("type") or "text/plain").lower()
    if "html" not in kind or (plain_unless_markup and not looks_like_html(value)):
        return value
    return html_to_text(value)


def parse_feed(text: str, origin: str) -> Any:
    """feedparser's result, or a SourceError saying why it is not a usable feed.

    feedparser recovers what it can from broken XML; we refuse instead, since a
    truncated download would otherwise be stored as a shorter, valid-looking day.
    The text is handed over as UTF-8 with a prolog that says so: it was decoded
    already, honouring whatever encoding the prolog declared.
    """
    data = xml_as_utf8(text).encode("utf-8")
    parsed = feedparser.parse(data, sanitize_html=False, resolve_relative_uris=False)
    exc = parsed.get("bozo_exception")
    if isinstance(exc, xml.sax.SAXException) or (not parsed.get("version") and not parsed.entries):
        line = getattr(exc, "getLineNumber", lambda: None)() if exc else None
        where = f"{origin}:{line}" if line else origin
        problem = getattr(exc, "getMessage", lambda: str(exc))() if exc else "no feed elements"
        raise SourceError(where, f"malformed RSS/Atom feed: {problem}")
    check_error_feed(parsed, origin)
    return parsed


def check_error_feed(parsed: Any, origin: str) -> None:
    """Raise when the feed is arXiv's way of reporting a bad query (never "0 papers")."""
    texts = [str(parsed.feed.get("title", "")), str(parsed.feed.get("description", ""))]
    texts += [f"{e.get('title', '')} {e.get('summary', '')}" for e in parsed.entries[:3]]
    for text in texts:
        m = _ARXIV_FEED_ERROR.search(text)
        if not m:
            continue
        query = m.group("query").strip(".,;:'\"") or origin
        said = {" ".join(_ARXIV_FEED_ERROR.sub("", t).split()).strip(" .:;-")
                for t in texts[2:]} - {""}
        more = f": {'; '.join(sorted(said))}" if said else ""
        raise SourceError(origin, f"arXiv reports a feed error for query {query!r}{more}")
    errors = [e for e in parsed.entries if "arxiv.org/api/errors" in str(e.get("id", ""))]
    if errors:
        what = " ".join(str(errors[0].get("summary") or errors[0].get("title") or "").split())
        title = str(parsed.feed.get("title", ""))
        # The API echoes the query in its feed title ("arXiv Query: search_query=...");
        # an error feed may not, and then the query is the URL this came from.
        query = title.removeprefix("arXiv Query:").strip() if title.startswith("arXiv Query:") \
            else origin
        raise SourceError(origin, f"arXiv API error for query {query!r}: {what}")


def entry_date(entry: Any) -> dt.date | None:
    for key in ("published_parsed", "updated_parsed", "created_parsed"):
        value = entry.get(key)
        if value:
            return dt.date(value.tm_year, value.tm_mon, value.tm_mday)
    return None


def entry_authors(entry: Any) -> list[str]:
    """One string per author: ``<author>`` elements, or one ``dc:creator`` string
    ("A (Univ. X, Lab Y), B") split only outside brackets. ``Paper.finish`` moves
    each trailing "(affiliation)" out of the name."""
    raw = [repair_double_utf8(str(a.get("name", ""))) for a in entry.get("authors", [])
           if a.get("name")]
    if not raw and entry.get("author"):
        raw = [repair_double_utf8(str(entry.get("author")))]
    return split_author_list(raw[0]) if len(raw) == 1 else raw


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


def entry_ident(entry: Any) -> str:
    return str(entry.get("id") or entry.get("link") or "")


def entry_title(entry: Any) -> str:
    title = field_text(entry, "title")
    if not title.strip():
        raise SourceError("", "missing <title>")
    return title


class FeedSource:
    kind: ClassVar[str] = "feed"

    def sniff(self, text: str) -> bool:
        return starts_a_feed(text[:4000])

    def parse(self, text: str, origin: str, skipped: list[Skipped] | None = None) -> list[Paper]:
        parsed = parse_feed(text, origin)
        return collect(parsed.entries, lambda i, e: self._paper(e, f"{origin}: entry {i}"),
                       skipped, entry_ident)

    def _paper(self, entry: Any, where: str) -> Paper:
        try:
            title = entry_title(entry)
        except SourceError as exc:
            raise SourceError(where, exc.problem) from None
        paper = Paper(
            title=title,
            abstract=field_text(entry, "summary"),
            authors=entry_authors(entry),
            published=entry_date(entry),
            url=entry.get("link", ""),
            keywords=[t.get("term", "") for t in entry.get("tags", []) if t.get("term")],
            source=self.kind,
        )
        found = entry_arxiv(entry)
        if found:
            paper.arxiv_id, paper.version = found
        return paper.finish()
