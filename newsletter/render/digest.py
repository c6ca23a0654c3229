"""The per-subscriber digest: picks turned into what the templates show.

Everything that does not depend on the subscriber (a paper's link, author
line, date) is computed once per edition; excerpts with highlighted terms are
cached per (paper, matched terms), which many subscribers share. So the
per-subscriber work is assembling a dict and running Jinja.
"""

from __future__ import annotations

import bisect
import dataclasses
import datetime as dt
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from markupsafe import Markup, escape

from newsletter.ranking.engine import Explanation, Feature, section_of
from newsletter.ranking.text import Acronyms, raw_tokens
from newsletter.render.highlight import Highlighter
from newsletter.urls import safe_url

EXCERPT_CHARS = 300
TITLE_CHARS = 300  # a title longer than this is cut (with an ellipsis) in the body
MAX_AUTHORS = 3
EXCERPT_CACHE = 20_000  # (paper, matched terms) pairs kept; about 1 KB each
# Highlights are <strong> with an inline background: every client shows bold, and the
# background where it can (Outlook on Windows ignores <mark>, not a styled <strong>).
# A line end before the style keeps an excerpt's lines short in the 7-bit HTML part.
HL_STYLE = "background-color:#fff1a8;color:#1f2328;font-weight:600;padding:0 1px;"
_SENTENCE = re.compile(r"(?<=[.!?])\s+")
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


def sentence_ends(text: str) -> list[int]:
    """Where each sentence after the first starts (for ``excerpt_window``)."""
    return [m.end() for m in _SENTENCE.finditer(text)]


def excerpt_window(text: str, spans: list[tuple[int, int]], limit: int = EXCERPT_CHARS,
                   ends: list[int] | None = None) -> tuple[int, int]:
    """A 2-3 line window: from the sentence holding the first highlight, cut at a word.
    ``ends``: ``sentence_ends(text)``, when made once for the text."""
    if len(text) <= limit:
        return 0, len(text)
    start = 0
    if spans:
        first = spans[0][0]
        if ends is None:
            ends = sentence_ends(text)
        i = bisect.bisect_right(ends, first)
        start = ends[i - 1] if i else 0
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
    # Escaping goes character by character: when the window has nothing to escape, no
    # piece of it has (one call instead of two a highlight, each making a Markup).
    plain = escape(text[start:end]) == text[start:end]
    out: list[str] = []
    pos = start
    for a, b in spans:
        if b <= start or a >= end:
            continue
        a, b = max(a, start), min(b, end)
        if plain:
            out.append(text[pos:a])
            out.append(f'<strong class="hl"\nstyle="{HL_STYLE}">{text[a:b]}</strong>')
        else:
            out.append(str(escape(text[pos:a])))
            out.append(f'<strong class="hl"\nstyle="{HL_STYLE}">{escape(text[a:b])}</strong>')
        pos = b
    out.append(text[pos:end] if plain else str(escape(text[pos:end])))
    return Markup("".join(out))


def _marked_excerpt(text: str, spans: list[tuple[int, int]], a: int, b: int) -> Markup:
    """The excerpt's HTML: ``marked`` with the ellipses (as references: the HTML stays
    ASCII, see render/mime.py), made as one string."""
    return ascii_html("".join(("&#8230;" if a > 0 else "", marked(text, spans, a, b),
                               "&#8230;" if b < len(text) else "")))


def ascii_html(html: str) -> Markup:
    """HTML with its non-ASCII characters as character references: the same page, and
    an email made of such pieces goes into a 7-bit part as it is (render/mime.py)."""
    return Markup(html if html.isascii() else html.encode("ascii", "xmlcharrefreplace").decode())


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
        html.append(Markup(f'<strong class="hl"\nstyle="{HL_STYLE}">{name}</strong>')
                    if i in hits else name)
    more = len(names) > len(shown)
    out_html = ascii_html(Markup(", ").join(html) + (Markup(" et al.") if more else ""))
    text = ", ".join(names[i] for i in shown) + (" et al." if more else "")
    return out_html, text


@dataclass
class DigestBuilder:
    """Per-edition state for building subscriber contexts."""

    papers: list[PaperInfo]
    acronyms: Acronyms
    _excerpts: dict[tuple[int, ...], tuple[tuple[Markup, str], tuple[Feature, ...], bool]] = (
        field(default_factory=dict))
    _highlighters: dict[int, Highlighter] = field(default_factory=dict)
    _by_spans: dict[tuple[int, int, int, tuple[tuple[int, int], ...]],
                    tuple[Markup, str]] = field(default_factory=dict)
    _fixed: dict[int, PaperFixed] = field(default_factory=dict)
    _sentences: dict[int, list[int]] = field(default_factory=dict)
    _analyzed: dict[str, list[tuple[str, str]]] = field(default_factory=dict)

    def excerpt(self, index: int, features: tuple[Feature, ...]) -> tuple[Markup, str]:
        return self._excerpt(index, features)[0]

    def _excerpt(self, index: int, features: tuple[Feature, ...]) -> tuple[
            tuple[Markup, str], tuple[Feature, ...], bool]:
        """(excerpt HTML and text, the features, whether one is an author), cached by
        the features' identities: hashing them (nested tuples) cost more than the rest
        of a cache hit. The entry holds the features, so no other object can take one
        of their ids while it is kept."""
        key = (index, *map(id, features))
        entry = self._excerpts.get(key)
        if entry is None:
            text = self.papers[index].abstract
            spans: list[tuple[int, int]] = []
            lead: list[tuple[int, int]] = []
            if features:
                hl = self._highlighter(index)
                spans = hl.joined(features)
                # the window opens on the strongest term's first place (the explanation
                # lists it first: the section the paper is under), not on whichever
                # term comes first in the text: a weaker term early showed only itself
                lead = hl.joined(features[:1]) if len(features) > 1 else spans
            a, b = excerpt_window(text, lead or spans, ends=self._ends(index))
            # Many sets of terms show the same excerpt of a paper (most terms of a
            # profile do not occur in it, and a highlight outside the window shows
            # nowhere): the excerpt is made once per window and the highlights in it.
            inside = tuple([s for s in spans if s[1] > a and s[0] < b])
            shape = (index, a, b, inside)
            hit = self._by_spans.get(shape)
            if hit is None:
                # "..." in the text part: ASCII, so most text parts need no encoding
                # (render/mime.py: seven_bit_text); the HTML has its ellipsis
                suffix = "..." if b < len(text) else ""
                prefix = "..." if a > 0 else ""
                hit = self._by_spans[shape] = (_marked_excerpt(text, list(inside), a, b),
                                               prefix + text[a:b] + suffix)
            if len(self._excerpts) >= EXCERPT_CACHE:  # bounded: memory must not grow with
                self._excerpts.clear()                # the number of subscribers
            entry = self._excerpts[key] = (hit, features,
                                           any(f.kind == "author" for f in features))
            if len(self._by_spans) > EXCERPT_CACHE:
                self._by_spans.clear()
        return entry

    def _highlighter(self, index: int) -> Highlighter:
        """The paper's highlighter, made on first use (or by ``prepare``)."""
        hl = self._highlighters.get(index)
        if hl is None:
            hl = self._highlighters[index] = Highlighter(self.papers[index].abstract,
                                                         self.acronyms, self._analyzed)
        return hl

    def _ends(self, index: int) -> list[int]:
        """Where the paper's abstract's sentences start (``sentence_ends``), made once."""
        ends = self._sentences.get(index)
        if ends is None:
            ends = self._sentences[index] = sentence_ends(self.papers[index].abstract)
        return ends

    def prepare(self, indices: Iterable[int]) -> None:
        """These papers' highlighters and sentence ends, made now rather than at each
        paper's first excerpt. Delivery in several processes calls this before it
        forks, for the papers the planned emails show, so each process inherits them:
        otherwise each made its own (0.15-0.3 s of CPU for 281 abstracts, about as long
        as 200 emails took to render)."""
        for index in indices:
            self._highlighter(index)
            self._ends(index)

    def share_analysis(self, other: DigestBuilder) -> None:
        """Use ``other``'s highlighters, sentence ends and word analyses (the same
        abstracts, in the same order): what a renderer of another day reads alike."""
        self._highlighters = other._highlighters
        self._sentences = other._sentences
        self._analyzed = other._analyzed

    def paper(self, index: int, ex: Explanation | None) -> PaperView:
        info = self.papers[index]
        fixed = self._fixed.get(index)
        if fixed is None:  # what does not depend on the subscriber, made once a paper
            fixed = self._fixed[index] = PaperFixed(info)
        features = tuple(ex.features) if ex else ()
        (excerpt_html, excerpt_text), _, by_author = self._excerpt(index, features)
        if by_author:
            authors_html, authors_text = author_line(info.author_names, features)
        else:
            authors_html, authors_text = fixed.authors, fixed.authors_text
        matched = [t for t, _ in ex.matched] if ex else []
        return PaperView(fixed, excerpt_html, excerpt_text, ex.why if ex else "", matched,
                         authors_html, authors_text)


class PaperFixed:
    """What a paper shows the same way in every email: made once per paper and
    edition, shared by every subscriber's view of it."""

    __slots__ = ("id", "title", "title_short", "url", "authors", "authors_text", "date",
                 "upvotes", "code_url", "project_url", "abs_url", "pdf_url", "image_url",
                 "links", "featured")

    def __init__(self, info: PaperInfo) -> None:
        self.id, self.title, self.url = info.id, info.title, info.url
        self.title_short = info.title_short or info.title
        self.authors, self.authors_text = ascii_html(escape(info.authors)), info.authors
        self.date, self.upvotes = info.date, info.upvotes
        self.code_url, self.project_url = info.code_url, info.project_url
        self.abs_url, self.pdf_url, self.image_url = info.abs_url, info.pdf_url, info.image_url
        self.links = tuple(paper_links(info))
        self.featured = info.featured


class PaperView:
    """One paper in one email. Attributes, not a dict: Jinja looks attributes up first.
    What differs between subscribers is set here; the rest (``id``, ``title``, ``url``,
    ``links``…) is read from the paper's ``PaperFixed``, made once, so a view costs a
    handful of assignments.

    ``links`` is the row under each paper (label, URL), built in ``paper_links`` so the
    HTML and text parts show the same links; more per-paper links (feedback, say) are
    added there, or to the row in ``partials/paper.html``."""

    __slots__ = ("fixed", "authors", "authors_text", "excerpt", "excerpt_text", "why",
                 "matched", "group", "blocks")

    def __init__(self, info: PaperInfo | PaperFixed, excerpt: Markup, excerpt_text: str,
                 why: str, matched: list[str], authors: Markup | None = None,
                 authors_text: str | None = None) -> None:
        fixed = info if isinstance(info, PaperFixed) else PaperFixed(info)
        self.fixed = fixed  # also the key of caches of per-paper pieces (render/blocks.py)
        self.blocks: list[str] = []  # its split-off blocks, filled in (render/blocks.py)
        self.authors = authors if authors is not None else fixed.authors
        self.authors_text = authors_text if authors_text is not None else fixed.authors_text
        self.excerpt, self.excerpt_text, self.why, self.matched = (excerpt, excerpt_text, why,
                                                                   matched)
        self.group = section_of(matched[0]) if matched else ""

    def __getattr__(self, name: str) -> Any:
        if name == "fixed":  # not set yet: never look it up in itself
            raise AttributeError(name)
        return getattr(self.fixed, name)


def paper_links(info: PaperInfo) -> list[tuple[str, str]]:
    """The row of links under a paper: each only when known."""
    links = [("Abstract", info.abs_url or info.url)]
    if info.pdf_url:
        links.append(("PDF", info.pdf_url))
    if info.code_url:
        links.append(("Code", info.code_url))
    if info.project_url:
        links.append(("Project page", info.project_url))
    return links


def group_papers(papers: list[PaperView]) -> list[tuple[str, list[PaperView]]]:
    """Papers under the profile term that matched each best (``section_of``: whichever
    related words it matched through), groups in order of their best paper (so the top
    pick still leads). One group when only one term matched."""
    groups: dict[str, list[PaperView]] = {}
    for p in papers:
        groups.setdefault(p.group, []).append(p)
    return list(groups.items())


def period_of(weekly: bool, gap: bool = False) -> str:
    """The time an email covers, in words: a weekly email the week's papers, a weekdays
    reader's Monday email (``gap``) the papers since Friday's, else the day's."""
    return "this week" if weekly else "since Friday" if gap else "today"


def summary_line(papers: list[PaperView], trending: list[PaperView], weekly: bool = False,
                 groups: list[tuple[str, list[PaperView]]] | None = None, *,
                 period: str = "") -> str:
    """The opening line: "7 new papers for you: state space models (4), mixture of
    experts (3)" ("7 papers for you this week: ..." in a weekly email). ``groups``:
    ``group_papers(papers)``, when already made; ``period``: ``period_of``'s words. Made
    with its period, not rewritten after: a reader's term was rewritten too ("today
    show transcripts" became "since Friday show transcripts")."""
    return _summary(papers, trending, groups, weekly, period or period_of(weekly))


def _summary(papers: list[PaperView], trending: list[PaperView],
             groups: list[tuple[str, list[PaperView]]] | None = None,
             weekly: bool = False, period: str = "today") -> str:
    if papers:
        n = len(papers)
        head = (f"{n} {'' if weekly else 'new '}paper{'' if n == 1 else 's'} for you"
                f"{' this week' if weekly else ''}")
        counts = [(term or "other", len(ps))
                  for term, ps in (groups if groups is not None else group_papers(papers))]
        if len(counts) == 1 and counts[0][0] == "other":
            return head
        return head + ": " + ", ".join(f"{t} ({c})" for t, c in counts)
    if trending:
        n = len(trending)
        return (f"Nothing matched your keywords {period}; {n} paper{'' if n == 1 else 's'} "
                "trending instead")
    return f"Nothing new matched your keywords {period}"
