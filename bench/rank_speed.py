"""Ranking speed: N synthetic subscribers × E entries, vectorized vs a per-subscriber loop.

    python bench/rank_speed.py [--subscribers 1000000] [--entries 500] [--loop-sample 2000]

Each side runs in its own process so peak RSS is its own. The loop is the
straightforward way: for each subscriber, for each paper, sum the term scores,
then sort; it uses the same precomputed BM25F rows, so the comparison isolates
the engine, and it is timed on a sample and extrapolated.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import peak_rss_mb, synthetic_entries, synthetic_profiles  # noqa: E402
from newsletter.config import RankingConfig  # noqa: E402
from newsletter.profile import parse_profile  # noqa: E402
from newsletter.ranking.engine import Corpus, RankEntry, Ranker  # noqa: E402
from newsletter.ranking.feedback import Votes  # noqa: E402
from newsletter.ranking.text import Acronyms  # noqa: E402

TODAY = dt.date(2025, 12, 26)


def build(entries_n: int, votes: Votes | None = None) -> Ranker:
    cfg = RankingConfig()
    return Ranker(Corpus(synthetic_entries(entries_n), Acronyms.load(), cfg, TODAY), cfg, votes)


def synthetic_votes(subs: int, per_subscriber: int, pool: int = 1000) -> Votes | None:
    """``per_subscriber`` votes each on papers of an earlier day (a pool of ``pool``
    other synthetic papers), up or down at random, cast up to half a year ago."""
    if not per_subscriber:
        return None
    rng = np.random.default_rng(5)
    past = [RankEntry(f"past{i}", e.title, e.abstract, upvotes=e.upvotes)
            for i, e in enumerate(synthetic_entries(pool, seed=9))]
    n = subs * per_subscriber
    return Votes(np.repeat(np.arange(subs, dtype=np.int64), per_subscriber),
                 rng.integers(0, pool, n, dtype=np.int32),
                 rng.choice(np.array([-1, 1], dtype=np.int8), n),
                 rng.uniform(0, 180, n).astype(np.float32), past)


def run_vectorized(subs: int, entries_n: int, votes_per: int = 0) -> dict:
    profiles = synthetic_profiles(subs)
    votes = synthetic_votes(subs, votes_per)
    base_rss = peak_rss_mb()
    t0 = time.perf_counter()
    ranker = build(entries_n, votes)
    t1 = time.perf_counter()
    picked = 0
    for chunk in ranker.rank(enumerate(profiles), k=10):
        picked += int((chunk.picks >= 0).sum())
    t2 = time.perf_counter()
    return {"corpus_s": t1 - t0, "rank_s": t2 - t1, "total_s": t2 - t0, "picks": picked,
            "features": len(ranker.feature_ids), "peak_rss_mb": peak_rss_mb(),
            "profiles_rss_mb": base_rss}


def run_loop(sample: int, entries_n: int) -> dict:
    profiles = synthetic_profiles(sample)
    ranker = build(entries_n)
    corpus, cfg = ranker.corpus, ranker.cfg
    bonus = corpus.bonus.tolist()
    rows: dict = {}
    t0 = time.perf_counter()
    picked = 0
    n_entries = len(corpus.entries)
    for text in profiles:
        profile = parse_profile(text)
        terms = []
        for t in profile.terms:
            feat = ranker.analyzer.feature(t)
            if feat not in rows:
                rows[feat] = corpus.row(feat).tolist()
            terms.append((t, rows[feat]))
        scored = []
        for e in range(n_entries):
            if any(row[e] > 0 for t, row in terms if t.exclude):
                continue
            rel = sum(t.weight * row[e] for t, row in terms if not t.exclude)
            if rel >= cfg.min_relevance:
                scored.append((cfg.weight_relevance * rel + bonus[e], e))
        scored.sort(reverse=True)
        picked += len(scored[:10])
    t1 = time.perf_counter()
    return {"sample": sample, "sample_s": t1 - t0, "per_sub_ms": (t1 - t0) / sample * 1e3,
            "picks": picked, "peak_rss_mb": peak_rss_mb()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--subscribers", type=int, default=1_000_000)
    ap.add_argument("--entries", type=int, default=500)
    ap.add_argument("--loop-sample", type=int, default=2000)
    ap.add_argument("--votes", type=int, default=10, help="votes per subscriber (learned "
                    "weights); 0 = none")
    ap.add_argument("--only-vectorized", action="store_true")
    ap.add_argument("--child", choices=["vectorized", "loop"])
    args = ap.parse_args()
    if args.child == "vectorized":
        print(json.dumps(run_vectorized(args.subscribers, args.entries, args.votes)))
        return
    if args.child == "loop":
        print(json.dumps(run_loop(args.loop_sample, args.entries)))
        return

    def child(kind: str) -> dict:
        out = subprocess.run([sys.executable, __file__, "--child", kind, "--subscribers",
                              str(args.subscribers), "--entries", str(args.entries),
                              "--loop-sample", str(args.loop_sample), "--votes",
                              str(args.votes)],
                             check=True, capture_output=True, text=True).stdout
        return json.loads(out)

    vec = child("vectorized")
    print(f"vectorized, {args.votes} votes per subscriber: {json.dumps(vec)}", flush=True)
    if args.only_vectorized:
        return
    loop = child("loop")
    loop_total = loop["per_sub_ms"] / 1e3 * args.subscribers
    print(f"{args.subscribers:,} subscribers x {args.entries} entries, top-10, "
          f"{vec['features']:,} distinct terms, {args.votes} votes per subscriber")
    print("| method | wall time | peak RSS | speed-up |")
    print("|---|---|---|---|")
    print(f"| vectorized (sparse S @ M, argpartition) | {vec['total_s']:.1f} s "
          f"(corpus {vec['corpus_s']:.2f} s) | {vec['peak_rss_mb']:.0f} MB "
          f"(profiles alone {vec['profiles_rss_mb']:.0f} MB) | "
          f"{loop_total / vec['total_s']:.0f}x |")
    print(f"| per-subscriber Python loop ({loop['sample']:,} timed, extrapolated) | "
          f"{loop_total:.0f} s ({loop['per_sub_ms']:.2f} ms/subscriber) | "
          f"{loop['peak_rss_mb']:.0f} MB | 1x |")


if __name__ == "__main__":
    main()
