"""Ranking in threads (``Ranker.rank`` with two chunks or more): the same picks, scores,
trending rows and likes as one chunk ranked in one thread, with and without votes;
and the threads end (and the switch interval comes back) however the ranking ends."""

from __future__ import annotations

import datetime as dt
import random
import sys
import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from newsletter.config import RankingConfig
from newsletter.errors import ProfileError
from newsletter.ranking.engine import Corpus, RankEntry, Ranker
from newsletter.ranking.feedback import Votes
from newsletter.ranking.text import Acronyms

TODAY = dt.date(2025, 9, 1)
TOPICS = ["diffusion models", "mixture of experts", "expert routing", "load balancing",
          "speech", "protein folding", "graph networks", "weather forecasting", "images",
          "sparse", "gating network", "rainfall", "audio", "transformers", "medical"]
PAST = [
    RankEntry("p-moe", "Load Balancing for Sparse Mixture of Experts Routing",
              "Expert routing sends each token to a few experts of a sparse mixture."),
    RankEntry("p-protein", "Equivariant Networks for Protein Folding",
              "Protein structure prediction with equivariant graph networks."),
    RankEntry("p-audio", "Diffusion Models for Speech Synthesis",
              "Diffusion models generate speech waveforms from text."),
]
PAPERS = [
    RankEntry("a", "Diffusion Models for Images", "Diffusion models generate images.", upvotes=30),
    RankEntry("b", "Diffusion Models for Audio", "Diffusion models generate audio and speech.",
              upvotes=28),
    RankEntry("c", "Sparse Mixture of Experts with Expert Routing and Load Balancing",
              "A gating network routes each token to a few experts of a sparse mixture."),
    RankEntry("d", "Medical Expert Routing in a Sparse Mixture of Experts",
              "Medical imaging with a gating network that routes tokens to experts."),
    RankEntry("e", "Weather Forecasting with Station Data", "Rainfall from station records."),
    RankEntry("f", "Graph Networks for Protein Folding", "Equivariant graph networks fold "
              "proteins.", upvotes=12),
    RankEntry("g", "Transformers for Weather", "Transformers forecast the weather.", upvotes=3),
]

profiles = st.lists(
    st.lists(st.tuples(st.sampled_from(TOPICS), st.sampled_from(["", "-", "^2 ", '"'])),
             min_size=0, max_size=4).map(
        lambda parts: ", ".join(f'"{t}"' if m == '"' else (f"-{t}" if m == "-" else
                                                           t + ("^2" if m == "^2 " else ""))
                                for t, m in parts)),
    min_size=1, max_size=60)
votes = st.lists(st.tuples(st.integers(0, 59), st.integers(0, len(PAST) - 1),
                           st.sampled_from([-1, 1]), st.floats(0, 90)), max_size=80)


def ranker(vote_rows: list[tuple[int, int, int, float]]) -> Ranker:
    cfg = RankingConfig(trending="section", trending_count=2, reader_threshold=0.1)
    return Ranker(Corpus(PAPERS, Acronyms.load(), cfg, TODAY), cfg,
                  Votes.of(vote_rows, PAST) if vote_rows else None)


def ranked(r: Ranker, texts: list[str], chunk_size: int,
           sent: dict[int, list[int]]) -> list[tuple[object, ...]]:
    out = []
    for chunk in r.rank(enumerate(texts), k=4, chunk_size=chunk_size, sent=sent):
        for row, key in enumerate(chunk.keys):
            liked = None if chunk.liked is None else chunk.liked[row].tolist()
            out.append((key, chunk.picks[row].tolist(), chunk.scores[row].tolist(),
                        bool(chunk.trending[row]), liked))
    return out


@settings(max_examples=40, deadline=None)
@given(texts=profiles, vote_rows=votes, size=st.integers(1, 9), every=st.integers(1, 5))
def test_chunks_scored_in_threads_match_one_chunk_in_one_thread(
        texts: list[str], vote_rows: list[tuple[int, int, int, float]], size: int,
        every: int) -> None:
    sent = {key: [0, 2] for key in range(0, len(texts), every)}  # had papers a and c
    one = ranked(ranker(vote_rows), texts, 10_000, sent)  # one chunk: no thread
    many = ranked(ranker(vote_rows), texts, size, sent)  # several: scored in threads
    assert many == one


def test_explaining_picks_while_chunks_are_scored_gives_what_one_thread_gives() -> None:
    """What `newsletter rank` does: each chunk's picks explained (with what votes taught)
    while later chunks are scored in threads; the learner's caches are shared by both.
    Every profile brings a term of its own, so each chunk has more features."""
    rnd = random.Random(1)
    words = TOPICS + ["experts", "routing", "equivariant", "station", "token", "gating"]
    texts = [", ".join([*rnd.sample(words, 2), f"zz{i}word"]) for i in range(1500)]
    vote_rows = [(rnd.randrange(len(texts)), rnd.randrange(len(PAST)), rnd.choice([1, 1, -1]),
                  rnd.uniform(0, 60)) for _ in range(2000)]

    def explained(chunk_size: int) -> list[tuple[object, ...]]:
        r = ranker(vote_rows)
        out: list[tuple[object, ...]] = []
        for chunk in r.rank(enumerate(texts), k=4, chunk_size=chunk_size):
            for row, key in enumerate(chunk.keys):
                picks = [int(i) for i in chunk.picks[row] if i >= 0]
                out.append((key, picks, [(e.relevance, [h.term for h in e.learned])
                                         for e in r.explain_many(texts[key], picks, key=key)]))
        return out

    assert explained(50) == explained(10_000)


def rank_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("newsletter-rank")]


@pytest.mark.parametrize("how", ["abandoned", "bad profile"])
def test_the_threads_end_and_the_switch_interval_returns(how: str) -> None:
    interval = sys.getswitchinterval()
    texts = ["diffusion models"] * 50 + (['"unclosed'] if how == "bad profile" else [])
    r = ranker([])
    chunks = r.rank(enumerate(texts), k=3, chunk_size=5)
    if how == "abandoned":
        first = next(chunks)
        assert first.picks.shape == (5, 3) and rank_threads()
        chunks.close()  # the caller stops early
    else:  # what was ranked before the bad profile comes out first, as in one thread
        got: list[int] = []
        with pytest.raises(ProfileError, match="subscriber 50"):
            for chunk in chunks:
                got.extend(chunk.keys)
        assert got == list(range(50))
    assert rank_threads() == []
    assert sys.getswitchinterval() == interval
    # and a ranking after that one still ranks everyone
    assert sum(len(c.keys) for c in r.rank(enumerate(["images"] * 12), chunk_size=5)) == 12
    assert np.all(next(iter(r.rank([(0, "images")]))).picks[0][:1] == [0])


def test_two_rankings_at_once_restore_the_switch_interval_once_both_end() -> None:
    """As two web requests would: the first to end must not put back the interval the
    other still ranks with, and the last puts back the one from before both."""
    interval = sys.getswitchinterval()
    texts = ["diffusion models"] * 20
    a = ranker([]).rank(enumerate(texts), k=3, chunk_size=5)
    b = ranker([]).rank(enumerate(texts), k=3, chunk_size=5)
    next(a)
    next(b)
    assert sys.getswitchinterval() < interval
    a.close()
    assert sys.getswitchinterval() < interval
    assert sum(len(c.keys) for c in b) == 15
    assert sys.getswitchinterval() == interval
    assert rank_threads() == []


def test_a_half_read_ranking_leaves_the_collector_as_it_was() -> None:
    """A ranking keeps the collector out of its way only while it works, never while
    its caller holds it between chunks: a caller that keeps a half-read ranking (here
    in a reference cycle, which only a collection could free) must not leave the
    process's collector frozen with raised thresholds, which would keep every cycle
    made meanwhile alive for good."""
    import gc

    before, frozen = gc.get_threshold(), gc.get_freeze_count()

    class Holder:
        def __init__(self) -> None:
            self.me = self
            self.ranking = ranker([]).rank(enumerate(["diffusion models"] * 9), k=4,
                                           chunk_size=2)

    holder = Holder()
    next(holder.ranking)
    assert gc.get_threshold() == before and gc.get_freeze_count() == frozen
    del holder
    gc.collect()
    assert gc.get_threshold() == before and gc.get_freeze_count() == frozen
