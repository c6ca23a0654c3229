"""The sample digests, rendered without a database: the bundled sample papers ranked
for the bundled sample subscribers (what ``newsletter demo`` sends), a trending-only
digest, and a digest of hostile titles and links.

The screenshot script and the deliverability tests (SpamAssassin, axe-core,
html-validate) look at exactly these, so what the README shows is what is tested.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from importlib import resources
from types import SimpleNamespace
from typing import Any

from newsletter.config import RankingConfig, RenderConfig, SenderConfig, WebConfig
from newsletter.ingest.papers import Paper
from newsletter.ingest.run import parse_text
from newsletter.ranking.engine import Corpus, Explanation, RankEntry, Ranker
from newsletter.ranking.selection import load_acronyms
from newsletter.render.digest import PaperInfo
from newsletter.render.renderer import Recipient, Rendered, Renderer

DAY = dt.date(2025, 12, 26)
HOSTILE = [
    "<script>alert('x')</script> Attention is all you need, again",
    'Quotes "double" and \'single\' & ampersands in attention heads',
    "Templates {{ config }} and {% raw %} braces for attention",
    r"LaTeX $\mathcal{O}(n \log n)$ attention bounds \emph{tight}",
    "Emoji 🚀🧠 attention and combining é",
    "RTL: تعلم الآلة العميق attention and עברית",
    "Long attention " + "x" * 5_000,
]
HOSTILE_URLS = ["javascript:alert(1)", 'https://github.com/x/y"onmouseover="alert(1)',
                "data:text/html,<b>x</b>", "https://example.org/a b<c>"]


def sample_papers() -> list[Paper]:
    data = resources.files("newsletter.data").joinpath("sample_papers.json").read_text("utf-8")
    return parse_text(data, "sample_papers.json")


def sample_subscribers() -> list[Recipient]:
    text = resources.files("newsletter.data").joinpath("sample_subscribers.csv").read_text(
        "utf-8")
    return [Recipient(i, row["email"], row["name"], row["keywords"])
            for i, row in enumerate(csv.DictReader(io.StringIO(text)), 1)]


def hostile_papers() -> list[Any]:
    """Entries as a hostile feed could store them before ingest's link rule existed."""
    return [SimpleNamespace(
        id=f"2501.{i:05d}", arxiv_id=f"2501.{i:05d}", title=title,
        abstract=f"{title}. We study attention in transformers.",
        authors=["<b>Mallory</b>", "Eve O'Hara", "Trudy & Co", "Oscar"], published=DAY,
        upvotes=i * 7, url=HOSTILE_URLS[i % len(HOSTILE_URLS)],
        code_url=HOSTILE_URLS[(i + 1) % len(HOSTILE_URLS)], project_url="", keywords=[])
        for i, title in enumerate(HOSTILE)]


class SampleSet:
    """One edition's renderer and ranker over some papers, ranking like ``send`` does:
    matches above ``min_relevance`` by score, else the most upvoted as trending.
    Each config section left out is the default one."""

    def __init__(self, rows: list[Any], day: dt.date = DAY, *,
                 ranking: RankingConfig | None = None, render: RenderConfig | None = None,
                 sender: SenderConfig | None = None, web: WebConfig | None = None) -> None:
        self.cfg = cfg = ranking or RankingConfig()
        web = web or WebConfig()
        entries = [RankEntry.of(r) for r in rows]
        acronyms = load_acronyms(cfg, entries)
        self.ranker = Ranker(Corpus(entries, acronyms, cfg, day), cfg)
        papers = [PaperInfo.of(r, f"{web.base_url.rstrip('/')}/papers/{r.id}", day)
                  for r in rows]
        self.renderer = Renderer(render or RenderConfig(), sender or SenderConfig(), web,
                                 keys=["sample-key"], day=day, edition_id=1, papers=papers,
                                 acronyms=acronyms)
        self.upvotes = [int(r.upvotes or 0) for r in rows]

    def choose(self, who: Recipient) -> tuple[list[int], list[Explanation | None], bool]:
        """The picks, their explanations and the trending flag for ``who``."""
        cfg = self.cfg
        every = list(range(len(self.upvotes)))
        ex = self.ranker.explain_many(who.keywords, every)
        matches = sorted((i for i in every if ex[i].relevance >= cfg.min_relevance),
                         key=lambda i: -ex[i].score)[: cfg.max_papers]
        if matches:
            return matches, [ex[i] for i in matches], False
        top = sorted(every, key=lambda i: -self.upvotes[i])[: cfg.trending_count]
        return top, [None] * len(top), True

    def render(self, who: Recipient) -> Rendered:
        return self.renderer.render(who, *self.choose(who))


def sample_digests(*, ranking: RankingConfig | None = None, render: RenderConfig | None = None,
                   sender: SenderConfig | None = None, web: WebConfig | None = None,
                   ) -> dict[str, Rendered]:
    """``sample`` (Ada's digest), ``trending`` (a profile matching nothing) and
    ``hostile`` (hostile titles, authors and links), with the sections given."""
    sample = SampleSet(sample_papers(), ranking=ranking, render=render, sender=sender, web=web)
    ada = sample_subscribers()[0]
    nobody = Recipient(99, "nobody@example.org", "Nobody", "medieval falconry")
    hostile = SampleSet(hostile_papers(), ranking=ranking, render=render, sender=sender, web=web)
    return {"sample": sample.render(ada), "trending": sample.render(nobody),
            "hostile": hostile.render(Recipient(7, "mallory@example.org", "Mallory <x>",
                                                "attention, author:\"Eve O'Hara\""))}
