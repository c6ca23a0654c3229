"""The daily-papers JSON API: an array of ``{paper: {...}, title, summary, ...}``.

Fields come and go between API versions and the same field may sit at the top
level or inside ``paper``, so every field is looked up in both places and none
but a title is required.

Two dates: ``paper.publishedAt`` is the arXiv date (often months old), the day
the listing featured the paper is ``submittedOnDailyAt`` (or the item's own
``publishedAt`` when the paper has its own). Both are kept: ``published`` and
``featured``.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

from newsletter.errors import SourceError
from newsletter.ingest.formats.base import Skipped, collect
from newsletter.ingest.formats.jsonutil import (
    as_int,
    as_names,
    as_str,
    first,
    load_json,
    parse_date,
)
from newsletter.ingest.papers import Paper, parse_arxiv_id

_SNIFF = re.compile(r'"(paper|publishedAt|numComments|ai_keywords|githubRepo)"\s*:')


class DailyPapersSource:
    kind: ClassVar[str] = "dailypapers"

    def sniff(self, text: str) -> bool:
        head = text.lstrip()[:20000]
        return head.startswith("[") and bool(_SNIFF.search(head))

    def parse(self, text: str, origin: str, skipped: list[Skipped] | None = None) -> list[Paper]:
        data = load_json(text, origin)
        if isinstance(data, dict):  # some endpoints wrap the list
            data = first(data, "papers", "data", "items") or []
        if not isinstance(data, list):
            raise SourceError(origin, "expected a JSON array of daily-papers objects")
        return collect(data, lambda i, item: self._paper(item, f"{origin}: item {i}"), skipped,
                       _ident)

    def _paper(self, item: Any, where: str) -> Paper:
        if not isinstance(item, dict):
            raise SourceError(where, f"expected an object, got {type(item).__name__}")
        inner = item.get("paper")
        paper: dict[str, Any] = inner if isinstance(inner, dict) else {}

        def get(*keys: str) -> Any:
            return first(paper, *keys) if first(paper, *keys) is not None else first(item, *keys)

        title = as_str(get("title"), where, "title")
        if not title.strip():
            raise SourceError(where, "missing field 'title'")
        ident = as_str(get("id", "arxiv_id"), where, "id", numbers=True)
        parsed = parse_arxiv_id(ident) if ident else None
        out = Paper(
            title=title,
            abstract=as_str(get("summary", "abstract"), where, "summary"),
            authors=as_names(get("authors"), where, "authors"),
            published=parse_date(get("publishedAt", "published"), where, "publishedAt"),
            upvotes=as_int(get("upvotes"), where, "upvotes"),
            code_url=as_str(get("githubRepo"), where, "githubRepo"),
            project_url=as_str(get("projectPage"), where, "projectPage"),
            keywords=[
                k for k in (get("ai_keywords") or []) if isinstance(k, str)
            ],
            source=self.kind,
        )
        out.featured = _featured(item, paper, where)
        if parsed:
            out.arxiv_id, out.version = parsed
        return out.finish()


def _ident(item: Any) -> str:
    if not isinstance(item, dict):
        return ""
    inner = item["paper"] if isinstance(item.get("paper"), dict) else {}
    return str(first(inner, "id") or first(item, "id") or "")


def _featured(item: dict[str, Any], paper: dict[str, Any], where: str) -> Any:
    """The listing's day: ``submittedOnDailyAt``, else the item's own ``publishedAt``
    when the paper carries its arXiv date separately."""
    value = first(paper, "submittedOnDailyAt") or first(item, "submittedOnDailyAt")
    if value is None and first(paper, "publishedAt") is not None:
        value = first(item, "publishedAt")
    if value is None:
        return None
    try:
        return parse_date(value, where, "submittedOnDailyAt")
    except SourceError:
        return None  # a bad listing date is not worth losing the paper
