"""Votes from the email to the ranking: links parsed out of a really sent email, the
real web endpoints on uvicorn, the CLI as a process, and the engine's learned weights."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import html
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import httpx
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from newsletter.config import RankingConfig
from newsletter.profile import parse_profile
from newsletter.ranking.engine import Corpus, Feature, RankEntry, Ranker
from newsletter.ranking.feedback import Votes
from newsletter.render.links import Signer
from newsletter.service.ranking import rank_subscribers
from newsletter.store.db import session_scope
from newsletter.store.keys import secret_keys
from newsletter.store.models import Subscriber, Vote

from .conftest import ROOT
from .web_support import post_form, running_site

ADA = "ada@example.org"


@pytest.fixture
def site(world) -> Iterator[tuple[str, Any, Any]]:  # type: ignore[no-untyped-def]
    settings, engine = world
    with running_site(settings, engine, render_processes=1) as running:
        yield running.url, running.settings, engine


def sent_email(settings: Any, engine: Any, address: str) -> email.message.EmailMessage:
    """Send today's edition through the outbox transport and read back one message."""
    from .editions_support import run_send

    summary = run_send(settings, engine, dt.date.today())
    assert summary.report.counts["sent"] >= 1
    for path in Path(settings.outbox.path).glob("*.eml"):
        msg = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        if address in str(msg["To"]):
            return msg  # type: ignore[return-value]
    raise AssertionError(f"no email to {address}")


def vote_links(msg: email.message.EmailMessage) -> tuple[list[str], list[str], list[str]]:
    """(more, less) links of the HTML part, and every vote link of the text part."""
    body = msg.get_body(("html",))
    text = msg.get_body(("plain",))
    assert body is not None and text is not None
    page = body.get_content()
    more = [html.unescape(u) for u in re.findall(r'href="([^"]+)"[^>]*>More like this', page)]
    less = [html.unescape(u) for u in re.findall(r'href="([^"]+)"[^>]*>Less like this', page)]
    plain = re.findall(r"(?:More|Less) like this: (\S+)", text.get_content())
    return more, less, plain


def vote_count(engine: Any) -> int:
    with session_scope(engine) as s:
        return int(s.scalar(select(func.count()).select_from(Vote)) or 0)


def ranking(settings: Any, engine: Any, address: str = ADA) -> list[dict[str, Any]]:
    with session_scope(engine) as s:
        [result] = rank_subscribers(settings.ranking, s, email=address, all_entries=True, limit=10)
    return list(result["picks"])


@pytest.mark.slow  # ~6 s: a send, a render process, two rankings
def test_votes_from_a_sent_email_through_the_web(site) -> None:  # type: ignore[no-untyped-def]
    base, settings, engine = site
    msg = sent_email(settings, engine, ADA)
    more, less, plain = vote_links(msg)
    assert more and len(more) == len(less)
    assert set(plain) == set(more) | set(less)  # the text part carries the same links
    assert all(u.startswith(base + "/feedback/") for u in more + less)
    before = ranking(settings, engine)

    with httpx.Client(timeout=30) as client:
        # A link scanner fetches every link: GET and HEAD show a page and vote nothing.
        for url in more + less:
            assert client.head(url).status_code == 200
            page = client.get(url)
            assert page.status_code == 200 and "<form method=\"post\"" in page.text
        assert vote_count(engine) == 0
        # A tampered link (another paper's id under this token) is refused.
        other = more[0].rsplit("/", 1)[0] + "/" + more[1].rsplit("/", 1)[1]
        assert client.post(other).status_code == 400
        assert vote_count(engine) == 0
        # Two people-pressed buttons: one more like this, one less like this.
        liked = post_form(client, more[0], {})  # the page's button, with its CSRF token
        assert liked.status_code == 200 and "show more on" in liked.text
        disliked = post_form(client, less[-1], {})
        assert disliked.status_code == 200 and "less" in disliked.text
    assert vote_count(engine) == 2

    after = ranking(settings, engine)
    liked_id = httpx.URL(more[0]).path.rsplit("/", 1)[1]
    assert liked_id not in {p["id"] for p in after}  # a paper voted on is never shown again
    assert [p["id"] for p in after] != [p["id"] for p in before]
    assert any(p["also_like"] and "also like:" in p["why"] for p in after)


@pytest.mark.slow  # ~15 s: three rankings of the recent papers, a render process
def test_cli_vote_shows_in_rank_json_and_undo_restores_it_exactly(  # type: ignore[no-untyped-def]
        site, cli, tmp_path: Path) -> None:
    base, settings, engine = site
    env = {"NEWSLETTER_DATABASE__URL": settings.database.url}

    def rank() -> list[dict[str, Any]]:
        r = cli("rank", "--subscriber", ADA, "--all-entries", "--json", env=env)
        assert r.code == 0, r.stderr
        return list(json.loads(r.stdout)[0]["picks"])

    before = rank()
    mamba = [p for p in before if "Mamba" in p["title"]]
    assert len(mamba) >= 2
    for p in mamba[:2]:
        r = cli("feedback", ADA, p["id"], "--up", env=env)
        assert r.code == 0 and "show more on" in r.stderr, r.stderr
    after = rank()
    lifted = [p for p in after if p["also_like"]]
    assert lifted, after
    assert re.search(r"also like: .+ — you liked [12] papers? about it", " ".join(
        p["why"] for p in after))
    assert not {p["id"] for p in mamba[:2]} & {p["id"] for p in after}

    # Undo both votes from the preferences page: the ranking is exactly as before.
    with session_scope(engine) as s:
        ada = s.scalar(select(Subscriber).where(Subscriber.email == ADA))
        assert ada is not None
        sub_id, nonce = ada.id, ada.link_nonce
        signer = Signer(secret_keys(settings.web, s))
    prefs = f"{base}/preferences/{signer.token('preferences', sub_id, nonce=nonce)}"
    with httpx.Client(timeout=30, follow_redirects=True) as client:
        page = client.get(prefs).text
        assert "What your votes taught us" in page and "Reset all learning" in page
        undo = re.search(r'<form class="pick" method="post" action="([^"]+/undo/[^"]+)"', page)
        assert undo is not None
        for p in mamba[:2]:
            assert post_form(client, prefs, {"paper": p["id"]},
                             action=html.unescape(undo.group(1))).status_code == 200
    assert vote_count(engine) == 0
    assert rank() == before


@pytest.mark.slow  # ~5 s: the preferences page ranked five times
def test_preferences_picks_count_the_subscribers_votes(world) -> None:  # type: ignore[no-untyped-def]
    """The preferences page ranks a subscriber's picks with their votes (the voted
    paper gone, what the vote taught in the explanation) although picks are cached
    per keyword set: someone with the same keywords and no votes keeps the plain
    picks, and undoing the vote gives the first picks back."""
    settings, engine = world
    with session_scope(engine) as s:  # Grace writes what Ada writes, and never votes
        subs = {sub.email: sub for sub in s.scalars(select(Subscriber))}
        subs["grace@example.org"].keywords = subs[ADA].keywords
    with running_site(settings, engine) as site, httpx.Client(
            timeout=60, follow_redirects=True) as client:
        ada, grace = site.sub_id(ADA), site.sub_id("grace@example.org")
        prefs = site.links.preferences(ada)

        def picks(sub_id: int) -> list[tuple[str, str]]:
            page = client.get(site.links.preferences(sub_id))
            assert page.status_code == 200
            found = re.findall(r'<a href="[^"]*/papers/([^"]+)"><strong>.*?</strong></a><br>'
                               r'\s*<span class="meta">(.*?)</span>', page.text)
            return [(unquote(p), html.unescape(why)) for p, why in found]

        before = picks(ada)
        assert before and before == picks(grace)
        assert all(why.startswith("matched: ") and "also like" not in why for _, why in before)
        liked = before[0][0]
        voted = post_form(client, site.links.votes(ada, liked)["more"], {})
        assert voted.status_code == 200 and "show more on" in voted.text

        after = picks(ada)
        assert after and liked not in {p for p, _ in after}
        assert any(re.search(r"also like: .+ — you liked 1 paper about it", why)
                   for _, why in after), after
        assert picks(grace) == before  # the keyword set's cached picks are untouched

        undo = re.search(r'<form class="pick" method="post" action="([^"]+/undo/[^"]+)"',
                         client.get(prefs).text)
        assert undo is not None
        assert post_form(client, prefs, {"paper": liked},
                         action=html.unescape(undo.group(1))).status_code == 200
        assert vote_count(engine) == 0
        assert picks(ada) == before


def test_cli_feedback_errors_are_one_line(cli, world) -> None:  # type: ignore[no-untyped-def]
    settings, _ = world
    env = {"NEWSLETTER_DATABASE__URL": settings.database.url}
    for args, fragment in [((ADA, "no-such-paper", "--up"), "no paper 'no-such-paper'"),
                           (("nobody@example.org", "x", "--down"), "is not a subscriber"),
                           ((ADA, "x"), "exactly one of --up or --down"),
                           ((ADA, "x", "--up", "--down"), "exactly one of --up or --down")]:
        r = cli("feedback", *args, env=env)
        assert r.code != 0 and fragment in r.stderr and len(r.stderr.strip().splitlines()) == 1


@pytest.mark.slow  # ~10 s: a render process, rankings of the recent papers
def test_removing_a_learned_term_and_resetting(site) -> None:  # type: ignore[no-untyped-def]
    base, settings, engine = site
    from newsletter.service.ranking import subscriber_learned
    from newsletter.service.votes import record_vote

    picks = ranking(settings, engine)
    outcome = record_vote(settings.ranking, engine, picks[0]["id"], 1, by="cli", email=ADA)
    with session_scope(engine) as s:
        sub = s.scalar(select(Subscriber).where(Subscriber.email == ADA))
        assert sub is not None
        learned = subscriber_learned(settings.ranking, s, sub)
        signer = Signer(secret_keys(settings.web, s))
    assert learned and outcome.terms
    token = signer.token("preferences", sub.id, nonce=sub.link_nonce)
    with httpx.Client(timeout=30, follow_redirects=True) as client:
        assert client.get(f"{base}/feedback/forget/{token}").status_code == 405  # POST only
        gone = learned[0]
        prefs = f"{base}/preferences/{token}"
        r = post_form(client, prefs, {"term": gone.key, "label": gone.term},
                      action=f"{base}/feedback/forget/{token}")
        assert r.status_code == 200
    with session_scope(engine) as s:
        assert gone.key not in {t.key for t in subscriber_learned(settings.ranking, s, sub)}
    with httpx.Client(timeout=30, follow_redirects=True) as client:
        assert post_form(client, f"{base}/preferences/{token}", {},
                         action=f"{base}/feedback/reset/{token}").status_code == 200
    assert vote_count(engine) == 0
    assert ranking(settings, engine) == picks


# ---- the engine's learned weights ------------------------------------------------

TODAY = dt.date(2025, 9, 1)
PAST = [RankEntry("p-mamba", "Mamba for Vision", "Selective state space models, Mamba."),
        RankEntry("p-mamba2", "Mamba on Graphs", "Mamba layers for graph learning."),
        RankEntry("p-med", "Radiology Diffusion for Chest Scans",
                  "Diffusion models for radiology.")]
TODAY_PAPERS = [
    RankEntry("a", "Vision Mamba Backbones", "Diffusion models meet Mamba for images."),
    RankEntry("b", "Diffusion Models for Audio", "Diffusion models generate sound."),
    RankEntry("c", "Radiology Report Diffusion", "Diffusion models in radiology."),
    RankEntry("d", "Unrelated Mamba Paper", "Mamba without the written topic."),
]


def engine_with(votes: list[tuple[int, int, int, float]], cfg: RankingConfig | None = None,
                mutes: dict[int, frozenset[str]] | None = None) -> Ranker:
    from newsletter.ranking.text import Acronyms

    # The learned terms alone: "because you liked" fills and re-ordering
    # (ranking/reader.py) are tested in tests/test_reader.py.
    cfg = cfg or RankingConfig(trending="none", reader_fills=False, reader_reorder=0)
    corpus = Corpus(TODAY_PAPERS, Acronyms.load(), cfg, TODAY)
    return Ranker(corpus, cfg, Votes.of(votes, PAST, mutes) if votes else None)


def ranked(r: Ranker, profile: str = "diffusion models") -> list[str]:
    [chunk] = r.rank([(1, profile)], k=4)
    return [TODAY_PAPERS[i].id for i in chunk.picks[0] if i >= 0]


def scores(r: Ranker, profile: str = "diffusion models") -> dict[str, float]:
    [chunk] = r.rank([(1, profile)], k=4)
    return {TODAY_PAPERS[i].id: float(v) for i, v in zip(chunk.picks[0], chunk.scores[0],
                                                         strict=True) if i >= 0}


def test_a_like_lifts_similar_papers_and_a_dislike_lowers_them() -> None:
    plain = scores(engine_with([]))
    liked = scores(engine_with([(1, 0, 1, 0.0), (1, 1, 1, 0.0)]))
    disliked = scores(engine_with([(1, 2, -1, 0.0)]))
    assert set(plain) == set(liked) == set(disliked) == {"a", "b", "c"}  # "d" is no match
    assert liked["a"] > plain["a"] and liked["b"] == plain["b"]  # the Mamba paper rises
    assert disliked["c"] < plain["c"] and disliked["b"] == plain["b"]  # radiology falls


def test_learned_weights_are_bounded_never_on_written_terms_and_decay() -> None:
    cfg = RankingConfig(trending="none", feedback_up=5.0, feedback_max_weight=0.5)
    r = engine_with([(1, 0, 1, 0.0), (1, 1, 1, 0.0)], cfg)
    written = {f for f, _, _, _ in r._terms_of("diffusion models, mamba")}
    learned = r.learner.learned(1, written) if r.learner else []
    assert learned and all(abs(t.weight) <= 0.5 for t in learned)
    assert not {t.fid for t in learned} & written
    assert all(t.key != "mamba" for t in learned)
    fresh = engine_with([(1, 0, 1, 0.0)])
    old = engine_with([(1, 0, 1, 90.0)])  # one half-life
    w_fresh = {t.key: t.weight for t in fresh.learner.learned(1, set())}  # type: ignore[union-attr]
    w_old = {t.key: t.weight for t in old.learner.learned(1, set())}  # type: ignore[union-attr]
    key = next(iter(w_fresh))
    assert w_old[key] == pytest.approx(w_fresh[key] / 2, rel=1e-3)


def test_learned_terms_move_a_match_by_at_most_their_share() -> None:
    """However strong the votes, learned terms move a written match by at most
    ``feedback_share`` of its written relevance, and a match they make alone counts
    that share of its learned relevance; explanations add up to the same scores."""
    cfg = RankingConfig(trending="none", feedback_up=5.0, feedback_down=5.0,
                        feedback_max_weight=10.0)
    share = cfg.feedback_share
    plain_r = engine_with([], cfg)
    bonus = {e.id: float(b) for e, b in zip(TODAY_PAPERS, plain_r.corpus.bonus, strict=True)}
    plain = scores(plain_r)
    written = {k: v - bonus[k] for k, v in plain.items()}
    liked_r = engine_with([(1, 0, 1, 0.0), (1, 1, 1, 0.0)], cfg)
    liked = scores(liked_r)
    disliked = scores(engine_with([(1, 2, -1, 0.0)], cfg))
    assert liked["a"] - plain["a"] == pytest.approx(share * written["a"], rel=1e-4)
    assert plain["c"] - disliked["c"] == pytest.approx(share * written["c"], rel=1e-4)
    assert liked["b"] == plain["b"] and disliked["b"] == plain["b"]
    # "d" matches no written term: the liked Mamba papers make it a match on their own,
    # ranked by a share of its learned relevance, below the written matches here.
    assert "d" in liked and "d" not in plain
    d = TODAY_PAPERS.index(next(e for e in TODAY_PAPERS if e.id == "d"))
    learned = liked_r.learner.learned(1, set()) if liked_r.learner else []
    lifted = sum(t.weight * float(liked_r.feature_rows[t.fid, d]) for t in learned)
    assert liked["d"] - bonus["d"] == pytest.approx(share * lifted, rel=1e-3)
    assert ranked(liked_r)[-1] == "d"
    # What the explanations say is what the ranking counted.
    [chunk] = liked_r.rank([(1, "diffusion models")], k=4)
    picks = [int(i) for i in chunk.picks[0] if i >= 0]
    for ex, value in zip(liked_r.explain_many("diffusion models", picks, key=1),
                         chunk.scores[0], strict=False):
        assert ex.score == pytest.approx(float(value), abs=1e-3)


def test_a_dislike_cannot_erase_a_written_topic() -> None:
    r = engine_with([(1, 2, -1, 0.0)], RankingConfig(trending="none", feedback_down=10.0))
    assert {"a", "b", "c"} == set(ranked(r))


def test_a_removed_learned_term_is_not_learned_again() -> None:
    r = engine_with([(1, 0, 1, 0.0)])
    keys = {t.key for t in r.learner.learned(1, set())}  # type: ignore[union-attr]
    gone = sorted(keys)[0]
    muted = engine_with([(1, 0, 1, 0.0)], mutes={1: frozenset({gone})})
    assert gone not in {t.key for t in muted.learner.learned(1, set())}  # type: ignore[union-attr]


def test_the_vectorized_learner_matches_one_subscriber_at_a_time() -> None:
    """Chunks of many subscribers give each the scores they get alone."""
    rng = np.random.default_rng(3)
    votes = [(k, int(rng.integers(0, 3)), int(rng.choice([-1, 1])), float(rng.integers(0, 200)))
             for k in range(1, 40) for _ in range(int(rng.integers(0, 4)))]
    r = engine_with(votes)
    people = [(k, "diffusion models, mamba" if k % 2 else "diffusion models")
              for k in range(0, 41)]
    [together] = r.rank(people, k=4)
    for row, (k, text) in enumerate(people):
        [alone] = r.rank([(k, text)], k=4)
        assert together.picks[row].tolist() == alone.picks[0].tolist()
        np.testing.assert_allclose(together.scores[row], alone.scores[0], rtol=1e-5)


POOL = ("diffusion", "models", "mamba", "state", "space", "graph", "neural", "retrieval",
        "vision", "transformers", "radiology", "audio", "rethinking", "novel", "of", "for",
        "x1", "2024", "go", "sparse", "attention")
_titles = st.lists(st.sampled_from(POOL), min_size=1, max_size=7).map(" ".join)
_papers = st.builds(lambda i, t, a, k: RankEntry(f"t{i}", t, a, tuple(k)),
                    st.integers(0, 10**6), _titles, _titles,
                    st.lists(_titles, max_size=2))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(today=st.lists(_papers, min_size=1, max_size=8, unique_by=lambda e: e.id),
       voted=_papers, limit=st.integers(1, 6), among=st.booleans())
def test_a_voted_papers_terms_are_few_headline_words_others_use(
        today: list[RankEntry], voted: RankEntry, limit: int, among: bool) -> None:
    """What one voted paper teaches: at most ``feedback_terms`` distinct features,
    weighted in (0, 1] with the best at 1, each written in the paper's title or
    keywords, none a rhetorical title word, and each used by some other paper today."""
    from newsletter.ranking.feedback import TITLE_FILLER, Learner
    from newsletter.ranking.text import Acronyms

    if among:  # the voted paper may be among today's: it never counts as its own reader
        today = [*today, voted] if voted.id not in {e.id for e in today} else today
    cfg = RankingConfig(trending="none", feedback_terms=limit)
    r = Ranker(Corpus(today, Acronyms.load(), cfg, TODAY), cfg)
    learner = Learner(r, Votes.of([(1, 0, 1, 0.0)], [voted]))
    terms = learner._paper_terms(voted, limit)
    assert terms == Learner(r, Votes.of([(1, 0, 1, 0.0)], [voted]))._paper_terms(voted, limit)
    assert len(terms) <= limit and len({f for f, _ in terms}) == len(terms)
    assert all(0 < w <= 1 for _, w in terms)
    assert not terms or max(w for _, w in terms) == 1
    headline = set(" ".join((voted.title, *voted.keywords)).lower().split())
    for fid, _ in terms:
        assert set(learner.labels[fid].lower().split()) <= headline
        assert not set(learner._grams[fid]) & TITLE_FILLER
        others = [i for i, e in enumerate(today) if e.id != voted.id]
        assert r.feature_rows[fid, others].any() if others else False


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(today=st.lists(_papers, min_size=1, max_size=8, unique_by=lambda e: e.id),
       voted=st.lists(_papers, min_size=2, max_size=6, unique_by=lambda e: e.id),
       limit=st.integers(1, 6), among=st.integers(0, 3))
def test_many_voted_papers_learn_what_each_would_alone(
        today: list[RankEntry], voted: list[RankEntry], limit: int, among: int) -> None:
    """A learner reading many voted papers keeps what it found of today's papers from
    one paper to the next (a gram's papers, a word's tokens): each paper still teaches
    exactly what it teaches read alone, also when some voted papers are among today's
    (a paper never counts as a reader of its own terms) and share grams with others."""
    from newsletter.ranking.feedback import Learner
    from newsletter.ranking.text import Acronyms

    ids = {e.id for e in today}
    today = [*today, *[v for v in voted[:among] if v.id not in ids]]
    cfg = RankingConfig(trending="none", feedback_terms=limit)
    r = Ranker(Corpus(today, Acronyms.load(), cfg, TODAY), cfg)
    learner = Learner(r, Votes.of([(1, p, 1, 0.0) for p in range(len(voted))], voted))
    together: dict[int, set[tuple[int, float]]] = {p: set() for p in range(len(voted))}
    for p, fid, w in zip(learner._p_rows.tolist(), learner._p_cols.tolist(),
                         learner._p_vals.tolist(), strict=True):
        together[p].add((fid, w))
    for p, paper in enumerate(voted):
        alone = Learner(r, Votes.of([(1, 0, 1, 0.0)], [paper]))._paper_terms(paper, limit)
        assert together[p] == {(fid, float(np.float32(w))) for fid, w in alone}, paper


# ---- a field's vocabulary --------------------------------------------------------


def sample_ranker(cfg: RankingConfig, related: bool = True) -> tuple[Ranker, list[RankEntry]]:
    from newsletter.ranking.related import RelatedTerms
    from newsletter.ranking.selection import load_acronyms

    data = json.loads((ROOT / "newsletter" / "data" / "sample_papers.json").read_text())
    entries = [RankEntry(d["id"], d["title"], d["abstract"], (), tuple(d["authors"]),
                         d["upvotes"]) for d in data]
    corpus = Corpus(entries, load_acronyms(RankingConfig(), entries), cfg, TODAY,
                    RelatedTerms.load() if related else None)
    return Ranker(corpus, cfg), entries


@pytest.mark.slow  # ~2 s: two rankers over the sample
def test_an_exclusion_understands_the_field() -> None:
    cfg = RankingConfig(trending="none")
    with_field, entries = sample_ranker(cfg)
    without, _ = sample_ranker(cfg, related=False)
    xray = next(i for i, e in enumerate(entries) if "Chest X-Ray" in e.title)

    def top(r: Ranker, profile: str) -> list[int]:
        [chunk] = r.rank([(0, profile)], k=10)
        return [int(i) for i in chunk.picks[0] if i >= 0]

    assert xray in top(without, "diffusion models, -medical")
    assert xray not in top(with_field, "diffusion models, -medical")
    # A passing mention is not enough: the related evidence must pass the stricter bar.
    evidence = with_field.corpus.related_evidence(
        with_field.analyzer.feature(next(iter(
            __import__("newsletter.profile", fromlist=["x"]).parse_profile(
                "-medical").terms))).related)
    assert evidence[xray] >= cfg.exclude_related_min
    assert ((evidence > 0) & (evidence < cfg.exclude_related_min)).any()


def test_a_topic_naming_a_field_says_which_related_term_matched() -> None:
    r, entries = sample_ranker(RankingConfig(trending="none"))
    xray = next(i for i, e in enumerate(entries) if "Chest X-Ray" in e.title)
    [ex] = r.explain_many("medical", [xray])
    assert ex.matched and re.match(r"medical \(via .*X-ray", ex.matched[0][0], re.I)
    from newsletter.render.highlight import highlight_spans

    text = entries[xray].title + " " + entries[xray].abstract
    spans = highlight_spans(text, ex.features, r.corpus.acronyms)
    assert any("x-ray" in text[a:b].lower() for a, b in spans)


def test_a_phrase_matched_by_its_words_apart_says_which_words() -> None:
    """A topic of several words earns part of its score from its words wherever they
    stand. Its label says so: "video diffusion" as written only where the paper has
    the phrase (in order, stemmed, or an acronym form); else "video diffusion (via
    video)", naming the words the paper has and none it lacks."""
    from newsletter.render.highlight import Highlighter

    r, entries = sample_ranker(RankingConfig(trending="none"))
    seen = {"phrase": 0, "words": 0}
    for profile in ("state space models", "video diffusion", "knowledge distillation",
                    "point cloud segmentation", "video understanding", "vision transformer",
                    "large language models", "reinforcement learning from human feedback"):
        everyone = list(range(len(entries)))
        feature = r.analyzer.feature(next(iter(parse_profile(profile).terms)))
        phrase = Feature(feature.kind, feature.variants)  # the phrase alone, no words
        for i, ex in zip(everyone, r.explain_many(profile, everyone), strict=True):
            if not ex.matched:
                continue
            [(label, _)] = ex.matched
            text = entries[i].title + " . " + entries[i].abstract
            has_phrase = bool(Highlighter(text, r.corpus.acronyms).feature_spans(phrase))
            if label == profile:
                assert has_phrase, (profile, entries[i].title)
                seen["phrase"] += 1
                continue
            said = re.fullmatch(re.escape(profile) + r" \(via (.+)\)", label)
            assert said and not has_phrase, (label, entries[i].title)
            named = said.group(1).split(", ")
            assert set(named) <= set(profile.split())
            for word in profile.split():
                found = bool(Highlighter(text, r.corpus.acronyms).feature_spans(
                    Feature("topic", (tuple(r.analyzer.feature(
                        next(iter(parse_profile(word).terms))).variants[0]),))))
                assert (word in named) == found, (label, word, entries[i].title)
            seen["words"] += 1
    assert seen["phrase"] > 10 and seen["words"] > 10, seen


def test_learned_two_word_terms_are_words_side_by_side_in_the_paper() -> None:
    """A two-word term learned from a liked paper is two words the paper has side by
    side: not across a stop word ("Models for Long Video" taught "Models Long", which
    the email then cited and the preferences page could not name)."""
    from newsletter.ranking.feedback import _learnable_grams, _tokens

    r, entries = sample_ranker(RankingConfig(trending="none"))
    titles = [e.title for e in entries] + [
        "Selective State Space Models for Long Video Understanding",
        "A State-of-the-Art Model of the World"]
    pairs = 0
    for title in titles:
        written = re.findall(r"\w+", title.lower())
        for gram, part in _learnable_grams(_tokens(title, r)):
            if len(gram) == 2:
                first, second = (w.lower() for _, w in part)
                assert any(written[i:i + 2] == [first, second]
                           for i in range(len(written) - 1)), (title, part)
                pairs += 1
    assert pairs > 200
    grams = {g for g, _ in _learnable_grams(_tokens(titles[-2], r))}
    assert ("model", "long") not in grams and ("long", "video") in grams


def test_a_field_named_in_several_words_says_which_words_when_no_related_term_matched() -> None:
    """"autonomous driving" names a field (related terms) and has two words: a paper
    that earns from the word "autonomous" alone, with none of the field's related
    terms, says so ("via autonomous"), not "matched: autonomous driving"."""
    from newsletter.ranking.related import RelatedTerms
    from newsletter.ranking.selection import load_acronyms

    cfg = RankingConfig(trending="none")
    entries = [RankEntry("1", "Autonomous agents for web navigation",
                         "We build autonomous agents that browse the web.")] + [
        RankEntry(str(i), f"Paper {i} on the driving force of learning",
                  "The driving force behind scaling.") for i in range(2, 12)]
    corpus = Corpus(entries, load_acronyms(cfg, entries), cfg, TODAY, RelatedTerms.load())
    [agents] = Ranker(corpus, cfg).explain_many("autonomous driving", [0])
    assert [t for t, _ in agents.matched] == ["autonomous driving (via autonomous)"]
