"""Per-subscriber rendering: picks → context → subject, HTML, text → MIME bytes.

The compiled templates, the MIME skeleton, the link signer and the per-paper
views are made once per edition (``Renderer``); ``render`` is the per-subscriber
hot path the benchmark measures.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from newsletter.config import RenderConfig, SenderConfig, WebConfig
from newsletter.errors import ConfigError, first_line
from newsletter.ranking.engine import Explanation
from newsletter.ranking.text import Acronyms
from newsletter.render.blocks import BlockFiller
from newsletter.render.compile import compile_templates, render_or_raise
from newsletter.render.digest import (
    DigestBuilder,
    PaperInfo,
    PaperView,
    group_papers,
    period_of,
    summary_line,
)
from newsletter.render.links import LinkMaker, Signer
from newsletter.render.mime import DkimSigner, Message, MimeBuilder

GMAIL_CLIP_BYTES = 102 * 1024


@dataclass(frozen=True, slots=True)
class Recipient:
    id: int
    email: str
    name: str = ""
    keywords: str = ""
    nonce: int | None = None  # the row's link_nonce, carried by every link (store.tokens)


@dataclass(frozen=True, slots=True)
class Rendered:
    subject: str
    html: str
    text: str
    message: Message
    papers: int
    trending: int
    matched_terms: tuple[str, ...]
    shown: str = ""  # what it showed, compactly (delivery/shown.py): kept when sent


def dkim_signer(r: RenderConfig) -> DkimSigner | None:
    """The DKIM signer the ``[render]`` section configures, or None (no DKIM)."""
    if not (r.dkim_selector and r.dkim_domain and r.dkim_private_key):
        return None
    try:
        key = Path(r.dkim_private_key).read_bytes()
    except OSError as exc:
        raise ConfigError(f"[render] dkim_private_key: cannot read {r.dkim_private_key}: "
                          f"{exc.strerror}") from None
    signer = DkimSigner(r.dkim_selector, r.dkim_domain, key)
    try:  # a file that is not a private key (the public half, a typo) fails every email
        signer.sign(b"From: probe@example.org\r\nSubject: probe\r\n\r\nprobe\r\n")
    except Exception as exc:  # noqa: BLE001 - dkimpy's own errors, whichever it raises
        raise ConfigError(f"[render] dkim_private_key: {r.dkim_private_key}: not a private "
                          f"key dkimpy can sign with ({first_line(exc)})",
                          "make one with `openssl genrsa -out dkim.pem 2048`") from None
    return signer


class Renderer:
    def __init__(self, render: RenderConfig, sender: SenderConfig, web: WebConfig, *,
                 keys: list[str], day: dt.date, edition_id: int, papers: list[PaperInfo],
                 acronyms: Acronyms, split_blocks: bool = True,
                 unsubscribe_mailto: str | None = None) -> None:
        """The ``[render]`` section (templates, images, DKIM), the ``[sender]`` one (the
        From and List-Id headers) and ``[web]`` (the links' base URL). ``split_blocks``:
        paper blocks rendered once per paper (render/blocks.py); off, every block runs
        inline (the tests compare the two). ``unsubscribe_mailto``: the address
        List-Unsubscribe offers a mailto: for (only where a mailbox is read for those
        requests; None: the https URL alone)."""
        self.compiled = compile_templates(render.templates, split=split_blocks)
        self.blocks = BlockFiller(self.compiled.blocks, ascii_html=self.compiled.html_7bit)
        self.mime = MimeBuilder(sender, dkim_signer(render),
                                feedback_id=f"{edition_id}:digest:{sender.list_id}")
        self.links = LinkMaker(web, sender, Signer(keys), mailto=unsubscribe_mailto)
        if render.images == "remote":
            papers = [p.with_image(render.image_url) for p in papers]
        self.digest = DigestBuilder(papers, acronyms)
        self.edition_id = edition_id
        self.day = day
        s = sender
        # Objects, not dicts: Jinja tries an attribute first, and on a dict that
        # attempt raises and catches an exception on every ``{{ sender.from_name }}``.
        # ``sender["from_name"]`` still works in a template.
        self.sender = SimpleNamespace(from_name=s.from_name, from_address=s.from_address,
                                      postal_address=s.postal_address)
        self.edition = SimpleNamespace(date_long=f"{day:%A}, {day:%B} {day.day}, {day.year}",
                                       day=day.isoformat(), id=edition_id)

    def prepare(self, papers: Iterable[int]) -> None:
        """What rendering these papers (indices) reads, made at once (see
        ``DigestBuilder.prepare``)."""
        self.digest.prepare(papers)

    def context(self, r: Recipient, picks: list[int], explanations: list[Explanation | None],
                trending: bool, weekly: bool = False, gap: bool = False) -> dict[str, Any]:
        """What the templates see for one subscriber (subject and preheader included).
        ``period``: the time the email covers, in words ("today", "this week", "since
        Friday" for a weekdays reader's Monday: ``gap``)."""
        items = [self.digest.paper(i, ex) for i, ex in zip(picks, explanations, strict=True)]
        papers: list[PaperView] = [] if trending else items
        trend: list[PaperView] = items if trending else []
        links = self.links.for_subscriber(r.id, self.edition_id, r.nonce)
        groups = group_papers(papers)
        period = period_of(weekly, gap)
        summary = summary_line(papers, trend, weekly, groups, period=period)
        context: dict[str, Any] = {
            "sender": self.sender, "edition": self.edition, "weekly": weekly,
            "period": period,
            "subscriber": SimpleNamespace(email=r.email, name=r.name, keywords=r.keywords),
            "links": links,
            "papers": papers, "trending": trend,
            # grouped under the best-matching term when more than one term matched
            "groups": groups,
            "summary": summary,
            "feedback": self.links.votes_for(r.id, [p.fixed.id for p in items], r.nonce),
        }
        feedback = context["feedback"]
        for p in items:
            p.blocks = self.blocks.fill(p, feedback)
        subject = render_or_raise(self.compiled.subject, "subject.txt", context).strip()
        context["subject"] = subject
        context["preheader"] = summary
        return context

    def render(self, r: Recipient, picks: list[int], explanations: list[Explanation | None],
               trending: bool, weekly: bool = False, gap: bool = False) -> Rendered:
        context = self.context(r, picks, explanations, trending, weekly, gap)
        papers: list[PaperView] = context["papers"]
        subject: str = context["subject"]
        links = context["links"]
        terms = tuple(dict.fromkeys(t for p in papers for t in p.matched))
        html = render_or_raise(self.compiled.html, "digest.mjml", context)
        if self.compiled.html_7bit and not html.isascii():
            # what the 7-bit part would write anyway (render/mime.py), done here so that
            # blocks rendered inline and split (their pieces ASCII already) read the same
            html = html.encode("ascii", "xmlcharrefreplace").decode()
        text = render_or_raise(self.compiled.text, "digest.txt", context)
        message = self.mime.build(
            to=r.email, to_name=r.name, subject=subject, text=text, html=html,
            message_id=self.mime.message_id(f"{self.day:%Y%m%d}.{self.edition_id}.{r.id}"),
            list_unsubscribe=f"<{links.unsubscribe}>" + (
                f", <{links.unsubscribe_mailto}>" if links.unsubscribe_mailto else ""),
            html_7bit=self.compiled.html_7bit,
        )
        return Rendered(subject, html, text, message, len(papers), len(context["trending"]),
                        terms)
