"""Shared paper blocks: the digest rendered with its per-paper block split off and
cached (render/compile.py, ``Renderer._paper_block``) is the same HTML, byte for byte,
as the digest rendered with the block inline, for any subscriber, picks and votes."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from newsletter.config import Settings
from newsletter.ranking.engine import Corpus, RankEntry, Ranker
from newsletter.ranking.text import Acronyms
from newsletter.render.compile import BUNDLED, compile_templates
from newsletter.render.digest import PaperInfo
from newsletter.render.renderer import Recipient, Renderer

DAY = dt.date(2025, 12, 26)
TITLES = ["Attention Is Sparse", "Diffusion Models & <Friends>", "Graph Neural Networks",
          "State Space Models for Vision", "Attention in Diffusion Transformers",
          'Quotes "here" and {{ braces }}', "Mamba: Linear-Time Sequence Modeling"]
ABSTRACTS = ["We study attention in diffusion models at scale. Results improve.",
             "Graph neural networks meet state space models; attention is optional.",
             "A survey. " * 30 + "Diffusion and attention, finally."]
PROFILES = ["attention", "diffusion models, -graph", 'author:"Author 2", mamba',
            "graph neural networks^2, attention", "state space models, vision", "quantum",
            "diffusion & <models>"]  # an explanation that must be escaped


def rows() -> list[SimpleNamespace]:
    return [SimpleNamespace(
        id=f"2501.{i:05d}", title=t, abstract=ABSTRACTS[i % len(ABSTRACTS)],
        authors=[f"Author {(i + n) % 7}" for n in range(1 + i % 5)], published=DAY,
        upvotes=i * 3, url=f"https://arxiv.org/abs/2501.{i:05d}",
        code_url="https://github.com/x/y" if i % 2 else "", project_url="", keywords=[])
        for i, t in enumerate(TITLES)]


def inline_copy(tmp: Path) -> Path:
    """The bundled templates with the block markers taken out: every paper inline."""
    target = tmp / "inline"
    shutil.copytree(BUNDLED, target)
    partial = target / "partials" / "paper.html"
    text = partial.read_text()
    assert "{# paper-block #}" in text and "{# /paper-block #}" in text
    partial.write_text(text.replace("{# paper-block #}", "").replace("{# /paper-block #}", ""))
    return target


def make(templates: str | None, base_url: str) -> tuple[Renderer, Ranker]:
    settings = Settings().replace(web={"base_url": base_url},
                                  render={"templates": templates})
    acronyms = Acronyms.load()
    data = rows()
    ranker = Ranker(Corpus([RankEntry.of(r) for r in data], acronyms, settings.ranking, DAY),
                    settings.ranking)
    return Renderer(settings, keys=["k1"], day=DAY, edition_id=7,
                    papers=[PaperInfo.of(r, "") for r in data], acronyms=acronyms), ranker


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Renderer, Renderer, Ranker]:
    base = "https://digest.example.org/a&b"  # an ampersand: the links must be escaped
    split, ranker = make(None, base)
    inline, _ = make(str(inline_copy(tmp_path_factory.mktemp("tpl"))), base)
    assert len(split.compiled.blocks) == 2  # the matched papers and the trending ones
    assert not inline.compiled.blocks
    return split, inline, ranker


@hsettings(max_examples=150, deadline=None,
           suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(subscriber=st.integers(0, 10**9), profile=st.sampled_from(PROFILES),
       picks=st.lists(st.integers(0, len(TITLES) - 1), min_size=0, max_size=len(TITLES),
                      unique=True),
       trending=st.booleans(), explained=st.booleans())
def test_split_blocks_render_exactly_as_inline(
        pair: tuple[Renderer, Renderer, Ranker], subscriber: int, profile: str,
        picks: list[int], trending: bool, explained: bool) -> None:
    split, inline, ranker = pair
    explanations = (list(ranker.explain_many(profile, picks)) if explained and not trending
                    else [None] * len(picks))
    who = Recipient(subscriber, f"r{subscriber}@example.org", "Rëader", profile)
    a = split.render(who, picks, explanations, trending)
    b = inline.render(who, picks, explanations, trending)
    assert a.html == b.html
    assert a.text == b.text and a.subject == b.subject
    # each paper carries this subscriber's own vote links, not a cached neighbour's
    for p in picks:
        votes = split.links.votes(subscriber, split.digest.papers[p].id)
        assert votes["more"].replace("&", "&amp;") in a.html


def test_block_reading_more_than_the_paper_stays_inline(tmp_path: Path) -> None:
    """A block that reads the subscriber (not only ``p`` and ``feedback``) cannot be
    shared between subscribers: it is left inline and runs for each of them."""
    directory = inline_copy(tmp_path)
    partial = directory / "partials" / "paper.html"
    partial.write_text("{# paper-block #}<p>For {{ subscriber.name }}: {{ p.title }}</p>"
                       "{# /paper-block #}")
    assert not compile_templates(str(directory)).blocks
    renderer, _ = make(str(directory), "https://digest.example.org")
    out = [renderer.render(Recipient(i, f"r{i}@example.org", name), [0], [None], False).html
           for i, name in enumerate(["Ada", "Grace"])]
    assert "For Ada: Attention Is Sparse" in out[0]
    assert "For Grace: Attention Is Sparse" in out[1]


def test_block_that_filters_a_vote_link_stays_inline(tmp_path: Path) -> None:
    """A click-tracking redirect (the vote link url-encoded into another URL) is not a
    shape a stand-in can take: that block is rendered per subscriber, as written."""
    split_dir = inline_copy(tmp_path / "a")
    (split_dir / "partials" / "paper.html").write_text(
        '{# paper-block #}<p><a href="https://t.example/r?u='
        '{{ feedback[p.id].more|urlencode }}">{{ p.title }}</a></p>{# /paper-block #}')
    inline_dir = inline_copy(tmp_path / "b")
    (inline_dir / "partials" / "paper.html").write_text(
        '<p><a href="https://t.example/r?u={{ feedback[p.id].more|urlencode }}">'
        '{{ p.title }}</a></p>')
    assert not compile_templates(str(split_dir)).blocks
    split, _ = make(str(split_dir), "https://digest.example.org")
    inline, _ = make(str(inline_dir), "https://digest.example.org")
    who = Recipient(5, "r5@example.org", "R")
    a = split.render(who, [0], [None], False).html
    assert a == inline.render(who, [0], [None], False).html
    assert "\x00" not in a and "/feedback/up/" in a
