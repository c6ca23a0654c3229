"""One profile parser: the fast path (regex split, cached terms) and the ranker's view
of a profile must agree with a plain reading of the language, including on repeated
terms, weights, quotes and the 500-term limit, where the old fast path disagreed."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from newsletter.config import RankingConfig
from newsletter.errors import ProfileError
from newsletter.profile import MAX_TERMS, Term, _split, _term, parse_profile
from newsletter.ranking.engine import Corpus, RankEntry, Ranker
from newsletter.ranking.text import Acronyms


def reference(text: str) -> tuple[Term, ...]:
    """The language read slowly: the quote-aware splitter always, every term parsed,
    the limit checked, a repeated term (case-blind) kept once with its largest weight."""
    terms = [_term(p) for p in _split(text)]
    if len(terms) > MAX_TERMS:
        raise ProfileError("too many")
    seen: dict[tuple[str, str, bool], Term] = {}
    for t in terms:
        key = (t.text.casefold(), t.kind, t.exclude)
        if key not in seen or seen[key].weight < t.weight:
            seen[key] = t
    return tuple(seen.values())


WORDS = ["gan", "GAN", "Gan", "diffusion", "diffusions", "state space models", "GNN",
         "graph neural network", "vision transformer", "medical", "the"]
term = st.builds(
    lambda neg, word, quoted, weight, author: (
        ("-" if neg else "") + (f'author:"{word}"' if author else f'"{word}"' if quoted
                                else word) + (f"^{weight}" if weight is not None else "")),
    st.booleans(), st.sampled_from(WORDS), st.booleans(),
    st.one_of(st.none(), st.sampled_from(["2", "0.5", "10", "3", "11", "0", "x"])),
    st.integers(0, 9).map(lambda n: n == 0))
separator = st.sampled_from([", ", ",", "\n", " ; ", ",,", " , \n "])


@st.composite
def profiles(draw: st.DrawFn) -> str:
    parts = draw(st.lists(term, max_size=8))
    filler = draw(st.sampled_from([0, 0, 0, 490, 495, 499, 500, 501, 505]))
    parts += [f"topic{i}" for i in range(filler)]
    seps = draw(st.lists(separator, min_size=len(parts), max_size=len(parts)))
    text = "".join(p + s for p, s in zip(parts, seps, strict=True))
    return draw(st.sampled_from(["", " ", "\n"])) + text


def outcome(fn, text: str):  # type: ignore[no-untyped-def]
    try:
        return ("ok", fn(text))
    except ProfileError:
        return ("error", None)


@pytest.mark.slow  # ~3.5 s: 150 hypothesis examples
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(profiles())
def test_the_parser_agrees_with_a_plain_reading(text: str) -> None:
    assert outcome(lambda t: parse_profile(t).terms, text) == outcome(reference, text)


@pytest.fixture(scope="module")
def ranker() -> Ranker:
    cfg = RankingConfig()
    entries = [RankEntry("a", "GAN training", "Generative adversarial networks."),
               RankEntry("b", "Diffusion models", "State space models and GNNs.")]
    return Ranker(Corpus(entries, Acronyms.load(), cfg, dt.date(2025, 1, 1)), cfg)


@pytest.mark.slow  # ~2.5 s: 100 hypothesis examples ranked
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(profiles())
def test_the_ranker_reads_what_the_parser_reads(ranker: Ranker, text: str) -> None:
    """The ranker's terms are the parser's, mapped to features; where two parsed terms
    share a feature ("diffusion, diffusions") it keeps the larger weight. The ranker
    rejects exactly the profiles the parser rejects."""
    try:
        parsed = parse_profile(text).terms
    except ProfileError:
        with pytest.raises(ProfileError):
            ranker._terms_of(text)
        return
    expected: dict[tuple[int, bool], float] = {}
    for t in parsed:
        key = (ranker.feature_of(t), t.exclude)
        expected[key] = max(expected.get(key, 0.0), t.weight)
    got = {(f, x): w for f, w, x, _ in ranker._terms_of(text)}
    assert got == expected


def test_keywords_are_parsed_once_per_send(ranker: Ranker) -> None:
    """Planning, rendering and the preview read a profile through one parser and its
    caches: the ranker's table of raw parts, and the parser's own cache."""
    from newsletter.profile import profile_terms

    text = "gan^2, unique-term-for-this-test"
    profile_terms.cache_clear()
    [chunk] = ranker.rank([(1, text)])
    ranked = profile_terms.cache_info().misses
    assert 1 <= ranked <= 2  # the ranker parses each raw part once (gan^2 may be known)
    ranker.explain_many(text, [0], key=1)  # rendering: the ranker's table, no parse
    list(ranker.rank([(2, text)]))  # another subscriber with the same profile: none
    assert profile_terms.cache_info().misses == ranked
    parse_profile(text)
    parse_profile(text)  # validation and the preview: the whole text, parsed once
    info = profile_terms.cache_info()
    assert info.misses == ranked + 1 and info.hits >= 1
