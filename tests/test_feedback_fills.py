"""Votes that show: "because you liked <title>" fills for the slots the keywords leave
empty, and gentle re-ordering of keyword picks (``newsletter/ranking/reader.py``),
in the engine and in the record of what an email showed."""

from __future__ import annotations

import datetime as dt
import html

import numpy as np
import pytest

from newsletter.config import RankingConfig
from newsletter.delivery import shown
from newsletter.ranking.engine import Corpus, RankEntry, Ranker
from newsletter.ranking.feedback import Votes
from newsletter.ranking.text import Acronyms

TODAY = dt.date(2025, 9, 1)
ROUTING = ("Expert routing sends each token to a few experts of a sparse mixture; a load "
           "balancing loss keeps the gating network from collapsing onto one expert.")
PAST = [
    RankEntry("p-moe", "Load Balancing for Sparse Mixture of Experts Routing", ROUTING),
    RankEntry("p-protein", "Equivariant Networks for Protein Folding",
              "Protein structure prediction with equivariant graph networks over residues "
              "and side chains."),
    RankEntry("p-audio", "Diffusion Models for Speech Synthesis",
              "Diffusion models generate speech waveforms from text."),
]
PAPERS = [
    RankEntry("a", "Diffusion Models for Images", "Diffusion models generate images.",
              upvotes=30),
    RankEntry("b", "Diffusion Models for Audio", "Diffusion models generate audio and speech "
              "waveforms.", upvotes=28),
    RankEntry("c", "Sparse Mixture of Experts with Expert Routing and Load Balancing",
              "A gating network routes each token to a few experts of a sparse mixture; a load "
              "balancing loss stops expert collapse."),
    RankEntry("d", "Medical Expert Routing in a Sparse Mixture of Experts",
              "Medical imaging with a gating network that routes each token to experts of a "
              "sparse mixture with load balancing."),
    RankEntry("e", "Weather Forecasting with Station Data", "Forecasting rainfall from "
              "weather station records."),
]


def ranker(votes: list[tuple[int, int, int, float]], **cfg_kw: object) -> Ranker:
    """Learned terms off unless asked for (``feedback_up``): they would make a match of
    papers this close to a liked one, and these tests are about the reader model."""
    cfg = RankingConfig(**{"trending": "none", "feedback_up": 0.0, **cfg_kw})  # type: ignore[arg-type]
    return Ranker(Corpus(PAPERS, Acronyms.load(), cfg, TODAY), cfg,
                  Votes.of(votes, PAST) if votes else None)


def picks(r: Ranker, profile: str = "diffusion models", k: int = 4,
          sent: dict[int, list[int]] | None = None) -> list[tuple[str, str]]:
    """(paper id, title of the liked paper it fills for, "" for a keyword pick)."""
    [chunk] = r.rank([(1, profile)], k=k, sent=sent)
    out = []
    for slot, i in enumerate(chunk.picks[0]):
        if i < 0:
            continue
        liked = -1 if chunk.liked is None else int(chunk.liked[0][slot])
        out.append((PAPERS[i].id, PAST[liked].title if liked >= 0 else ""))
    return out


LIKE_MOE = [(1, 0, 1, 0.0)]


def test_an_empty_slot_is_filled_because_you_liked_with_that_papers_title() -> None:
    assert picks(ranker([])) == [("a", ""), ("b", "")]  # the keywords find two
    got = picks(ranker(LIKE_MOE))
    assert got[:2] == [("a", ""), ("b", "")]  # keyword matches first, as they were
    fills = dict(got[2:])
    assert set(fills) == {"c", "d"} and set(fills.values()) == {PAST[0].title}
    assert "e" not in dict(got)  # nothing like a liked paper: never a fill
    r = ranker(LIKE_MOE)
    [ex_a, ex_c] = r.explain_many("diffusion models", [0, 2], key=1)
    assert ex_c.because == PAST[0].title and ex_c.matched == []
    assert ex_c.why == f"because you liked \u201c{PAST[0].title}\u201d"
    assert ex_a.because == "" and ex_a.why.startswith("matched: diffusion models")
    # someone else's votes fill nothing, and without a key nothing is a fill
    [chunk] = r.rank([(2, "diffusion models")], k=4)
    assert [PAPERS[i].id for i in chunk.picks[0] if i >= 0] == ["a", "b"]
    assert r.explain_many("diffusion models", [2])[0].because == ""


def test_fills_respect_the_threshold() -> None:
    r = ranker(LIKE_MOE, reader_threshold=0.3)
    assert r.reader is not None
    for pid, liked in picks(r):
        if liked:  # every fill is at least that similar to the paper liked
            assert r.reader.sim[0, [p.id for p in PAPERS].index(pid)] >= 0.3
    assert dict(picks(ranker(LIKE_MOE, reader_threshold=0.99))) == {"a": "", "b": ""}
    assert picks(ranker(LIKE_MOE, reader_fills=False)) == [("a", ""), ("b", "")]


def test_an_excluded_topic_is_never_filled() -> None:
    got = dict(picks(ranker(LIKE_MOE), "diffusion models, -medical"))
    assert "c" in got and "d" not in got  # d is like the liked paper, but medical
    # a profile that excludes what the liked paper is about gets no fill of it at all
    got = dict(picks(ranker(LIKE_MOE), "diffusion models, -expert routing"))
    assert set(got) == {"a", "b"}


def test_a_paper_already_sent_or_voted_on_is_never_filled() -> None:
    r = ranker(LIKE_MOE)
    got = dict(picks(r, sent={1: [2]}))
    assert "c" not in got and got["d"] == PAST[0].title
    # a liked paper that is among today's papers is not filled "because you liked" itself
    twin = [RankEntry("c", PAPERS[2].title, PAPERS[2].abstract)]
    cfg = RankingConfig(trending="none")
    r2 = Ranker(Corpus(PAPERS, Acronyms.load(), cfg, TODAY), cfg, Votes.of(LIKE_MOE, twin))
    assert r2.reader is not None and r2.reader.sim[0, 2] == 0


def test_reordering_needs_two_likes_and_keeps_keyword_matches_ahead() -> None:
    """Papers a (images) and b (audio) match "diffusion models" about equally; a reader
    who liked a speech diffusion paper sees b first, but only from two 👍 on, and
    the fills still come after every keyword match."""
    one = [(1, 2, 1, 0.0)]
    two = [(1, 2, 1, 0.0), (1, 0, 1, 0.0)]
    plain = picks(ranker(one, reader_reorder=0))
    assert [p for p, _ in plain][:2] == ["a", "b"]
    assert picks(ranker(one, reader_reorder=5.0)) == plain  # one 👍: order unchanged
    moved = picks(ranker(two, reader_reorder=5.0))
    assert [p for p, _ in moved][:2] == ["b", "a"]
    liked = [bool(t) for _, t in moved]
    assert liked == sorted(liked)  # keyword picks (False) all before fills (True)
    same = picks(ranker(two, reader_reorder=0))
    assert {p for p, t in same if not t} == {p for p, t in moved if not t}  # same picks


def test_reordering_is_gentle() -> None:
    """The lift is at most ``reader_reorder`` (a cosine is at most 1): a keyword pick
    passes another only when their scores are that close."""
    r = ranker([(1, 2, 1, 0.0), (1, 0, 1, 0.0)], reader_reorder=0.5)
    [chunk] = r.rank([(1, "diffusion models, speech, images^3")], k=3)
    keyword = [s for s, liked in zip(chunk.scores[0], chunk.liked[0], strict=True)  # type: ignore[index]
               if liked < 0 and np.isfinite(s)]
    for i, earlier in enumerate(keyword):
        assert all(later - earlier <= 0.5 + 1e-6 for later in keyword[i + 1 :])
    assert PAPERS[chunk.picks[0][0]].id == "a"  # "images^3": far ahead, not passed


def test_a_match_learned_terms_make_alone_is_named_by_the_liked_paper() -> None:
    """With learned terms on, the paper so like the liked one is a learned match, not a
    fill; it is still said "because you liked" (it matches none of the written terms)."""
    r = ranker(LIKE_MOE, feedback_up=0.2)
    got = picks(r)
    assert [p for p, _ in got] == ["a", "b", "c", "d"]
    [ex] = r.explain_many("diffusion models", [2], key=1)
    assert ex.because == PAST[0].title and ex.why.startswith("because you liked")


def test_the_record_of_an_email_keeps_the_liked_title() -> None:
    r = ranker(LIKE_MOE)
    explanations = r.explain_many("diffusion models", [0, 2], key=1)
    text = shown.encode("diffusion models", ["a", "c"], explanations, trending=False,
                        weekly=False)
    record = shown.decode(text)
    assert record is not None
    assert record.why("c") == f"because you liked \u201c{PAST[0].title}\u201d"
    assert record.why("a").startswith("matched: diffusion models")
    again = shown.explanation(record.picks[1])
    assert again.because == PAST[0].title and again.why == explanations[1].why
    assert len(text.encode()) < 250


# ---- through the real SMTP sink and web server ----------------------------------

ADA = "ada@example.org"
ADA_WORDS = {"state", "space", "model", "models", "mamba", "ssm", "ssms", "vision", "visual",
             "transformer", "transformers", "vit", "vits"}


@pytest.mark.slow  # ~5 s: two sends through the sink, a web server, an ingest
def test_a_paper_liked_yesterday_shows_because_you_liked_today(
        world, smtp_sink, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Day 1 Ada is sent her picks through the sink and 👍 the first; day 2 brings a
    paper like it that none of her keywords match: her email says "because you liked
    <that title>", and view in browser says the same from the record."""
    import json
    import re

    import httpx
    from sqlalchemy import select, update

    from newsletter.service.ingest import ingest
    from newsletter.service.votes import record_vote
    from newsletter.store.db import session_scope
    from newsletter.store.models import Delivery, Entry, Subscriber

    from .editions_support import run_send
    from .test_reader import messages_to, parts, via_sink
    from .web_support import running_site

    settings, engine = world
    with session_scope(engine) as s:
        s.execute(update(Subscriber).where(Subscriber.email != ADA).values(status="paused"))
    with running_site(settings, engine) as site:
        sink_settings = via_sink(site.settings, smtp_sink)
        assert run_send(sink_settings, engine, dt.date(2026, 3, 4)).report.counts["sent"] == 1
        with session_scope(engine) as s:
            [row] = s.scalars(select(Delivery)).all()
            liked = s.get(Entry, row.entry_ids[0])
            assert liked is not None
            liked_id, liked_title, liked_abstract = liked.id, liked.title, liked.abstract or ""
        record_vote(settings.ranking, engine, liked_id, 1, by="email", email=ADA)
        # Day 2's papers: one like the liked paper in other words than Ada's, one of
        # her keywords, one like nothing she reads.
        alike = " ".join(w for w in liked_abstract.split()
                         if re.sub(r"\W", "", w).lower() not in ADA_WORDS)
        papers = [
            {"id": "day2-alike", "title": "Selective Recurrent Scans Revisited",
             "abstract": alike, "published": "2026-03-04", "upvotes": 1},
            {"id": "day2-mamba", "title": "Mamba Layers for Long Documents",
             "abstract": "Mamba state space models classify long documents.",
             "published": "2026-03-04", "upvotes": 1},
            {"id": "day2-rain", "title": "Rainfall Forecasting from Station Records",
             "abstract": "Weather station records predict rainfall.",
             "published": "2026-03-04", "upvotes": 1},
        ]
        day2 = tmp_path / "day2.json"
        day2.write_text(json.dumps([{"authors": [], "url": "", "keywords": [], **p}
                                    for p in papers]))
        with session_scope(engine) as s:
            ingest(settings.sources, s, [str(day2)])
        smtp_sink.messages.clear()
        assert run_send(sink_settings, engine, dt.date(2026, 3, 5)).report.counts["sent"] == 1
        [msg] = messages_to(smtp_sink, ADA)
        body, text = parts(msg)
        label = f"because you liked \u201c{liked_title}\u201d"
        assert label in text and label in body, text
        block = text[text.index("Selective Recurrent Scans Revisited"):]
        assert label in block[: block.index("Abstract:")]  # said of the paper like it
        assert "Mamba Layers for Long Documents" in text and "Rainfall" not in text
        assert text.index("Mamba Layers") < text.index("Selective Recurrent Scans")
        with session_scope(engine) as s:
            record = s.scalars(select(Delivery.shown).order_by(Delivery.id.desc())).first()
        assert record and liked_title in record
        view = re.search(r"View in browser: (\S+)", text)
        assert view, text
        page = html.unescape(httpx.get(view.group(1), timeout=60).text)
        assert label in page
        # The preferences page's picks say it too: with keywords that match one paper,
        # the paper like the liked one fills a slot.
        with session_scope(engine) as s:
            s.execute(update(Subscriber).where(Subscriber.email == ADA)
                      .values(keywords="rainfall forecasting"))
            ada_id = s.scalars(select(Subscriber.id).where(Subscriber.email == ADA)).one()
        prefs = html.unescape(httpx.get(site.links.preferences(ada_id), timeout=60).text)
        picked = prefs[prefs.index("What your keywords pick"):]
        assert "Rainfall Forecasting" in picked and label in picked, picked[:2000]
