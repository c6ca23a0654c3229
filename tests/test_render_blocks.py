"""Paper blocks rendered once per paper and filled in per subscriber (render/blocks.py)
give the bytes rendering every block inline gives: for any subscriber, profile, picks,
trending or not, hostile titles and links; a block that does more than print or test
what differs between subscribers stays inline."""

from __future__ import annotations

import datetime as dt
import random
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
from hypothesis import given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st
from markupsafe import Markup

from bench.common import synthetic_profiles
from newsletter.config import Settings
from newsletter.ranking.engine import Corpus, RankEntry, Ranker
from newsletter.ranking.text import Acronyms
from newsletter.render.blocks import escaped
from newsletter.render.compile import BUNDLED, _env, compile_templates, printing_escaped
from newsletter.render.digest import PaperInfo
from newsletter.render.renderer import Recipient, Renderer
from newsletter.render.samples import DAY, hostile_papers, sample_papers


def pair(rows: list, settings: Settings) -> tuple[Renderer, Renderer, Ranker]:  # type: ignore[type-arg]
    acronyms = Acronyms.load()
    ranker = Ranker(Corpus([RankEntry.of(r) for r in rows], acronyms, settings.ranking, DAY),
                    settings.ranking)
    papers = [PaperInfo.of(r, f"https://digest.example.org/papers/{r.id}", DAY) for r in rows]
    split, inline = (Renderer(settings.render, settings.sender, settings.web, keys=["k"],
                              day=DAY, edition_id=3, papers=papers, acronyms=acronyms,
                              split_blocks=s) for s in (True, False))
    return split, inline, ranker


def featured(rows: list, every: int) -> list:  # type: ignore[type-arg]
    """Every ``every``-th paper listed as featured today or yesterday by its source."""
    for i, r in enumerate(rows):
        if i % every == 0:
            r.featured = DAY - dt.timedelta(days=(i // every) % 2)
    return rows


ROWS = featured(sample_papers()[:60] + hostile_papers(), 3)
SETTINGS = Settings().replace(web={"base_url": "https://digest.example.org/a&b"},
                              render={"images": "remote"})
SPLIT, INLINE, RANKER = pair(ROWS, SETTINGS)
PROFILES = synthetic_profiles(200, seed=5) + ['attention, author:"Eve O\'Hara"', "", "zzz"]


def test_the_bundled_templates_are_split() -> None:
    assert len(SPLIT.compiled.blocks) == 2  # the HTML block (papers and trending), the text
    assert "p.blocks[0]" in SPLIT.compiled.html_source
    assert not INLINE.compiled.blocks


@hyp_settings(max_examples=150, deadline=None)
@given(st.integers(0, len(PROFILES) - 1), st.integers(0, 2**32), st.integers(1, 12),
       st.booleans(), st.booleans(), st.text(max_size=30))
def test_split_blocks_give_the_same_bytes(who: int, seed: int, k: int, trending: bool,
                                          weekly: bool, name: str) -> None:
    picks = random.Random(seed).sample(range(len(ROWS)), k)
    profile = PROFILES[who]
    explanations = [None] * k if trending else RANKER.explain_many(profile, picks)
    r = Recipient(seed % 1000, f"r{seed}@example.org", name, profile)
    a = SPLIT.render(r, picks, explanations, trending, weekly)
    b = INLINE.render(r, picks, explanations, trending, weekly)
    assert a.html == b.html
    assert a.text == b.text
    assert a.subject == b.subject


def test_featured_papers_are_in_the_blocks() -> None:
    picks = [0, 1, 3]
    ex = RANKER.explain_many("attention", picks)
    out = SPLIT.render(Recipient(5, "e@example.org"), picks, ex, False)
    assert "Featured today" in out.text and "Featured yesterday" in out.text


def test_the_same_paper_twice_in_a_row_is_filled_for_each() -> None:
    """The cached pieces are per paper: the second subscriber gets their own links."""
    picks = [0, 1, 2]
    ex = RANKER.explain_many("attention", picks)
    one = SPLIT.render(Recipient(1, "a@example.org"), picks, ex, False)
    two = SPLIT.render(Recipient(2, "b@example.org"), picks, ex, False)
    assert one.html != two.html
    assert two.html == INLINE.render(Recipient(2, "b@example.org"), picks, ex, False).html


@pytest.mark.parametrize("change", [
    ("{{ p.why }}", "{{ p.why|upper }}"),            # a filter on a per-subscriber value
    ("{% if p.why %}", "{% if p.why not in ('a', 'b') %}"),  # a test that is not truth
    ("{{ p.title_short }}", "{{ p.title_short }}{{ loop.index }}"),  # the outer loop
    ("{{ p.excerpt }}", "{{ p.excerpt }}{{ subscriber.email }}"),    # another variable
])
def test_a_block_doing_more_stays_inline(tmp_path: Path, change: tuple[str, str]) -> None:
    directory = tmp_path / "templates"
    shutil.copytree(BUNDLED, directory)
    paper_html = directory / "partials" / "paper.html"
    old, new = change
    assert old in paper_html.read_text()
    paper_html.write_text(paper_html.read_text().replace(old, new, 1))
    compiled = compile_templates(str(directory))
    assert len(compiled.blocks) == 1  # the text part's block only
    assert compiled.blocks[0].escaped is False
    settings = SETTINGS.replace(render={"templates": str(directory)})
    split, inline, ranker = pair(ROWS, settings)
    picks = [0, 5, 9]
    ex = ranker.explain_many("attention, diffusion", picks)
    r = Recipient(4, "c@example.org", "C", "attention, diffusion")
    assert split.render(r, picks, ex, False).html == inline.render(r, picks, ex, False).html


def test_values_are_escaped_as_jinja_escapes_them() -> None:
    row = SimpleNamespace(id="2501.00001", arxiv_id="", title="<b>&amp;</b> \"q\" 'a'",
                          abstract="An <i>attention</i> & 'mamba' \"paper\".",
                          authors=["<Eve>", "O'Hara & Co"], published=DAY, upvotes=1,
                          url="https://x.org/?a=1&b=<2>", code_url="", project_url="",
                          keywords=[])
    split, inline, ranker = pair([row], SETTINGS)
    for profile in ("attention", 'author:"O\'Hara & Co", mamba', ""):
        ex = ranker.explain_many(profile, [0])
        r = Recipient(9, "d@example.org", "<D&>", profile)
        a, b = split.render(r, [0], ex, False), inline.render(r, [0], ex, False)
        assert a.html == b.html and a.text == b.text


class _Html:
    """A value with its own HTML, as Jinja's autoescape trusts it."""

    def __init__(self, html: str) -> None:
        self.html = html

    def __html__(self) -> str:
        return self.html


class _Posing(str):
    """Text that reports Markup as its class (as a proxy reports its target's): still
    text to escape, as markupsafe decides by its type."""

    __class__ = Markup  # type: ignore[assignment]


_VALUES = st.one_of(st.text(alphabet=st.sampled_from("a <>&\"'é\n;#x")), st.integers(),
                    st.none(), st.booleans(), st.floats(allow_nan=False),
                    st.text(alphabet="a<&'").map(Markup), st.text(alphabet="b<&").map(_Html),
                    st.text(alphabet="<s>").map(_Posing))


@hyp_settings(max_examples=200, deadline=None)
@given(st.lists(_VALUES, min_size=1, max_size=4))
def test_printed_values_read_as_jinjas_own_escape(values: list[object]) -> None:
    # The compiled templates print through ``escaped``, not Jinja's ``escape``: the same
    # text for any value, as Jinja's own rendering of the same source shows.
    source = "{% for v in vs %}<p title=\"{{ v }}\">{{ v }}</p>{% endfor %}{{ vs[0] }}"
    ours = printing_escaped(_env().from_string(source))
    assert ours.root_render_func.__globals__["escape"] is escaped
    assert ours.render(vs=values) == _env().from_string(source).render(vs=values)


@pytest.mark.parametrize("who", [0, 7, len(PROFILES) - 3, len(PROFILES) - 2])
def test_the_digest_prints_as_jinja_prints_it(who: int) -> None:
    # The bundled digest, hostile papers and links with "&" included, against the same
    # template source rendered by Jinja alone.
    profile = PROFILES[who]
    ids = random.Random(who).sample(range(len(ROWS)), 9)
    ids[0] = len(ROWS) - 1  # a hostile one
    r = Recipient(5, "e@example.org", "<E & 'F'>", profile)
    context = SPLIT.context(r, ids, RANKER.explain_many(profile, ids), False)
    jinja_own = _env().from_string(SPLIT.compiled.html_source)
    assert SPLIT.compiled.html.render(context) == jinja_own.render(context)
