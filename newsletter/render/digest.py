"""The per-subscriber digest: picks turned into what the templates show.

Everything that does not depend on the subscriber (a paper's link, author
line, date) is computed once per edition; excerpts with highlighted terms are
cached per (paper, matched terms), which many subscribers share. So the
per-subscriber work is assembling a dict and running Jinja.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from typing import Any

from markupsafe import Markup, escape

from newsletter.ranking.engine import Explanation, Feature
from newsletter.ranking.text import Acronyms
from newsletter.render.highlight import Highlighter

EXCERPT_CHARS = 300
MAX_AUTHORS = 3
EXCERPT_CACHE = 20_000  # (paper, matched terms) pairs kept; about 1 KB each
HL_STYLE = "background-color:#fff1a8;color:#1f2328;padding:0 1px;"  # inline: emails need it
_SENTENCE = re.compile(r"(?<=[.!?])\s+")


@dataclass(frozen=True, slots=True)
class PaperInfo:
    """What the email shows of a paper, independent of who receives it."""

    id: str
    title: str
    abstract: str
    url: str
    authors: str
    date: str
    upvotes: int
    code_url: str
    project_url: str

    @classmethod
    def of(cls, e: Any, fallback_url: str) -> PaperInfo:
        names = list(e.authors or [])
        shown = ", ".join(names[:MAX_AUTHORS])
        if len(names) > MAX_AUTHORS:
            shown += f" +{len(names) - MAX_AUTHORS} more"
        return cls(
            id=e.id, title=e.title, abstract=e.abstract or "", url=e.url or fallback_url,
            authors=shown, date=format_date(e.published), upvotes=int(e.upvotes or 0),
            code_url=e.code_url or "", project_url=e.project_url or "",
        )


def format_date(d: dt.date | None) -> str:
    return f"{d:%b} {d.day}, {d.year}" if d else ""


def excerpt_window(text: str, spans: list[tuple[int, int]], limit: int = EXCERPT_CHARS) -> tuple[
        int, int]:
    """A 2-3 line window: from the sentence holding the first highlight, cut at a word."""
    if len(text) <= limit:
        return 0, len(text)
    start = 0
    if spans:
        first = spans[0][0]
        for m in _SENTENCE.finditer(text, 0, first):
            start = m.end()
        if first - start > limit // 2:
            start = text.rfind(" ", 0, first - 40) + 1
    end = start + limit
    if end < len(text):
        cut = text.rfind(" ", start, end)
        end = cut if cut > start else end
    return start, min(end, len(text))


def marked(text: str, spans: list[tuple[int, int]], start: int = 0, end: int | None = None,
           ) -> Markup:
    """``text[start:end]`` escaped, with ``spans`` wrapped in <mark>."""
    end = len(text) if end is None else end
    out: list[str] = []
    pos = start
    for a, b in spans:
        if b <= start or a >= end:
            continue
        a, b = max(a, start), min(b, end)
        out.append(str(escape(text[pos:a])))
        out.append(f'<mark class="hl" style="{HL_STYLE}">{escape(text[a:b])}</mark>')
        pos = b
    out.append(str(escape(text[pos:end])))
    return Markup("".join(out))


@dataclass
class DigestBuilder:
    """Per-edition state for building subscriber contexts."""

    papers: list[PaperInfo]
    acronyms: Acronyms
    _excerpts: dict[tuple[int, tuple[Feature, ...]], tuple[Markup, str]] = field(
        default_factory=dict)
    _highlighters: dict[int, Highlighter] = field(default_factory=dict)

    def excerpt(self, index: int, features: tuple[Feature, ...]) -> tuple[Markup, str]:
        key = (index, features)
        hit = self._excerpts.get(key)
        if hit is None:
            text = self.papers[index].abstract
            spans: list[tuple[int, int]] = []
            if features:
                hl = self._highlighters.get(index)
                if hl is None:
                    hl = self._highlighters[index] = Highlighter(text, self.acronyms)
                spans = hl.spans(features)
            a, b = excerpt_window(text, spans)
            suffix = "…" if b < len(text) else ""
            prefix = "…" if a > 0 else ""
            html = Markup(prefix) + marked(text, spans, a, b) + Markup(suffix)
            hit = self._excerpts[key] = (html, prefix + text[a:b] + suffix)
            if len(self._excerpts) > EXCERPT_CACHE:  # bounded: memory must not grow with
                self._excerpts.clear()               # the number of subscribers
        return hit

    def paper(self, index: int, ex: Explanation | None) -> PaperView:
        info = self.papers[index]
        features = tuple(ex.features) if ex else ()
        excerpt_html, excerpt_text = self.excerpt(index, features)
        return PaperView(info, excerpt_html, excerpt_text, ex.why if ex else "",
                         [t for t, _ in ex.matched] if ex else [])


class PaperView:
    """One paper in one email. Attributes, not a dict: Jinja looks attributes up first,
    and this lookup runs a dozen times per paper per subscriber."""

    __slots__ = ("id", "title", "url", "authors", "date", "upvotes", "code_url",
                 "project_url", "excerpt", "excerpt_text", "why", "matched")

    def __init__(self, info: PaperInfo, excerpt: Markup, excerpt_text: str, why: str,
                 matched: list[str]) -> None:
        self.id, self.title, self.url, self.authors = info.id, info.title, info.url, info.authors
        self.date, self.upvotes = info.date, info.upvotes
        self.code_url, self.project_url = info.code_url, info.project_url
        self.excerpt, self.excerpt_text, self.why, self.matched = (excerpt, excerpt_text, why,
                                                                   matched)
