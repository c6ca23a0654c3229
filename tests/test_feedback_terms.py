"""Which terms a vote teaches, as the reader sees them on the preferences page and in
the email's explanations: one term per thing the paper is about (a phrase, not the
phrase and its words as well), matched as the ranker matches the reader's own terms,
and nothing the reader's written keywords already cover."""

from __future__ import annotations

import datetime as dt

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import sparse

from newsletter.config import RankingConfig
from newsletter.profile import Term
from newsletter.ranking.engine import Corpus, RankEntry, Ranker
from newsletter.ranking.feedback import Learner, Votes
from newsletter.ranking.text import Acronyms

TODAY = dt.date(2025, 9, 1)
CFG = RankingConfig(trending="none", reader_fills=False, reader_reorder=0)
# Papers about nothing in particular, so the others' terms are rare enough to be learned.
FILLER = [RankEntry(f"z{i}", f"Unrelated paper {i}", "Nothing here.") for i in range(12)]
TODAYS = [
    RankEntry("ft", "Fine-tuning language models", "We fine-tune models."),
    RankEntry("grained", "Fine-grained recognition of birds", "Birds."),
    RankEntry("hyper", "Hyperparameter tuning at scale", "Search."),
    RankEntry("noniid", "Non-IID federated learning", "Clients with non-IID data."),
    RankEntry("iid", "Federated learning under IID data", "IID clients."),
    RankEntry("convex", "Non convex optimisation", "Non convex."),
    RankEntry("linear", "Non linear dynamics", "Non linear."),
    *FILLER,
]
LIKED = RankEntry("p", "Fine tuning on Non-IID clients",
                  "Fine tuning federated models on non-IID data.")


def learned_from(liked: RankEntry, keywords: str = "",
                 mutes: frozenset[str] = frozenset()) -> tuple[Ranker, list]:  # type: ignore[type-arg]
    r = Ranker(Corpus(TODAYS, Acronyms.load(), CFG, TODAY), CFG,
               Votes.of([(1, 0, 1, 0.0)], [liked], {1: mutes} if mutes else None))
    assert r.learner is not None
    written = {t.fid for t in r._terms_of(keywords)}
    return r, r.learner.learned(1, written)


def test_a_liked_phrase_is_learned_once_not_with_its_words() -> None:
    """A paper titled "Fine tuning ..." teaches "Fine tuning", not also "Fine" and
    "tuning": those alone lift a paper on fine-grained birds and one on hyperparameter
    tuning, which the phrase is not about."""
    r, learned = learned_from(LIKED)
    terms = {t.term for t in learned}
    assert {"Fine tuning", "Non IID"} <= terms
    assert not terms & {"Fine", "tuning", "Non", "IID"}, terms
    at = {e.id: i for i, e in enumerate(r.corpus.entries)}
    lifted = {e for e, i in at.items()
              if sum(t.weight * float(r.feature_rows[t.fid, i]) for t in learned) > 0}
    assert {"ft", "noniid"} <= lifted
    assert not lifted & {"grained", "hyper", "convex", "linear"}, lifted


def test_a_learned_phrase_matched_by_its_words_apart_says_which() -> None:
    """A learned phrase is matched as a written one is (the phrase, and its words apart
    for part of the score where they say enough), and its explanation names the words
    the paper has when it lacks the phrase, as a written term's does."""
    r, learned = learned_from(LIKED)
    profile = "federated learning"
    [chunk] = r.rank([(1, profile)], k=5)
    picks = [int(i) for i in chunk.picks[0] if i >= 0]
    why = {r.corpus.entries[i].id: ex.why
           for i, ex in zip(picks, r.explain_many(profile, picks, key=1), strict=True)}
    assert "Non IID — you liked 1 paper" in why["noniid"]
    assert "Non IID (via IID) — you liked 1 paper" in why["iid"]


def test_a_removed_learned_phrase_keeps_its_key() -> None:
    """A phrase removed on the preferences page is stored by its stems ("non iid"),
    and stays removed."""
    _, learned = learned_from(LIKED)
    assert "non iid" in {t.key for t in learned}
    _, muted = learned_from(LIKED, mutes=frozenset({"non iid"}))
    assert "Non IID" not in {t.term for t in muted} and muted


WORDS = ("fine", "tuning", "fine-tuning", "non", "iid", "non-iid", "diffusion", "models",
         "federated", "learning", "language", "state", "space", "of", "for", "rethinking",
         "vision", "mamba", "2024")
_titles = st.lists(st.sampled_from(WORDS), min_size=1, max_size=7).map(" ".join)
_papers = st.builds(lambda i, t, a, k: RankEntry(f"t{i}", t, a, tuple(k)),
                    st.integers(0, 10**6), _titles, _titles, st.lists(_titles, max_size=2))


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(today=st.lists(_papers, min_size=1, max_size=8, unique_by=lambda e: e.id),
       voted=_papers, limit=st.integers(1, 8))
def test_one_vote_never_teaches_a_phrase_and_its_own_words(
        today: list[RankEntry], voted: RankEntry, limit: int) -> None:
    """Whatever the papers: no word a voted paper teaches is a word of a phrase it
    teaches, each term is the feature the reader's own term of that text would be
    (so it matches as theirs would), and the strongest still weighs 1."""
    cfg = RankingConfig(trending="none", feedback_terms=limit)
    r = Ranker(Corpus(today, Acronyms.load(), cfg, TODAY), cfg)
    learner = Learner(r, Votes.of([(1, 0, 1, 0.0)], [voted]))
    terms = learner._paper_terms(voted, limit)
    grams = [learner._grams[fid] for fid, _ in terms]
    in_phrases = {w for g in grams if len(g) > 1 for w in g}
    assert not [g for g in grams if len(g) == 1 and g[0] in in_phrases], grams
    for fid, _ in terms:
        assert fid == r.feature_of(Term(learner.labels[fid])), learner.labels[fid]
    assert not terms or max(w for _, w in terms) == 1


def test_a_learned_term_the_written_keywords_hold_is_not_learned() -> None:
    """A reader who wrote "diffusion" is not shown "more on Diffusion Model" learned
    from a liked paper: every paper with the phrase matches "diffusion" already. The
    same paper still teaches it to a reader who wrote something else, and a written
    phrase does not cover a learned one that only shares a word with it."""
    liked = RankEntry("p", "Diffusion Model Distillation for Speech", "Diffusion model.")
    papers = [RankEntry("dm", "Diffusion Model Inference", "A diffusion model."),
              RankEntry("md", "Model Distillation in Practice", "Distil a model."),
              RankEntry("sp", "Speech Recognition", "Speech."), *FILLER]
    r = Ranker(Corpus(papers, Acronyms.load(), CFG, TODAY), CFG,
               Votes.of([(1, 0, 1, 0.0)], [liked]))
    assert r.learner is not None

    def learned(keywords: str) -> set[str]:
        return {t.key for t in r.learner.learned(  # type: ignore[union-attr]
            1, {t.fid for t in r._terms_of(keywords)})}

    assert "diffus model" in learned("speech recognition")
    assert not {k for k in learned("diffusion") if "diffus" in k.split()}
    assert not {k for k in learned("-diffusion, speech") if "diffus" in k.split()}
    assert "diffus model" in learned("latent diffusion")  # shares "diffusion" only
    assert "model distil" not in learned("diffusion, knowledge distillation, model distillation")
    # What the ranking adds is what the page shows: nothing on the covered phrase.
    [chunk] = r.rank([(1, "diffusion")], k=3)
    picks = [int(i) for i in chunk.picks[0] if i >= 0]
    for ex in r.explain_many("diffusion", picks, key=1):
        assert all("Diffusion" not in h.term for h in ex.learned), ex.why


_keywords = st.lists(st.lists(st.sampled_from(WORDS), min_size=1, max_size=2).map(" ".join),
                     min_size=1, max_size=3).map(", ".join)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(today=st.lists(_papers, min_size=1, max_size=8, unique_by=lambda e: e.id),
       voted=st.lists(_papers, min_size=1, max_size=3, unique_by=lambda e: e.id),
       keywords=_keywords)
def test_no_learned_term_is_one_the_written_keywords_cover(
        today: list[RankEntry], voted: list[RankEntry], keywords: str) -> None:
    """Whatever the keywords and votes: no learned term shown is one of the reader's
    written terms, made only of its words, or holds one of its forms whole (stems, as
    the ranker matches them); and the ranking's learned weights are on exactly the
    terms shown."""

    def holds(gram: tuple[str, ...], form: tuple[str, ...]) -> bool:
        return any(gram[i : i + len(form)] == form for i in range(len(gram)))

    r = Ranker(Corpus(today, Acronyms.load(), CFG, TODAY), CFG,
               Votes.of([(1, p, 1, 0.0) for p in range(len(voted))], voted))
    assert r.learner is not None
    written = r._terms_of(keywords)
    shown = r.learner.learned(1, {t.fid for t in written})
    for t in shown:
        gram = r.learner._grams[t.fid]
        for w in written:
            f = r.features[w.fid]
            words = {x for v in f.variants for x in v} | set(f.parts)
            assert t.fid != w.fid and not set(gram) <= words, (t.term, keywords)
            assert not any(holds(gram, v) for v in f.variants), (t.term, keywords)
    nf = len(r.features)
    present = np.zeros((1, nf), np.float32)
    present[0, [w.fid for w in written]] = 1
    weights = r.learner.matrix([1], sparse.csr_matrix(present))
    assert set(weights.indices.tolist()) == {t.fid for t in shown}
