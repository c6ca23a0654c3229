"""Per-subscriber rendering: picks → context → subject, HTML, text → MIME bytes.

The compiled templates, the MIME skeleton, the link signer and the per-paper
views are made once per edition (``Renderer``); ``render`` is the per-subscriber
hot path the benchmark measures.
"""

from __future__ import annotations

import datetime as dt
import secrets
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from markupsafe import Markup, escape

from newsletter.config import Settings
from newsletter.errors import ConfigError
from newsletter.ranking.engine import Explanation
from newsletter.ranking.text import Acronyms
from newsletter.render.compile import compile_templates, render_or_raise
from newsletter.render.digest import (
    DigestBuilder,
    PaperInfo,
    PaperView,
    group_papers,
    summary_line,
)
from newsletter.render.links import LinkMaker, Signer
from newsletter.render.mime import DkimSigner, Message, MimeBuilder

GMAIL_CLIP_BYTES = 102 * 1024
BLOCK_CACHE = 20_000  # rendered paper blocks kept per edition; about 2 KB each
# PaperView attributes that differ between subscribers for the same paper (the rest
# follow from the paper).
_PER_SUBSCRIBER = frozenset({"excerpt", "excerpt_text", "authors", "authors_text", "why",
                             "matched", "group"})


@dataclass(frozen=True, slots=True)
class Recipient:
    id: int
    email: str
    name: str = ""
    keywords: str = ""


@dataclass(frozen=True, slots=True)
class Rendered:
    subject: str
    html: str
    text: str
    message: Message
    papers: int
    trending: int
    matched_terms: tuple[str, ...]


def dkim_signer(settings: Settings) -> DkimSigner | None:
    r = settings.render
    if not (r.dkim_selector and r.dkim_domain and r.dkim_private_key):
        return None
    try:
        key = Path(r.dkim_private_key).read_bytes()
    except OSError as exc:
        raise ConfigError(f"[render] dkim_private_key: cannot read {r.dkim_private_key}: "
                          f"{exc.strerror}") from None
    return DkimSigner(r.dkim_selector, r.dkim_domain, key)


class Renderer:
    def __init__(self, settings: Settings, *, keys: list[str], day: dt.date, edition_id: int,
                 papers: list[PaperInfo], acronyms: Acronyms) -> None:
        self.settings = settings
        self.compiled = compile_templates(settings.render.templates)
        self.mime = MimeBuilder(settings, dkim_signer(settings),
                                feedback_id=f"{edition_id}:digest:{settings.sender.list_id}")
        self.links = LinkMaker(settings, Signer(keys))
        if settings.render.images == "remote":
            papers = [p.with_image(settings.render.image_url) for p in papers]
        self.digest = DigestBuilder(papers, acronyms)
        self.edition_id = edition_id
        self.day = day
        s = settings.sender
        self.sender = {"from_name": s.from_name, "from_address": s.from_address,
                       "postal_address": s.postal_address}
        self.edition = {"date_long": f"{day:%A}, {day:%B} {day.day}, {day.year}",
                        "day": day.isoformat(), "id": edition_id}
        self._blocks: dict[tuple[Any, ...], str] = {}
        # Per split-off block: the per-subscriber attributes that are put in after
        # rendering (stand-ins while it renders), and those the cached copy is keyed on.
        c = self.compiled
        self._block_put = [tuple(sorted(a & _PER_SUBSCRIBER & plain))
                           for a, plain in zip(c.block_attrs, c.block_plain, strict=True)]
        self._block_keys = [tuple(sorted((a & _PER_SUBSCRIBER) - plain))
                            for a, plain in zip(c.block_attrs, c.block_plain, strict=True)]
        # Stand-ins no text can contain by chance: NUL-delimited, with a random part.
        tag = secrets.token_hex(6)
        self._stand = {name: f"\x00{tag}:{name}\x00"
                       for name in (*_PER_SUBSCRIBER, "more", "less")}

    def _paper_block(self, feedback: dict[str, dict[str, str]], n: int, p: PaperView,
                     ) -> Markup:
        """Block ``n`` of the digest for paper ``p``, the same HTML as rendering it
        inline: rendered once per paper (and per value of anything it uses in more
        than a plain way), with stand-ins for this subscriber's excerpt, explanation,
        authors and vote links, which are put in here (escaped as Jinja would)."""
        links = feedback.get(p.id) if feedback else None
        put = [(name, getattr(p, name)) for name in self._block_put[n]]
        key = (n, p.id, bool(links), *[bool(v) for _, v in put],
               *[_hashable(getattr(p, a)) for a in self._block_keys[n]])
        html = self._blocks.get(key)
        stand = self._stand
        if html is None:
            shown = _StandIn(p, {name: Markup(stand[name]) if value else value
                                 for name, value in put})
            links_in = {"more": stand["more"], "less": stand["less"]}
            context = {"p": shown, "feedback": {p.id: links_in} if links else {}}
            html = render_or_raise(self.compiled.blocks[n], "partials/paper.html", context)
            if len(self._blocks) >= BLOCK_CACHE:  # bounded, whatever the list size
                self._blocks.clear()
            self._blocks[key] = html
        for name, value in put:
            if value:
                html = html.replace(stand[name], str(escape(value)))
        if links:
            html = html.replace(stand["more"], str(escape(links["more"]))).replace(
                stand["less"], str(escape(links["less"])))
        return Markup(html)

    def render(self, r: Recipient, picks: list[int], explanations: list[Explanation | None],
               trending: bool) -> Rendered:
        items = [self.digest.paper(i, ex) for i, ex in zip(picks, explanations, strict=True)]
        papers: list[PaperView] = [] if trending else items
        trend: list[PaperView] = items if trending else []
        links = self.links.for_subscriber(r.id, self.edition_id)
        terms = tuple(dict.fromkeys(t for p in papers for t in p.matched))
        context: dict[str, Any] = {
            "sender": self.sender, "edition": self.edition,
            "subscriber": {"email": r.email, "name": r.name, "keywords": r.keywords},
            "links": {"unsubscribe": links.unsubscribe, "preferences": links.preferences,
                      "browser": links.browser},
            "papers": papers, "trending": trend,
            # grouped under the best-matching term when more than one term matched
            "groups": group_papers(papers),
            "summary": summary_line(papers, trend),
            "feedback": {p.id: self.links.votes(r.id, p.id) for p in items},
        }
        context["paper_block"] = partial(self._paper_block, context["feedback"])
        subject = render_or_raise(self.compiled.subject, "subject.txt", context).strip()
        context["subject"] = subject
        context["preheader"] = context["summary"]
        html = render_or_raise(self.compiled.html, "digest.mjml", context)
        text = render_or_raise(self.compiled.text, "digest.txt", context)
        message = self.mime.build(
            to=r.email, to_name=r.name, subject=subject, text=text, html=html,
            message_id=self.mime.message_id(f"{self.day:%Y%m%d}.{self.edition_id}.{r.id}"),
            list_unsubscribe=f"<{links.unsubscribe}>, <{links.unsubscribe_mailto}>",
        )
        return Rendered(subject, html, text, message, len(papers), len(trend), terms)


class _StandIn:
    """A paper view with some attributes replaced (by stand-ins), the rest its own."""

    __slots__ = ("_over", "_paper")

    def __init__(self, paper: PaperView, over: dict[str, Any]) -> None:
        self._paper, self._over = paper, over

    def __getattr__(self, name: str) -> Any:
        over = self._over
        return over[name] if name in over else getattr(self._paper, name)


def _hashable(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value
