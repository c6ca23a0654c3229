"""The judged quality set: the ranker must beat plain BM25 and TF-IDF on it."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.quality import evaluate, load  # noqa: E402


def test_judged_set_is_substantial() -> None:
    _, profiles = load()
    assert len(profiles) >= 25
    kinds = {p["kind"] for p in profiles}
    assert {"broad", "narrow", "acronym", "long form", "exclusion", "no relevant paper"} <= kinds
    assert all(set(p["judgments"].values()) <= {1, 2} for p in profiles)


@pytest.mark.slow  # ~3 s: three rankers over the judged set
def test_ours_beats_bm25_and_tfidf() -> None:
    results = evaluate()
    ours = results.pop("newsletter")
    plain = results.pop("newsletter without the related-terms table")
    # The field vocabulary removes excluded-topic papers and costs no quality.
    assert ours["excluded"] == 0 < plain["excluded"]
    assert ours["ndcg@10"] >= plain["ndcg@10"] and ours["p@5"] >= plain["p@5"]
    for name, other in results.items():
        assert ours["ndcg@10"] > other["ndcg@10"], name
        assert ours["p@5"] > other["p@5"], name
        assert ours["false_matches"] < other["false_matches"], name
