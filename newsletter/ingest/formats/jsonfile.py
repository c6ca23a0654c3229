"""Our own entry schema, as a JSON array, ``{"entries": [...]}``, or JSON Lines.

Fields: ``title`` (required), ``abstract``, ``authors`` (list of names),
``published`` (YYYY-MM-DD), ``upvotes``, ``url``, ``code_url``, ``project_url``,
``keywords``, and optionally ``id`` (an arXiv id). This is also what
``newsletter entries --json`` prints, so an export re-imports unchanged.
"""

from __future__ import annotations

from typing import Any, ClassVar

from newsletter.errors import SourceError
from newsletter.ingest.formats.base import Skipped, collect
from newsletter.ingest.formats.jsonutil import (
    as_int,
    as_names,
    as_str,
    load_json,
    load_jsonl,
    parse_date,
)
from newsletter.ingest.papers import Paper, parse_arxiv_id

FIELDS = {
    "id", "title", "abstract", "authors", "published", "upvotes", "url", "code_url",
    "project_url", "keywords", "version", "source", "arrived_at", "featured", "affiliations",
}


class JsonEntriesSource:
    kind: ClassVar[str] = "json"

    def sniff(self, text: str) -> bool:
        return text.lstrip()[:1] in ("[", "{")

    def parse(self, text: str, origin: str, skipped: list[Skipped] | None = None) -> list[Paper]:
        stripped = text.lstrip()
        items: list[tuple[str, Any]]
        if stripped.startswith("[") or (stripped.startswith("{") and "\n{" not in stripped):
            data = load_json(text, origin)
            if isinstance(data, dict):
                data = data.get("entries", data if "title" in data else None)
                data = [data] if isinstance(data, dict) else data
            if not isinstance(data, list):
                raise SourceError(origin, 'expected a JSON array of entries or {"entries": [...]}')
            items = [(f"{origin}: item {i}", x) for i, x in enumerate(data, 1)]
        else:
            items = [(f"{origin}:{n}", x) for n, x in load_jsonl(text, origin)]
        return collect(items, lambda _, pair: self._paper(pair[1], pair[0]), skipped,
                       lambda pair: str(pair[1].get("id") or "") if isinstance(pair[1], dict)
                       else "")

    def _paper(self, item: Any, where: str) -> Paper:
        if not isinstance(item, dict):
            raise SourceError(where, f"expected an object, got {type(item).__name__}")
        unknown = sorted(set(item) - FIELDS)
        if unknown:
            raise SourceError(
                where, f"unknown field {unknown[0]!r} (expected: {', '.join(sorted(FIELDS))})"
            )
        title = as_str(item.get("title"), where, "title")
        if not title.strip():
            raise SourceError(where, "missing field 'title'")
        keywords = item.get("keywords") or []
        if not isinstance(keywords, list):
            raise SourceError(where, "field 'keywords': expected a list of strings")
        paper = Paper(
            title=title,
            abstract=as_str(item.get("abstract"), where, "abstract"),
            authors=as_names(item.get("authors"), where, "authors"),
            published=parse_date(item.get("published"), where, "published"),
            upvotes=as_int(item.get("upvotes"), where, "upvotes"),
            url=as_str(item.get("url"), where, "url"),
            code_url=as_str(item.get("code_url"), where, "code_url"),
            project_url=as_str(item.get("project_url"), where, "project_url"),
            keywords=[str(k) for k in keywords],
            version=as_int(item.get("version"), where, "version") or 0,
            source=as_str(item.get("source"), where, "source") or self.kind,
        )
        paper.featured = parse_date(item.get("featured"), where, "featured")
        affiliations = item.get("affiliations") or {}
        if isinstance(affiliations, dict):
            paper.affiliations = {str(k): [str(a) for a in v] for k, v in affiliations.items()
                                  if isinstance(v, list)}
        ident = as_str(item.get("id"), where, "id", numbers=True)
        parsed = parse_arxiv_id(ident) if ident and not ident.startswith("t:") else None
        if parsed:
            paper.arxiv_id, v = parsed
            paper.version = max(paper.version, v)
        return paper.finish()
