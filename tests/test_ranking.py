"""The profile language and the ranker: each feature, each edge, and the vectorized
engine against a plain per-subscriber reference computation."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import random
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from newsletter.config import RankingConfig
from newsletter.errors import ProfileError
from newsletter.profile import parse_profile, profile_terms
from newsletter.ranking.engine import Corpus, RankEntry, Ranker
from newsletter.ranking.text import Acronyms
from newsletter.render.highlight import highlight_spans

TODAY = dt.date(2025, 9, 1)
CFG = RankingConfig()


def entry(i: str, title: str, abstract: str = "", **kw: object) -> RankEntry:
    return RankEntry(id=i, title=title, abstract=abstract, **kw)  # type: ignore[arg-type]


FIXTURE = [
    entry("ssm", "Selective State-Space Models for Vision",
          "We scale state space models to images.", upvotes=5),
    entry("gnn", "Message Passing in Graph Neural Networks", "Graph neural networks (GNNs) ..."),
    entry("gnn-acr", "GNNs for Molecules", "Using GNNs on chemistry."),
    entry("med", "Graph Neural Networks for Medical Imaging", "Medical scans with GNNs."),
    entry("llm", "Serving Large Language Models Cheaply", "Inference for LLMs at scale."),
    entry("abs-only", "A Study of Training", "We mention diffusion once in this abstract."),
    entry("title", "Diffusion Transformers", "An architecture study."),
    entry("vit", "Training ViTs from Scratch", "Vision transformers need data."),
    entry("author", "Some Paper", "Text.", authors=("Yann LeCun", "Ada Lovelace")),
    entry("pre", "Pre-training at Scale", "Large-scale pre-training."),
    entry("exact", "Mixture of Experts Routing", "Sparse mixture-of-experts layers."),
    entry("dup1", "Attention Is All You Need", "Transformers.", upvotes=50),
    entry("dup2", "Attention is all you need!", "Transformers again.", upvotes=2),
    entry("learned", "Kolmogorov Arnold Networks", "We propose Kolmogorov-Arnold Networks (KANs). "
          "KANs are an alternative to MLPs."),
    entry("uni", "Über-Netzwerke für Sprache", "Deutsch: Sprachmodelle und Übersetzung."),
    entry("popular", "Unrelated Popular Paper", "Nothing to see.", upvotes=500),
]


@pytest.fixture(scope="module")
def ranker() -> Ranker:
    acronyms = Acronyms.load()
    for e in FIXTURE:
        acronyms.learn(e.abstract)
    return Ranker(Corpus(FIXTURE, acronyms, CFG, TODAY), CFG)


def picks(ranker: Ranker, profile: str, **kw: object) -> list[str]:
    [chunk] = ranker.rank([("s", profile)], **kw)  # type: ignore[arg-type]
    return [FIXTURE[i].id for i in chunk.picks[0] if i >= 0]


def is_trending(ranker: Ranker, profile: str) -> bool:
    [chunk] = ranker.rank([("s", profile)])
    return bool(chunk.trending[0])


# ---- the language -------------------------------------------------------------


def test_profile_language_parses_every_form() -> None:
    p = parse_profile('state space models\n"mixture of experts", diffusion^2, -medical, '
                      'author:"Yann LeCun"; GNN')
    kinds = [(t.text, t.kind, t.weight, t.exclude) for t in p.terms]
    assert kinds == [
        ("state space models", "topic", 1.0, False),
        ("mixture of experts", "exact", 1.0, False),
        ("diffusion", "topic", 2.0, False),
        ("medical", "topic", 1.0, True),
        ("Yann LeCun", "author", 1.0, False),
        ("GNN", "topic", 1.0, False),
    ]
    assert str(parse_profile(str(p))) == str(p)  # printing round-trips


@pytest.mark.parametrize("text, fragment", [
    ('"unclosed', "unclosed quote"),
    ("x^abc", r"weight after \^ must be a number"),
    ("x^0", "above 0"),
    ("x^11", "at most 10"),
    ("-", "empty term"),
    ("author:", "empty author name"),
    ('ab"c"', "quotes must wrap"),
    ("y" * 201, "longer than 200"),
])
def test_profile_errors_say_what_is_wrong(text: str, fragment: str) -> None:
    with pytest.raises(ProfileError, match=fragment):
        parse_profile(text)


def test_repeated_terms_keep_the_largest_weight_and_the_limit_holds() -> None:
    assert parse_profile("gan^2, gan") == parse_profile("gan^2")
    assert parse_profile("GAN, gan^3, gan^2").terms[0].weight == 3
    with pytest.raises(ProfileError, match="at most 500"):
        parse_profile(", ".join(f"t{i}" for i in range(600)))


# ---- matching -------------------------------------------------------------------


def test_phrase_with_stemming_and_hyphens(ranker: Ranker) -> None:
    assert picks(ranker, "state space model")[0] == "ssm"  # "State-Space Models"


def test_acronym_and_long_form_both_ways(ranker: Ranker) -> None:
    long_form = set(picks(ranker, "graph neural network"))
    short_form = set(picks(ranker, "GNN"))
    assert {"gnn", "gnn-acr", "med"} <= long_form
    assert long_form == short_form
    assert "llm" in picks(ranker, "LLM") and "llm" in picks(ranker, "large language models")
    assert "vit" in picks(ranker, "vision transformer")


# The definition pattern as it was before a match was kept from starting inside a word.
_WHOLE_SCAN = (r"((?:[\w][\w-]*\s+){1,8}?)\(\s*([A-Z][A-Za-z0-9]*[A-Z][a-z]?s?)\s*\)")


@settings(max_examples=500, deadline=None)
@given(text=st.lists(st.sampled_from(["Long", "Form", "x", "é", "-", "_", " ", "\n", "(", ")",
                                      "LF", "CNNs", "Xs", "1", ",", "ML", "a-b"]),
                     max_size=30).map("".join))
def test_acronym_definitions_found_as_by_a_scan_from_every_character(text: str) -> None:
    """Starting matches only outside words finds exactly what the old pattern found."""
    import re

    from newsletter.ranking.text import _DEFINITION

    def found(pattern: re.Pattern[str]) -> list[tuple[tuple[int, int], tuple[str, ...]]]:
        return [(m.span(), m.groups()) for m in pattern.finditer(text)]

    assert found(_DEFINITION) == found(re.compile(_WHOLE_SCAN))

def test_acronym_learned_from_papers(ranker: Ranker) -> None:
    assert "learned" in picks(ranker, "KAN")


def test_hyphen_joined_forms(ranker: Ranker) -> None:
    assert "pre" in picks(ranker, "pretraining")


def test_title_outranks_abstract(ranker: Ranker) -> None:
    got = picks(ranker, "diffusion")
    assert got.index("title") < got.index("abs-only")


def test_exclusion_is_never_picked(ranker: Ranker) -> None:
    assert "med" in picks(ranker, "GNN")
    got = picks(ranker, "GNN, -medical")
    assert "med" not in got and "gnn" in got


def test_only_exclusions_and_empty_profile_get_trending_only(ranker: Ranker) -> None:
    for profile in ["", "-medical", "quantum chromodynamics"]:
        assert is_trending(ranker, profile)
        got = picks(ranker, profile)
        assert got[0] == "popular" and len(got) == CFG.trending_count
    assert "med" not in picks(ranker, "-medical")


def test_trending_can_be_turned_off() -> None:
    cfg = CFG.model_copy(update={"trending": "none"})
    r = Ranker(Corpus(FIXTURE, Acronyms.load(), cfg, TODAY), cfg)
    assert picks(r, "quantum chromodynamics") == []


def test_exact_phrase(ranker: Ranker) -> None:
    assert picks(ranker, '"mixture of experts"')[0] == "exact"
    assert picks(ranker, '"experts of mixture"') == picks(ranker, "")  # nothing: trending


def test_author(ranker: Ranker) -> None:
    assert picks(ranker, 'author:"Yann LeCun"')[0] == "author"
    assert picks(ranker, 'author:"LeCun Yann"')[0] == "author"


def test_weights_change_the_order(ranker: Ranker) -> None:
    a = picks(ranker, "diffusion^5, LLM")
    b = picks(ranker, "diffusion, LLM^5")
    assert a[0] == "title" and b[0] == "llm"


def test_near_duplicates_appear_once(ranker: Ranker) -> None:
    got = picks(ranker, "attention")
    assert got.count("dup1") + got.count("dup2") == 1 and "dup1" in got  # the better copy


def test_already_sent_is_never_picked_again(ranker: Ranker) -> None:
    index = [e.id for e in FIXTURE].index("gnn")
    assert "gnn" in picks(ranker, "GNN")
    assert "gnn" not in picks(ranker, "GNN", sent={"s": [index]})


def test_unicode_profile(ranker: Ranker) -> None:
    assert picks(ranker, "Übersetzung")[0] == "uni"
    assert picks(ranker, "über-netzwerke")[0] == "uni"


def test_a_profile_of_200_terms(ranker: Ranker) -> None:
    terms = [f"term{i}" for i in range(199)] + ["GNN"]
    got = picks(ranker, ", ".join(terms))
    assert "gnn" in got


def test_explanations_name_the_matched_terms(ranker: Ranker) -> None:
    index = [e.id for e in FIXTURE].index("gnn")
    [ex] = ranker.explain_many("GNN, diffusion, -medical", [index])
    assert [t for t, _ in ex.matched] == ["GNN"]
    assert ex.why == "matched: GNN"
    assert ex.relevance > 0 and ex.score == pytest.approx(ex.relevance + ex.popularity
                                                          + ex.recency, abs=1e-3)


def test_highlight_spans_find_surface_forms(ranker: Ranker) -> None:
    profile = parse_profile("state space models, GNN")
    text = "Selective State-Space Models beat GNNs."
    feats = [ranker.analyzer.feature(t) for t in profile.terms]
    spans = highlight_spans(text, feats, ranker.corpus.acronyms)
    assert [text[a:b] for a, b in spans] == ["State-Space Models", "GNNs"]


# ---- the engine ------------------------------------------------------------------


def reference_scores(ranker: Ranker, profile_text: str, sent: set[int]) -> dict[int, float]:
    """A deliberately plain re-implementation: loop over entries and terms."""
    profile = parse_profile(profile_text)
    corpus, cfg = ranker.corpus, ranker.cfg
    out = {}
    for e in range(len(corpus.entries)):
        if e in sent or not corpus.canonical[e]:
            continue
        if any(corpus.row(ranker.analyzer.feature(t))[e] > 0 for t in profile.negative):
            continue
        rel = sum(t.weight * float(corpus.row(ranker.analyzer.feature(t))[e])
                  for t in profile.positive)
        if rel >= cfg.min_relevance:
            out[e] = cfg.weight_relevance * rel + float(corpus.bonus[e])
    return out


def test_vectorized_engine_matches_a_plain_loop() -> None:
    path = Path(__file__).resolve().parent.parent / "newsletter" / "data" / "sample_papers.json"
    data = json.loads(path.read_text())
    entries = [RankEntry(d["id"], d["title"], d["abstract"], upvotes=d["upvotes"]) for d in data]
    r = Ranker(Corpus(entries, Acronyms.load(), CFG, TODAY), CFG)
    vocab = ["diffusion", "graph neural networks", "GNN", "vision transformer", "federated",
             "segmentation", "LLM", "mamba", "-medical", "-video", "residual^2", "point cloud",
             "knowledge distillation", "robustness^0.5", '"neural networks"', "attention"]
    rng = random.Random(7)
    profiles = [(i, ", ".join(rng.sample(vocab, rng.randint(1, 6)))) for i in range(300)]
    sent = {i: rng.sample(range(len(entries)), 5) for i in range(0, 300, 3)}
    got = {}
    for chunk in r.rank(profiles, sent=sent, k=10, chunk_size=37):
        for key, row, scores, trend in zip(chunk.keys, chunk.picks, chunk.scores, chunk.trending,
                                           strict=True):
            got[key] = (list(row[row >= 0]), list(scores[row >= 0]), bool(trend))
    for key, text in profiles:
        ref = reference_scores(r, text, set(sent.get(key, [])))
        picks_, scores, trend = got[key]
        if not ref:
            assert trend
            continue
        best = sorted(ref.values(), reverse=True)[:10]
        assert not trend
        np.testing.assert_allclose(scores, best, rtol=1e-4)
        assert all(ref[p] == pytest.approx(s, rel=1e-4) for p, s in zip(picks_, scores,
                                                                          strict=True))


def test_chunking_does_not_change_results(ranker: Ranker) -> None:
    profiles = [(i, p) for i, p in enumerate(["GNN", "diffusion, -medical", "", "LLM^2, ViT"] * 5)]
    small = [c.picks for c in ranker.rank(profiles, chunk_size=3)]
    big = [c.picks for c in ranker.rank(profiles, chunk_size=100)]
    assert np.array_equal(np.vstack(small), np.vstack(big))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(
    st.sampled_from(["diffusion", "Diffusion", "diffusions", "attention", "LLM",
                     "large language model", "author:Ada Lovelace", "graph", "x"]),
    st.sampled_from(["", "-", " -"]),
    st.sampled_from(["", "^2", "^0.5", " ^3"]),
    st.sampled_from([",", ";", "\n", " , ", ",,"])), max_size=8))
def test_fast_profile_split_agrees_with_the_parser(parts) -> None:  # type: ignore[no-untyped-def]
    """The ranker's per-part table gives exactly what the whole-profile parser gives,
    duplicates, case, weights and exclusions included (one ranker reused, so the table
    is warm for later examples)."""
    text = "".join(f"{neg}{term}{w}{sep}" for term, neg, w, sep in parts)
    ranker = _SHARED_RANKER()
    fast = ranker._terms_of(text)
    slow = ranker._dedupe([ranker._term_hit(t) for t in profile_terms(text)])
    assert fast == slow


def _small_ranker() -> Ranker:
    """A fresh ranker over two papers, for tests of profile parsing."""
    cfg = RankingConfig()
    entries = [RankEntry("a", "Diffusion models for graphs", "attention is used"),
               RankEntry("b", "Large language models", "LLM attention")]
    return Ranker(Corpus(entries, Acronyms.load(), cfg, dt.date(2025, 1, 1)), cfg)


def _shared_ranker_factory():  # type: ignore[no-untyped-def]
    made: list[Ranker] = []

    def get() -> Ranker:
        if not made:
            made.append(_small_ranker())
        return made[0]
    return get


_SHARED_RANKER = _shared_ranker_factory()


def _one_by_one(ranker: Ranker, batch: list[tuple[str, str]]) -> tuple[
        list[tuple[str, int, float, bool]], str]:
    """Each profile's terms as ``_terms_of`` finds them, profile by profile (what a
    chunk's parsing must equal), or the error the first bad profile raises."""
    out = []
    for key, text in batch:
        try:
            hits = ranker._terms_of(text)
        except ProfileError as exc:
            return [], f"subscriber {key}: {exc.message}"
        out += [(key, h.fid, h.weight, h.exclude) for h in hits]
    return sorted(out), ""


_CHUNK_TERMS = ["diffusion", "Diffusion", "diffusions", "attention", "LLM", "graph", "x",
                "large language model", "author:Ada Lovelace", '"state space"', '"a, b"',
                "", " ", "mamba", "vision transformer", "ViT", "state space"]
_BAD_TERMS = ["y" * 201, "graph^x", "graph^"]  # each one a ProfileError


_CHUNK = st.lists(st.lists(st.tuples(
    st.sampled_from(_CHUNK_TERMS), st.sampled_from(["", "-", " -"]),
    st.sampled_from(["", "^2", "^0.5", " ^3"]),
    st.sampled_from([",", ";", "\n", " , ", ",,"])), max_size=6), min_size=1, max_size=12)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(_CHUNK, st.booleans(), st.integers(0, 7), st.integers(0, 20),
                          st.sampled_from(_BAD_TERMS)), min_size=1, max_size=3))
def test_chunk_parsing_agrees_with_profile_by_profile(chunks) -> None:  # type: ignore[no-untyped-def]
    """``_written`` parses a whole chunk at once (one table of raw parts, quoted or
    repeated profiles set aside for the parser): the same terms for every subscriber,
    the same features numbered in the same order, and the same error for the same first
    bad profile, as parsing them one by one; chunk after chunk on the same two rankers
    (the second finds parts the first remembered), with keys that are not numbers."""
    one, chunk = _small_ranker(), _small_ranker()
    for c, (profiles, long_one, bad, where, bad_term) in enumerate(chunks):
        texts = ["".join(f"{neg}{term}{w}{sep}" for term, neg, w, sep in parts)
                 for parts in profiles]
        if long_one:  # more parts than the parser takes: that profile goes to it whole
            texts.append(", ".join(["graph"] * 501))
        if bad == 0:  # now and then a term the parser refuses, somewhere in the chunk
            i = where % len(texts)
            texts[i] = f"{texts[i]}, {bad_term}"
        batch = [(f"s{c}-{i}", t) for i, t in enumerate(texts)]
        expected, error = _one_by_one(one, batch)
        try:
            written = chunk._written(batch)
        except ProfileError as exc:
            assert str(exc) == error
            continue
        assert not error
        assert chunk._features == one._features  # numbered in the same order
        assert (written.n, written.nf) == (len(batch), len(one.feature_ids))
        row = {key: r for r, (key, _) in enumerate(batch)}
        got = sorted(zip(written.rows.tolist(), written.fids.tolist(), strict=True))
        assert got == sorted((row[key], fid) for key, fid, _, _ in expected)
        weights = written.weights.toarray()
        excluded = (written.excluded.toarray() if written.excluded is not None
                    else np.zeros_like(weights))
        for key, fid, weight, exclude in expected:
            if exclude:
                assert excluded[row[key], fid] == 1
            else:
                assert weights[row[key], fid] == np.float32(weight)
        assert np.count_nonzero(weights) == sum(1 for _, _, w, x in expected if not x and w)
        assert np.count_nonzero(excluded) == sum(1 for *_, x in expected if x)


_DEFINITION_PIECES = ["graph", "Neural", "net-works", "-x", "y-", "a--b", "(GNN)", "(GNNs)",
                      "( LLM )", "(Ab)", "(AB)", "(A1B)", ",", "(", ")", "é", "_u", "(ViT)"]


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(_DEFINITION_PIECES), max_size=30),
       st.lists(st.sampled_from([" ", "  ", "\n", "", "\t"]), min_size=30, max_size=30))
def test_definitions_are_what_the_pattern_finds_from_the_left(pieces: list[str],
                                                              gaps: list[str]) -> None:
    """``definitions`` (each "(LF)" found first, the words before it read backwards)
    gives the matches, spans and groups of ``_DEFINITION.finditer``: runs of more than
    eight words, hyphens at either end of a word, words glued to a parenthesis, two
    definitions in a row."""
    from newsletter.ranking.text import _DEFINITION, definitions

    text = "".join(p + g for p, g in zip(pieces, gaps, strict=False))
    assert ([(m.span(), m.groups()) for m in definitions(text)]
            == [(m.span(), m.groups()) for m in _DEFINITION.finditer(text)])


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet="aB -()sXY1\n_é\t.,", max_size=80))
def test_definitions_agree_on_any_text(text: str) -> None:
    from newsletter.ranking.text import _DEFINITION, definitions

    assert ([(m.span(), m.groups()) for m in definitions(text)]
            == [(m.span(), m.groups()) for m in _DEFINITION.finditer(text)])


_IMPORTS = """
import json, sys
import numpy as np
listed, names = list(np.__all__), dir(np)
{imports}
tools = ("numpy.f2py", "numpy.testing", "numpy.ma", "numpy.polynomial")
out = {{"loaded": [m for m in tools if m in sys.modules],
        "same": np.__all__ == listed and dir(np) == names}}
try:
    from newsletter.ranking.sparse import numpy_without_unused
    with numpy_without_unused():
        raise KeyError("inside")
except KeyError:
    out["same_after_error"] = np.__all__ == listed and dir(np) == names
from newsletter.ranking.sparse import sparse
m = sparse.csr_matrix(np.eye(3, dtype=np.float32))
out["works"] = float((m @ m).sum()) == 3.0 and callable(np.testing.assert_array_equal)
print(json.dumps(out))
"""


def _imported(imports: str) -> dict[str, object]:
    done = subprocess.run([sys.executable, "-c", _IMPORTS.format(imports=imports)],
                          capture_output=True, text=True, check=True)
    return dict(json.loads(done.stdout))


def test_the_ranking_imports_scipy_sparse_without_numpys_unused_tools() -> None:
    """scipy's array-API layer clones numpy and so loads f2py, testing, ma... (a tenth
    of a second or more); the ranking's import of scipy.sparse leaves them unloaded and
    numpy's ``__all__`` and ``dir()`` as they were, an error inside the guard included.
    The plain import is the control: when scipy stops loading them, this module can go."""
    plain = _imported("from scipy import sparse")
    assert plain["loaded"], "scipy.sparse no longer loads numpy's tools: drop the guard"
    ours = _imported("import newsletter.ranking.engine, newsletter.ranking.reader")
    assert ours == {"loaded": [], "same": True, "same_after_error": True, "works": True}


def test_distinct_is_numpys_unique_without_loading_numpy_ma() -> None:
    """Planning takes the distinct papers of every chunk's picks: ``np.unique`` loads
    ``numpy.ma`` to ask whether the array is masked (the control), ``distinct`` not."""
    control = _imported("np.unique(np.array([3, 1, 3]))")
    assert "numpy.ma" in control["loaded"], "np.unique no longer loads numpy.ma"
    ours = _imported("from newsletter.ranking.sparse import distinct\n"
                     "assert distinct(np.array([[3, 1], [3, -1]])).tolist() == [-1, 1, 3]")
    assert ours["loaded"] == []


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(st.integers(-3, 40), min_size=0, max_size=6), min_size=1,
                max_size=8).filter(lambda rows: len({len(r) for r in rows}) == 1))
def test_distinct_agrees_with_numpys_unique(rows: list[list[int]]) -> None:
    import numpy as np

    from newsletter.ranking.sparse import distinct

    picks = np.array(rows, dtype=np.intp)
    assert distinct(picks).tolist() == np.unique(picks).tolist()
    assert distinct(picks).dtype == np.unique(picks).dtype


@contextlib.contextmanager
def _rows_at_once(n: int) -> Iterator[None]:
    from newsletter.ranking import corpus

    was, corpus.ROWS_AT_ONCE = corpus.ROWS_AT_ONCE, n
    try:
        yield
    finally:
        corpus.ROWS_AT_ONCE = was


_ROW_TERMS = ["graph neural networks", "graph", "neural", "diffusion models", "diffusion",
              "state space models", "language models", "LLM", "attention", "medical",
              "medical imaging", "vision transformer", "\"mixture of experts\"",
              "author:Vaswani", "-robotics", "-medical", "reinforcement learning", "the",
              "networks graph", "models"]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.sampled_from(_ROW_TERMS), min_size=1, max_size=5),
                min_size=1, max_size=4), st.booleans())
def test_feature_rows_made_together_are_the_rows_made_one_by_one(
        chunks: list[list[str]], related: bool) -> None:
    """``Corpus.rows`` (a chunk's new features at once: topics, their words, exact
    phrases; exclusions, authors and a field's related terms through ``row``) gives
    each feature the bits ``row`` gives it on a fresh corpus, whatever is cached
    already (earlier chunks, a topic's words asked for as terms of their own)."""
    from newsletter.ranking.related import RelatedTerms
    from newsletter.render.samples import sample_papers

    cfg = RankingConfig()
    rows = [RankEntry(p.id, p.title, p.abstract or "", tuple(p.keywords or ()),
                      tuple(p.authors or ())) for p in sample_papers()[:60]]
    area = RelatedTerms.load() if related else None

    def corpus() -> Corpus:
        return Corpus(rows, Acronyms.load(), cfg, TODAY, related=area)

    together, alone = corpus(), corpus()
    analyzer = Ranker(together, cfg).analyzer
    for terms in chunks:
        features = [analyzer.feature(t) for t in parse_profile(", ".join(terms)).terms]
        with _rows_at_once(2):  # several batches, a topic's words in another than it
            made = together.rows(features)
        expected = np.stack([alone.row(f) for f in features])
        assert made.dtype == np.float32
        assert made.view(np.uint32).tolist() == expected.view(np.uint32).tolist()


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(_ROW_TERMS + ["\"graph neural networks for molecules\"",
                                              "state space models for long sequences",
                                              "no such words anywhere"]),
                min_size=1, max_size=8))
def test_term_counts_are_the_sums_of_the_postings(terms: list[str]) -> None:
    """``Corpus._tf`` (summed in dicts, put in the array at once) counts what adding each
    field's postings one by one counts, for topics, exact phrases, phrases longer than
    the index's grams and terms no paper has."""
    from newsletter.ranking.corpus import FIELD_WEIGHTS
    from newsletter.render.samples import sample_papers

    rows = [RankEntry(p.id, p.title, p.abstract or "", tuple(p.keywords or ()),
                      tuple(p.authors or ())) for p in sample_papers()[:60]]
    corpus = Corpus(rows, Acronyms.load(), RankingConfig(), TODAY)
    analyzer = Ranker(corpus, RankingConfig()).analyzer
    features = [analyzer.feature(t) for t in parse_profile(", ".join(terms)).terms]
    asked = [(f.kind, f.variants) for f in features] + [("topic", f.parts) for f in features]
    expected = np.zeros((len(asked), len(rows)))
    for j, (kind, variants) in enumerate(asked):
        for fname, weight in FIELD_WEIGHTS.items():
            for variant in variants:
                for i, count in corpus._postings(fname, kind, variant).items():
                    expected[j, i] += weight * count
    assert corpus._tf(asked).tolist() == expected.tolist()


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet="aAbBsSnNgGtThe019-_'é\u2010", min_size=1, max_size=12)
       | st.sampled_from(["GNNs", "GNNS", "gnns", "LLMs", "ViTs", "the", "The", "THE",
                          "Transformers", "s", "S", "x1s", "X1s", "pre-training", "ABCs"]))
def test_a_plain_word_is_indexed_as_the_text_pipeline_indexes_it(word: str) -> None:
    """The corpus's fast way for plain ASCII words (``_word``) gives what the text
    pipeline gives (``_word_analysed``): stop words, acronyms and their plurals, any
    case; other words go through the pipeline itself."""
    from newsletter.ranking.corpus import _word, _word_analysed
    from newsletter.ranking.text import words

    acronyms = Acronyms.load()
    acronyms.learn("Graph Neural Networks (GNNs) and Attention Blocks Connected (ABC)")
    for found in words(word):  # the corpus indexes the words ``words`` finds
        assert _word(found, acronyms) == _word_analysed(found, acronyms)


def test_a_chunk_that_fails_to_parse_leaves_no_feature_without_its_row() -> None:
    """A chunk's new features get their rows together when it is parsed; a profile that
    fails midway still leaves every feature made before it with its row (later chunks
    and explanations read them)."""
    ranker = _small_ranker()
    batch = [(1, "diffusion models, attention"), (2, "large language models, graphs"),
             (3, "LLM, graph^x"), (4, "attention")]
    with pytest.raises(ProfileError, match="subscriber 3"):
        list(ranker.rank(batch))
    assert len(ranker.features) >= 4
    made = ranker.feature_rows
    alone = _small_ranker().corpus
    assert made.tolist() == [alone.row(f).tolist() for f in ranker.features]
    assert made.any()


def test_explaining_waits_for_a_chunk_being_parsed_in_another_thread() -> None:
    """A chunk's new features have their ids at once and their rows when the chunk is
    parsed: another thread explaining a term the chunk has just seen waits for the rows
    and reads them, never the empty row meanwhile."""
    import threading

    ranker = _small_ranker()
    got: list[list[str]] = []
    with ranker._rows_together():
        ranker._terms_of("large language models")  # made here, its row still to come
        reader = threading.Thread(target=lambda: got.append(
            [t for ex in ranker.explain_many("large language models", [0, 1])
             for t, _ in ex.matched]))
        reader.start()
        reader.join(timeout=1.0)
    reader.join()
    assert got == [[t for ex in ranker.explain_many("large language models", [0, 1])
                    for t, _ in ex.matched]]
    assert got[0]  # it matches paper "b"


def _eager_postings(corpus: Corpus) -> dict[str, dict[tuple[str, ...], dict[int, int]]]:
    """Every n-gram's postings, built as the corpus built them before they were made on
    first ask (each field of each paper, every gram of 1 to MAX_NGRAM stems, and a
    hyphenated word written as one)."""
    from collections import Counter, defaultdict

    from newsletter.ranking.corpus import FIELD_WEIGHTS, MAX_NGRAM, _ngrams, _word
    from newsletter.ranking.text import words

    index: dict[str, dict[tuple[str, ...], dict[int, int]]] = {
        f: defaultdict(dict) for f in FIELD_WEIGHTS}
    for i, e in enumerate(corpus.entries):
        texts = {"title": e.title, "keywords": " , ".join(e.keywords), "abstract": e.abstract}
        for fname, text in texts.items():
            toks: list[str] = []
            joined: list[str] = []
            for w in words(text):
                stems_, _, compounds = _word(w, corpus.acronyms)
                toks += stems_
                joined += compounds
            grams = Counter(_ngrams(toks, MAX_NGRAM))
            grams.update(zip(joined, strict=True))
            for gram, count in grams.items():
                index[fname][gram][i] = count
    return index


def _same_postings(corpus: Corpus) -> None:
    eager = _eager_postings(corpus)
    for fname, grams in eager.items():
        postings = corpus.index[fname]
        for gram, want in grams.items():
            assert list(postings[gram].items()) == list(want.items()), (fname, gram)
            assert postings.get(gram, ()) == want
            flipped = gram[::-1]  # often in no paper: empty, or what the eager build has
            assert postings[flipped] == grams.get(flipped, {}), (fname, flipped)
            # asked again: an absent gram is remembered as absent, a present one kept
            assert postings[flipped] == grams.get(flipped, {}), (fname, flipped)
        assert postings[("no-such-stem",)] == {}
        assert postings.get(("no-such-stem", "either"), ()) == ()
    # what is kept is what some paper has: asking for grams no paper has adds nothing
    for fname, grams in eager.items():
        assert set(corpus.index[fname]) <= set(grams)


def test_a_gram_no_paper_had_is_found_once_a_paper_has_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Grams no paper has are remembered as absent (planning asks for them, then every
    email explaining a phrase does), boundedly, and forgotten when a paper is added."""
    from collections import Counter

    from newsletter.ranking import corpus as corpus_mod

    monkeypatch.setattr(corpus_mod, "ABSENT_GRAMS", 3)
    p = corpus_mod.Postings()
    p.add(Counter({("graph",): 1}), Counter({("graph",): 1}))
    p.add(Counter({("neural",): 2}), Counter({("neural",): 2}))
    for _ in range(2):
        assert p[("graph", "neural")] == {}
        assert p.get(("graph", "neural")) is None
    p.add(Counter({("graph",): 1, ("neural",): 1, ("graph", "neural"): 1}),
          Counter({("graph",): 1, ("neural",): 1}))
    assert p[("graph", "neural")] == {2: 1}
    for i in range(10):  # many absent grams: at most ABSENT_GRAMS remembered
        assert p[("graph", f"x{i}")] == {}
        assert len(p._absent) <= 3
    assert set(p) == {("graph",), ("neural",), ("graph", "neural")}


def test_postings_made_on_ask_are_the_eager_postings_on_the_bundled_papers() -> None:
    from newsletter.ranking.selection import load_acronyms
    from newsletter.render.samples import sample_papers

    rows = [RankEntry.of(p) for p in sample_papers()]
    _same_postings(Corpus(rows, load_acronyms(RankingConfig(), rows), RankingConfig(), TODAY))


_WORDS = ["graph", "neural", "network", "networks", "diffusion", "model", "models", "the",
          "of", "state-of-the-art", "zero-shot", "large", "language", "LLM", "large-scale",
          "attention", "vision", "transformer", "ViT", "point", "cloud", "point-cloud"]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.lists(st.sampled_from(_WORDS), max_size=8),
                          st.lists(st.sampled_from(_WORDS), max_size=40)),
                min_size=1, max_size=12))
def test_postings_made_on_ask_are_the_eager_postings(papers: list[tuple[list[str],
                                                                      list[str]]]) -> None:
    """Repeated words and phrases (a gram twice in one paper, overlapping itself), stop
    words, acronyms and hyphenated words, in any order: a few words, so papers share
    them and the grams asked for are in some papers and not in others."""
    rows = [RankEntry(f"p{i}", " ".join(title), " ".join(abstract),
                      keywords=tuple(abstract[:2]))
            for i, (title, abstract) in enumerate(papers)]
    _same_postings(Corpus(rows, Acronyms.load(), RankingConfig(), TODAY))
