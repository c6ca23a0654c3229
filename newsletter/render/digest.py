"""The per-subscriber digest: picks turned into what the templates show.

Everything that does not depend on the subscriber (a paper's link, author
line, date) is computed once per edition; excerpts with highlighted terms are
cached per (paper, matched terms), which many subscribers share. So the
per-subscriber work is assembling a dict and running Jinja.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from markupsafe import Markup, escape

from newsletter.ranking.engine import Explanation, Feature
from newsletter.ranking.text import Acronyms, raw_tokens
from newsletter.render.highlight import Highlighter
from newsletter.urls import safe_url

EXCERPT_CHARS = 300
TITLE_CHARS = 300  # a title longer than this is cut (with an ellipsis) in the body
MAX_AUTHORS = 3
EXCERPT_CACHE = 20_000  # (paper, matched terms) pairs kept; about 1 KB each
# Highlights are <strong> with an inline background: every client shows bold, and the
# background where it can (Outlook on Windows ignores <mark>, not a styled <strong>).
HL_STYLE = "background-color:#fff1a8;color:#1f2328;font-weight:600;padding:0 1px;"
_SENTENCE = re.compile(r"(?<=[.!?])\s+")
# Between two highlighted words: spaces, hyphens, slashes. Such spans join into one phrase.
_JOINER = re.compile(r"[\s\-\u2010-\u2015/]*")
_ARXIV_NEW = re.compile(r"\d{4}\.\d{4,5}")
_ARXIV_OLD = re.compile(r"[a-z][a-z\-]+(?:\.[A-Z]{2})?/\d{7}")


def cap(text: str, limit: int = TITLE_CHARS) -> str:
    """``text`` cut at a word to at most ``limit`` characters, with an ellipsis."""
    if len(text) <= limit:
        return text
    cut = text.rfind(" ", 0, limit)
    return text[: cut if cut > limit // 2 else limit - 1].rstrip() + "…"


def arxiv_of(e: Any) -> str:
    """The paper's arXiv id, from the stored column or an id that is one."""
    found = getattr(e, "arxiv_id", None) or ""
    if not found and (_ARXIV_NEW.fullmatch(e.id) or _ARXIV_OLD.fullmatch(e.id)):
        found = e.id
    return str(found)


@dataclass(frozen=True, slots=True)
class PaperInfo:
    """What the email shows of a paper, independent of who receives it. Every URL here
    has been through ``safe_url``: http(s) only, whatever was stored."""

    id: str
    title: str
    abstract: str
    url: str
    authors: str
    date: str
    upvotes: int
    code_url: str
    project_url: str
    author_names: tuple[str, ...] = ()
    title_short: str = ""
    abs_url: str = ""
    pdf_url: str = ""
    arxiv_id: str = ""
    image_url: str = ""
    featured: str = ""  # "Featured today" / "Featured yesterday": the source's own listing

    @classmethod
    def of(cls, e: Any, fallback_url: str, day: dt.date | None = None) -> PaperInfo:
        names = tuple(e.authors or [])
        shown = ", ".join(names[:MAX_AUTHORS])
        if len(names) > MAX_AUTHORS:
            shown += " et al."
        arxiv = arxiv_of(e)
        abs_url = pdf_url = ""
        if arxiv:
            abs_url = f"https://arxiv.org/abs/{arxiv}"
            pdf_url = f"https://arxiv.org/pdf/{arxiv}"
        url = safe_url(e.url) or abs_url or safe_url(fallback_url)
        return cls(
            id=e.id, title=e.title, abstract=e.abstract or "", url=url,
            authors=shown, date=format_date(e.published), upvotes=int(e.upvotes or 0),
            code_url=safe_url(e.code_url), project_url=safe_url(e.project_url),
            author_names=names, title_short=cap(e.title), abs_url=abs_url or url,
            pdf_url=pdf_url, arxiv_id=arxiv, featured=featured_label(
                getattr(e, "featured", None), day),
        )

    def with_image(self, pattern: str) -> PaperInfo:
        """The thumbnail URL from ``[render] image_url`` (``{arxiv_id}``, ``{id}``)."""
        if not pattern or not self.arxiv_id:
            return self
        url = safe_url(pattern.format(arxiv_id=self.arxiv_id, id=quote(self.id, safe="")))
        return dataclasses.replace(self, image_url=url)


def featured_label(featured: dt.date | None, day: dt.date | None) -> str:
    """What the email says of a paper its source listed as featured on ``featured``:
    only when that is the edition's day or the day before (an older mark is old news)."""
    if featured is None or day is None:
        return ""
    if featured == day:
        return "Featured today"
    if featured == day - dt.timedelta(days=1):
        return "Featured yesterday"
    return ""


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
    """``text[start:end]`` escaped, with ``spans`` wrapped in a highlight."""
    end = len(text) if end is None else end
    out: list[str] = []
    pos = start
    for a, b in spans:
        if b <= start or a >= end:
            continue
        a, b = max(a, start), min(b, end)
        out.append(str(escape(text[pos:a])))
        out.append(f'<strong class="hl" style="{HL_STYLE}">{escape(text[a:b])}</strong>')
        pos = b
    out.append(str(escape(text[pos:end])))
    return Markup("".join(out))


def join_spans(text: str, spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sorted spans, with neighbours separated only by spaces or hyphens joined: a
    phrase ("state-space model") is one highlight, never three fragments."""
    out: list[tuple[int, int]] = []
    for a, b in sorted(spans):
        if out and (a <= out[-1][1] or _JOINER.fullmatch(text, out[-1][1], a)):
            out[-1] = (out[-1][0], max(b, out[-1][1]))
        else:
            out.append((a, b))
    return out


def author_line(names: tuple[str, ...], features: tuple[Feature, ...]) -> tuple[Markup, str]:
    """First three authors, plus any the subscriber follows (``author:``) further down,
    then "et al."; followed authors are highlighted."""
    wanted = [set(f.variants[0]) for f in features if f.kind == "author" and f.variants]
    hits = {i for i, n in enumerate(names)
            if wanted and any(w <= set(raw_tokens(n)) for w in wanted)}
    shown = [i for i in range(len(names)) if i < MAX_AUTHORS or i in hits]
    html = []
    for i in shown:
        name = escape(names[i])
        html.append(Markup(f'<strong class="hl" style="{HL_STYLE}">{name}</strong>')
                    if i in hits else name)
    more = len(names) > len(shown)
    out_html = Markup(", ").join(html) + (Markup(" et al.") if more else Markup(""))
    text = ", ".join(names[i] for i in shown) + (" et al." if more else "")
    return out_html, text


@dataclass
class DigestBuilder:
    """Per-edition state for building subscriber contexts."""

    papers: list[PaperInfo]
    acronyms: Acronyms
    _excerpts: dict[tuple[int, tuple[Feature, ...]], tuple[Markup, str]] = field(
        default_factory=dict)
    _highlighters: dict[int, Highlighter] = field(default_factory=dict)
    _by_spans: dict[tuple[int, tuple[tuple[int, int], ...]], tuple[Markup, str]] = field(
        default_factory=dict)

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
                spans = join_spans(text, hl.spans(features))
            # Many sets of terms highlight the same words of a paper (most terms of a
            # profile do not occur in it): the excerpt is made once per highlight.
            shape = (index, tuple(spans))
            hit = self._by_spans.get(shape)
            if hit is None:
                a, b = excerpt_window(text, spans)
                suffix = "…" if b < len(text) else ""
                prefix = "…" if a > 0 else ""
                html = Markup(prefix) + marked(text, spans, a, b) + Markup(suffix)
                hit = self._by_spans[shape] = (html, prefix + text[a:b] + suffix)
            self._excerpts[key] = hit
            if len(self._excerpts) > EXCERPT_CACHE:  # bounded: memory must not grow with
                self._excerpts.clear()               # the number of subscribers
            if len(self._by_spans) > EXCERPT_CACHE:
                self._by_spans.clear()
        return hit

    def paper(self, index: int, ex: Explanation | None) -> PaperView:
        info = self.papers[index]
        features = tuple(ex.features) if ex else ()
        excerpt_html, excerpt_text = self.excerpt(index, features)
        if any(f.kind == "author" for f in features):
            authors_html, authors_text = author_line(info.author_names, features)
        else:
            authors_html, authors_text = Markup(escape(info.authors)), info.authors
        matched = [t for t, _ in ex.matched] if ex else []
        return PaperView(info, excerpt_html, excerpt_text, ex.why if ex else "", matched,
                         authors_html, authors_text)


class PaperView:
    """One paper in one email. Attributes, not a dict: Jinja looks attributes up first,
    and this lookup runs a dozen times per paper per subscriber.

    ``links`` is the row under each paper (label, URL), built here so the HTML and
    text parts show the same links; more per-paper links (feedback, say) are added
    to that list, or to the row in ``partials/paper.html``."""

    __slots__ = ("id", "title", "title_short", "url", "authors", "authors_text", "date",
                 "upvotes", "code_url", "project_url", "abs_url", "pdf_url", "image_url",
                 "excerpt", "excerpt_text", "why", "matched", "group", "links", "featured")

    def __init__(self, info: PaperInfo, excerpt: Markup, excerpt_text: str, why: str,
                 matched: list[str], authors: Markup | None = None,
                 authors_text: str | None = None) -> None:
        self.id, self.title, self.url = info.id, info.title, info.url
        self.title_short = info.title_short or info.title
        self.authors = authors if authors is not None else Markup(escape(info.authors))
        self.authors_text = authors_text if authors_text is not None else info.authors
        self.date, self.upvotes = info.date, info.upvotes
        self.code_url, self.project_url = info.code_url, info.project_url
        self.abs_url, self.pdf_url, self.image_url = info.abs_url, info.pdf_url, info.image_url
        self.featured = info.featured
        self.excerpt, self.excerpt_text, self.why, self.matched = (excerpt, excerpt_text, why,
                                                                   matched)
        self.group = matched[0] if matched else ""
        links = [("Abstract", info.abs_url or info.url)]
        if info.pdf_url:
            links.append(("PDF", info.pdf_url))
        if info.code_url:
            links.append(("Code", info.code_url))
        if info.project_url:
            links.append(("Project page", info.project_url))
        self.links = links


def group_papers(papers: list[PaperView]) -> list[tuple[str, list[PaperView]]]:
    """Papers under the profile term that matched each best, groups in order of their
    best paper (so the top pick still leads). One group when only one term matched."""
    groups: dict[str, list[PaperView]] = {}
    for p in papers:
        groups.setdefault(p.group, []).append(p)
    return list(groups.items())


def summary_line(papers: list[PaperView], trending: list[PaperView], weekly: bool = False
                 ) -> str:
    """The opening line: "7 new papers for you: state space models (4), mixture of
    experts (3)" ("7 papers for you this week: ..." in a weekly email)."""
    line = _summary(papers, trending)
    if weekly:
        line = (line.replace(" new paper", " paper", 1).replace(" for you", " for you this week", 1)
                .replace("today", "this week"))
    return line


def _summary(papers: list[PaperView], trending: list[PaperView]) -> str:
    if papers:
        n = len(papers)
        head = f"{n} new paper{'' if n == 1 else 's'} for you"
        counts = [(term or "other", len(ps)) for term, ps in group_papers(papers)]
        if len(counts) == 1 and counts[0][0] == "other":
            return head
        return head + ": " + ", ".join(f"{t} ({c})" for t, c in counts)
    if trending:
        n = len(trending)
        return (f"Nothing matched your keywords today; {n} paper{'' if n == 1 else 's'} "
                "trending instead")
    return "Nothing new matched your keywords today"
