"""The daily-papers JSON API: an array of ``{paper: {...}, title, summary, ...}``.

Fields come and go between API versions and the same field may sit at the top
level or inside ``paper``, so every field is looked up in both places and none
but a title is required.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

from newsletter.errors import SourceError
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

    def parse(self, text: str, origin: str) -> list[Paper]:
        data = load_json(text, origin)
        if isinstance(data, dict):  # some endpoints wrap the list
            data = first(data, "papers", "data", "items") or []
        if not isinstance(data, list):
            raise SourceError(origin, "expected a JSON array of daily-papers objects")
        return [self._paper(item, f"{origin}: item {i}") for i, item in enumerate(data, 1)]

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
        if parsed:
            out.arxiv_id, out.version = parsed
        return out.finish()
