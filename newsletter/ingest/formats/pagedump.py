"""The daily-papers page dump: the text of a listing page, as in ``shared/seeds``.

Layout: a few header lines, the page's date (``Dec 26``), then per paper a title
paragraph, an abstract paragraph and, in one variant, a meta paragraph::

      • 8 authors          (or an organisation line)
    ·
    Apr 11, 2024 12        (date; a trailing number is the upvote count)

Dates without a year (``Aug 5``) are in the page's year. The page does not print
its year; the site prints the year only for earlier years, so the page's year is
one after the latest year printed (never later than today's year), or today's.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from typing import ClassVar

from newsletter.errors import SourceError
from newsletter.ingest.formats.base import Skipped
from newsletter.ingest.formats.jsonutil import as_int
from newsletter.ingest.papers import Paper

MONTHS = {m: i for i, m in enumerate(
    ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"], 1)}
_DATE = re.compile(r"^(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) (\d{1,2})"
                   r"(?:, (\d{4}))?(?: (\d+))?$")
_AUTHORS = re.compile(r"^\s*•\s*(\d+) authors?\s*$")
_HEADER = {"new", "get trending papers in your email inbox!", "subscribe", "daily papers",
           "byak and the research community"}
MAX_TITLE = 400  # a longer paragraph is prose, not a title


@dataclass
class _Block:
    lineno: int
    lines: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return " ".join(x.strip() for x in self.lines)

    @property
    def is_meta(self) -> bool:
        return any(x.strip() == "·" for x in self.lines) or bool(
            len(self.lines) == 1 and _AUTHORS.match(self.lines[0]))


def _blocks(text: str) -> list[_Block]:
    blocks: list[_Block] = []
    current: _Block | None = None
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip():
            if current is None:
                current = _Block(n)
                blocks.append(current)
            current.lines.append(line)
        else:
            current = None
    return blocks


def _looks_like_title(block: _Block) -> bool:
    t = block.text
    return len(t) <= MAX_TITLE and not (t.endswith(".") and len(t.split()) > 25)


class PageDumpSource:
    kind: ClassVar[str] = "pagedump"

    def __init__(self, today: dt.date | None = None) -> None:
        self.today = today

    def sniff(self, text: str) -> bool:
        head = text[:3000]
        lines = [x.strip().lower() for x in head.splitlines() if x.strip()][:12]
        if sum(1 for x in lines if x in _HEADER) >= 2:
            return True
        blocks = _blocks(text[:20000])
        return len(blocks) >= 2 and any(b.is_meta for b in blocks)

    def parse(self, text: str, origin: str, skipped: list[Skipped] | None = None) -> list[Paper]:
        """The page's layout is one structure, not independent items: any problem in
        it is an error whatever ``skipped`` says."""
        blocks = _blocks(text)
        # Skip the page header and take the page date (the day it featured them).
        i = 0
        page_day: tuple[int, int] | None = None
        while i < len(blocks) and len(blocks[i].lines) == 1:
            line = blocks[i].text
            m = _DATE.match(line)
            if line.lower() in _HEADER or (m and not m.group(3) and not m.group(4)):
                if m:
                    page_day = (MONTHS[m.group(1)], int(m.group(2)))
                i += 1
                continue
            break
        year = self._page_year(text)
        featured = None
        if page_day:
            try:
                featured = dt.date(year, *page_day)
            except ValueError:
                featured = None
        papers: list[tuple[int, Paper]] = []
        current: Paper | None = None
        for block in blocks[i:]:
            where = f"{origin}:{block.lineno}"
            if block.is_meta:
                if current is None:
                    raise SourceError(where, "author/date lines with no paper title before them")
                self._meta(current, block, year, where)
                current = None  # a meta block closes the paper
                continue
            if current is not None and not current.abstract:
                current.abstract = block.text  # the page always follows a title with its abstract
                continue
            if not _looks_like_title(block):
                raise SourceError(where, "a paragraph too long for a title where a title should be")
            current = Paper(title=block.text, source=self.kind, featured=featured)
            papers.append((block.lineno, current))
        if not papers:
            raise SourceError(origin, "no papers found in the page dump")
        return [p.finish() for _, p in papers]

    def _page_year(self, text: str) -> int:
        today = self.today or dt.date.today()
        years = [int(y) for y in re.findall(r"^[A-Z][a-z]{2} \d{1,2}, (\d{4})", text, re.M)]
        return min(max(years) + 1, today.year) if years else today.year

    def _meta(self, paper: Paper, block: _Block, year: int, where: str) -> None:
        for raw in block.lines:
            line = raw.strip()
            if line == "·":
                continue
            m = _DATE.match(line)
            if m:
                month, day = MONTHS[m.group(1)], int(m.group(2))
                try:
                    paper.published = dt.date(int(m.group(3) or year), month, day)
                except ValueError:
                    raise SourceError(where, f"not a real date: {line!r}") from None
                if m.group(4):
                    paper.upvotes = as_int(m.group(4), where, "upvotes")
                continue
            if _AUTHORS.match(raw):
                continue
            # an organisation line ("openbmb OpenBMB"): the submitting team
            paper.authors = paper.authors or [line]
