"""JSON Feed 1.0 / 1.1 (jsonfeed.org), which many blogs and lab pages publish.

``{"version": "https://jsonfeed.org/version/1.1", "items": [...]}``. Each item
needs an ``id`` (the spec says to discard items without one) and, for a paper
digest, a ``title``; anything else is optional. ``summary`` is the abstract when
there is one, else ``content_text``, else the text of ``content_html``. Authors
are 1.1's ``authors`` list or 1.0's ``author`` object, item level first, then
the feed's. An arXiv link in ``url``, ``external_url`` or ``id`` gives the id.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

from newsletter.errors import SourceError
from newsletter.ingest.formats.base import Skipped, collect
from newsletter.ingest.formats.jsonutil import as_str, load_json, parse_date
from newsletter.ingest.htmltext import html_to_text
from newsletter.ingest.papers import Paper, arxiv_id_from_url, parse_arxiv_id

_VERSION = re.compile(r'"version"\s*:\s*"https?://jsonfeed\.org/version/', re.IGNORECASE)


def _names(obj: dict[str, Any]) -> list[str]:
    people = obj.get("authors")
    if not isinstance(people, list):
        people = [obj["author"]] if isinstance(obj.get("author"), dict) else []
    return [str(p["name"]) for p in people if isinstance(p, dict) and p.get("name")]


class JsonFeedSource:
    kind: ClassVar[str] = "jsonfeed"

    def sniff(self, text: str) -> bool:
        head = text.lstrip()[:20000]
        return head.startswith("{") and bool(_VERSION.search(head))

    def parse(self, text: str, origin: str, skipped: list[Skipped] | None = None) -> list[Paper]:
        data = load_json(text, origin)
        if not isinstance(data, dict) or not str(data.get("version", "")).lower().startswith(
            ("https://jsonfeed.org/version/", "http://jsonfeed.org/version/")
        ):
            raise SourceError(origin, 'expected a JSON Feed object with "version" and "items"')
        items = data.get("items")
        if not isinstance(items, list):
            raise SourceError(origin, 'JSON Feed: "items" must be an array')
        feed_authors = _names(data)
        return collect(
            items,
            lambda i, item: self._paper(item, f"{origin}: item {i}", feed_authors),
            skipped,
            lambda item: str(item.get("id", "")) if isinstance(item, dict) else "",
        )

    def _paper(self, item: Any, where: str, feed_authors: list[str]) -> Paper:
        if not isinstance(item, dict):
            raise SourceError(where, f"expected an object, got {type(item).__name__}")
        ident = item.get("id")
        if isinstance(ident, (int, float)) and not isinstance(ident, bool):
            ident = str(ident)  # the spec: a numeric id is coerced to a string
        if not isinstance(ident, str) or not ident.strip():
            raise SourceError(where, "no 'id' (JSON Feed items without one are discarded)")
        title = as_str(item.get("title"), where, "title")
        if not title.strip():
            raise SourceError(where, "missing field 'title'")
        abstract = as_str(item.get("summary"), where, "summary") or as_str(
            item.get("content_text"), where, "content_text"
        ) or html_to_text(as_str(item.get("content_html"), where, "content_html"))
        url = as_str(item.get("url"), where, "url")
        external = as_str(item.get("external_url"), where, "external_url")
        tags = item["tags"] if isinstance(item.get("tags"), list) else []
        paper = Paper(
            title=title,
            abstract=abstract,
            authors=_names(item) or feed_authors,
            published=parse_date(item.get("date_published") or item.get("date_modified"),
                                 where, "date_published"),
            url=url or external,
            project_url=external if url and external != url else "",
            keywords=[str(t) for t in tags if isinstance(t, (str, int, float))],
            source=self.kind,
        )
        found = (arxiv_id_from_url(url) or arxiv_id_from_url(external)
                 or (parse_arxiv_id(ident) if "arxiv" in ident.lower() else None))
        if found:
            paper.arxiv_id, paper.version = found
        return paper.finish()
