"""The normalized paper record every source produces, and the rules that make ids stable.

A paper's id is its arXiv id without version wherever one can be found (in the
source's id, any of its URLs, or the text), else ``t:`` plus a hash of the
normalized title. That is what lets the same paper, seen in two sources or on
two days, be one entry: the arXiv listing, the daily-papers API and a page dump
all agree on the arXiv id even when they disagree on everything else.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import logging
import re
import unicodedata
from collections.abc import Iterable
from typing import Any

from newsletter.ingest.authors import name_and_affiliations
from newsletter.plaintext import UNWRITABLE
from newsletter.urls import safe_url

log = logging.getLogger("newsletter.ingest")

# New-style (2508.13426v2) and old-style (hep-th/9901001v1, math.GT/0309136) ids.
_NEW_ID = r"(?<![\d.])(\d{4}\.\d{4,5})(?:v(\d+))?(?![\d])"
_OLD_ID = r"\b([a-z][a-z\-]+(?:\.[A-Z]{2})?/\d{7})(?:v(\d+))?\b"
ARXIV_ID_RE = re.compile(f"{_NEW_ID}|{_OLD_ID}")
_ARXIV_URL_RE = re.compile(
    r"(?:arxiv\.org/(?:abs|pdf|html)|/papers)/("
    + _NEW_ID[len("(?<![\\d.])") :]
    + r"|"
    + _OLD_ID[2:]
    + r")",
    re.IGNORECASE,
)
_ARXIV_PREFIX_RE = re.compile(r"(?:arXiv:|oai:arXiv\.org:)\s*(\S+)", re.IGNORECASE)
_WS_RE = re.compile(r"\s+")
MAX_COUNT = 2**31 - 1  # the largest count stored (every database's integer holds it)
# What is stored of a paper's text at most. Far above any real paper (arXiv caps a
# title near 300 characters and an abstract at 1,920; a collaboration paper lists a
# few thousand authors), and what a hostile or broken feed's megabyte field is cut
# to, so it is not stored, indexed, ranked and mailed whole every day.
MAX_TITLE = 1_000
MAX_ABSTRACT = 20_000
MAX_NAME = 300  # an author's name, a keyword, an affiliation
MAX_NAMES = 10_000  # authors of one paper
MAX_KEYWORDS = 100
MAX_AFFILIATIONS = 20  # of one author


@dataclasses.dataclass(slots=True)
class Paper:
    """One paper as a source saw it. ``upvotes=None`` means "unknown", not zero."""

    title: str
    abstract: str = ""
    authors: list[str] = dataclasses.field(default_factory=list)
    published: dt.date | None = None
    upvotes: int | None = None
    url: str = ""
    code_url: str = ""
    project_url: str = ""
    keywords: list[str] = dataclasses.field(default_factory=list)
    arxiv_id: str = ""
    version: int = 0
    source: str = ""
    id: str = ""
    # The day a listing featured it (daily papers); ``published`` is the arXiv date.
    featured: dt.date | None = None
    # Author name -> affiliations, kept out of ``authors`` so names match profiles.
    affiliations: dict[str, list[str]] = dataclasses.field(default_factory=dict)

    def finish(self) -> Paper:
        """Clean the text fields and settle the id. Returns self for chaining."""
        self.source = clean_text(self.source)  # (named in messages and log lines)
        cut: list[str] = []
        self.title = _at_most(clean_text(self.title), MAX_TITLE, "title", cut)
        self.abstract = _at_most(clean_text(self.abstract), MAX_ABSTRACT, "abstract", cut)
        # counts no database integer holds (a feed's 25-digit "upvotes", an arXiv id's
        # version) are unknown, not a failed store of every source's papers
        if self.upvotes is not None and abs(self.upvotes) > MAX_COUNT:
            self.upvotes = None
        if abs(self.version) > MAX_COUNT:
            self.version = 0
        self.authors = self._clean_authors(cut)
        keywords = [_at_most(k, MAX_NAME, "keyword", cut)
                    for k in (clean_text(x) for x in self.keywords) if k]
        self.keywords = _few(keywords, MAX_KEYWORDS, "keywords", cut)
        if cut:
            log.warning("%s: paper %r: cut to the stored limits: %s", self.source or "ingest",
                        self._named(), ", ".join(dict.fromkeys(cut)))
        self._keep_web_links()
        if not self.arxiv_id:
            for candidate in (self.url, self.project_url):
                found = arxiv_id_from_url(candidate)
                if found:
                    self.arxiv_id, self.version = found
                    break
        if self.arxiv_id:
            self.id = self.arxiv_id
            if not self.url:
                self.url = f"https://arxiv.org/abs/{self.arxiv_id}"
        else:
            self.id = title_id(self.title)
        return self

    def _keep_web_links(self) -> None:
        """Only http(s) links are stored (percent-encoded where needed); any other
        scheme (``javascript:``, ``data:``, ...) is dropped with a warning naming the
        record, because these links become ``href``s in every email and web page."""
        for attr in ("url", "code_url", "project_url"):
            raw = getattr(self, attr)
            if not raw:
                continue
            clean = safe_url(raw)
            if not clean:
                log.warning("%s: paper %r: dropped %s %r (only http/https links are kept)",
                            self.source or "ingest", self._named(), attr, raw[:100])
            setattr(self, attr, clean)

    def _named(self) -> str:
        """The title as a warning names the paper: its first 80 characters."""
        return self.title if len(self.title) <= 80 else self.title[:79] + "…"

    def _clean_authors(self, cut: list[str]) -> list[str]:
        """Names without their trailing "(affiliation)", which moves to ``affiliations``;
        each within the stored limits (``cut`` names what was cut)."""
        names: list[str] = []

        def within(text: str, what: str) -> str:
            return _at_most(text, MAX_NAME, what, cut)

        affiliations: dict[str, list[str]] = {}
        for k, v in self.affiliations.items():
            if key := within(clean_text(k), "author name"):
                affiliations[key] = [within(clean_text(a), "affiliation") for a in v]
        for raw in self.authors:
            name, affs = name_and_affiliations(clean_text(raw))
            name = within(name, "author name")
            if not name:
                continue
            names.append(name)
            if affs:
                known = affiliations.setdefault(name, [])
                known.extend(a for a in (within(x, "affiliation") for x in affs)
                             if a not in known)
        names = _few(names, MAX_NAMES, "authors", cut)
        listed = [k for k, v in affiliations.items() if v]
        self.affiliations = {k: _few(affiliations[k], MAX_AFFILIATIONS, "affiliations", cut)
                             for k in _few(listed, MAX_NAMES, "affiliations", cut)}
        return names

    @property
    def title_key(self) -> str:
        """The normalized title's hash (``title_id``): how the store finds this paper
        again when one source knows its arXiv id and another does not."""
        return title_id(self.title)


def _at_most(text: str, limit: int, what: str, cut: list[str]) -> str:
    """``text`` within ``limit`` characters: cut at the last space before it (else at
    the limit) with an ellipsis, and ``what`` noted in ``cut``."""
    if len(text) <= limit:
        return text
    cut.append(what)
    head = text[: limit - 1]
    space = head.rfind(" ")
    return (head[:space] if space > limit // 2 else head).rstrip() + "…"


def _few(items: list[str], limit: int, what: str, cut: list[str]) -> list[str]:
    """The first ``limit`` of ``items`` (``what`` noted in ``cut`` when there were more)."""
    if len(items) <= limit:
        return items
    cut.append(what)
    return items[:limit]


def clean_text(text: Any) -> str:
    """Unwrap and clean: NFC, no control characters, single spaces, trimmed."""
    if text is None:
        return ""
    s = unicodedata.normalize("NFC", str(text))
    # C0/C1 controls but tab and newline, the zero-width and bidi marks (in scraped
    # text by accident, or to reorder what a reader sees) and lone surrogates (a JSON
    # "\\udce9" is no text): ``plaintext``
    s = UNWRITABLE.sub(" ", s)
    return _WS_RE.sub(" ", s).strip()


def parse_arxiv_id(value: str) -> tuple[str, int] | None:
    """``'oai:arXiv.org:2508.13426v1'`` → ``('2508.13426', 1)``; None when absent."""
    if not value:
        return None
    m = _ARXIV_PREFIX_RE.search(value)
    text = m.group(1) if m else value.strip()
    m2 = ARXIV_ID_RE.fullmatch(text) or ARXIV_ID_RE.match(text)
    if not m2:
        return None
    ident = m2.group(1) or m2.group(3)
    version = m2.group(2) or m2.group(4)
    return ident, int(version) if version else 0


def arxiv_id_from_url(url: str) -> tuple[str, int] | None:
    """The arXiv id in an abs/pdf/html URL, if there is one."""
    if not url:
        return None
    m = _ARXIV_URL_RE.search(url)
    if not m:
        return None
    return parse_arxiv_id(m.group(1))


def normalize_title(title: str) -> str:
    s = unicodedata.normalize("NFKC", title).casefold()
    s = re.sub(r"[^\w]+", " ", s)
    return " ".join(s.split())


def title_id(title: str) -> str:
    return "t:" + hashlib.sha1(normalize_title(title).encode("utf-8")).hexdigest()[:16]


def merge_duplicates(papers: Iterable[Paper]) -> tuple[list[Paper], int]:
    """Fold papers that share an id (one file listing a paper twice, v1 and v2), or a
    normalized title (a page dump without arXiv ids beside the API's copy).

    The newer version's text wins; links and counts are kept wherever one side
    knows them. Returns the merged papers (first-seen order) and how many folded.
    """
    merged: dict[str, Paper] = {}
    by_title: dict[str, str] = {}  # normalized title -> key in ``merged``
    folded = 0
    for p in papers:
        key = p.id if p.id in merged else by_title.get(title_id(p.title), p.id)
        old = merged.get(key)
        if old is None:
            merged[key] = p
            by_title.setdefault(title_id(p.title), key)
            continue
        folded += 1
        both = combine(old, p)
        if key.startswith("t:") and not p.id.startswith("t:"):  # an arXiv id turned up
            both.id, both.arxiv_id = p.id, p.arxiv_id
        merged[key] = both
    return list(merged.values()), folded


def combine(old: Paper, new: Paper) -> Paper:
    """``new`` refreshed onto ``old``: the same paper, seen again."""
    newer = new.version >= old.version
    base, other = (new, old) if newer else (old, new)
    return dataclasses.replace(
        base,
        title=base.title or other.title,
        abstract=base.abstract or other.abstract,
        authors=base.authors or other.authors,
        published=base.published or other.published,
        upvotes=new.upvotes if new.upvotes is not None else old.upvotes,
        url=new.url or old.url,
        code_url=new.code_url or old.code_url,
        project_url=new.project_url or old.project_url,
        keywords=base.keywords or other.keywords,
        version=max(old.version, new.version),
        featured=max((d for d in (old.featured, new.featured) if d), default=None),
        affiliations=base.affiliations or other.affiliations,
    )
