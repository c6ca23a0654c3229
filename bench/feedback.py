"""What votes teach: day-2 ranking quality with and without day-1 votes.

    python bench/feedback.py [--per-profile] [--threshold 0.3] [--reorder 0.5] [--no-fills]

The judged sample (``bench/judgments.json``) is split by publication date. "Day 1"
shows each profile its top 10 of the older half and votes as the judgments say (more
like this on grade 2, less like this on grade 0, nothing on grade 1); "day 2" ranks the
newer half with and without those votes. Metrics as in ``bench/quality.py``: nDCG@10
(graded, ideal from the day-2 judgments) and P@5, per profile and on average over the
profiles that have a relevant day-2 paper; and, over all profiles, how many day-2 picks
the email would say "because you liked" of and how many of those are judged relevant.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.quality import K, load, ndcg, precision  # noqa: E402
from newsletter.config import RankingConfig  # noqa: E402
from newsletter.ranking.engine import Corpus, RankEntry, Ranker  # noqa: E402
from newsletter.ranking.feedback import Votes  # noqa: E402
from newsletter.ranking.related import RelatedTerms  # noqa: E402
from newsletter.ranking.selection import load_acronyms  # noqa: E402

TODAY = dt.date(2025, 12, 26)


def split(entries: list[RankEntry]) -> tuple[list[RankEntry], list[RankEntry]]:
    ordered = sorted(entries, key=lambda e: (e.published or dt.date.min, e.id))
    half = len(ordered) // 2
    return ordered[:half], ordered[half:]


def corpus_of(entries: list[RankEntry], cfg: RankingConfig) -> Corpus:
    return Corpus(entries, load_acronyms(RankingConfig(), entries), cfg, TODAY,
                  RelatedTerms.load() if cfg.expand_related else None)


def top(r: Ranker, profile: str) -> list[str]:
    return [pid for pid, _ in top_fills(r, profile)]


def top_fills(r: Ranker, profile: str) -> list[tuple[str, bool]]:
    """The top K as (paper id, whether the email says "because you liked" of it: a
    fill, or a match learned terms made alone near a liked paper)."""
    [chunk] = r.rank([(0, profile)], k=K)
    picks = [int(i) for i in chunk.picks[0] if i >= 0]
    return [(r.corpus.entries[i].id, bool(ex.because))
            for i, ex in zip(picks, r.explain_many(profile, picks, key=0), strict=True)]


def evaluate(cfg: RankingConfig, per_profile: bool = False) -> dict[str, float]:
    entries, profiles = load()
    day1, day2 = split(entries)
    first = Ranker(corpus_of(day1, cfg), cfg)
    later_corpus = corpus_of(day2, cfg)
    plain = Ranker(later_corpus, cfg)
    day2_ids = {e.id for e in day2}
    rows = []
    fills: list[int] = []  # per "because you liked" pick, its day-2 grade
    for prof in profiles:
        grades = prof["judgments"]
        later = {k: v for k, v in grades.items() if k in day2_ids}
        shown = top(first, prof["profile"])
        votes = [(0, i, 1 if grades.get(pid, 0) == 2 else -1, 1.0)
                 for i, pid in enumerate(shown) if grades.get(pid, 0) != 1]
        papers = {e.id: e for e in day1}
        taught = Ranker(later_corpus, cfg, Votes.of(votes, [papers[pid] for pid in shown]))
        picked = top_fills(taught, prof["profile"])
        fills.extend(grades.get(pid, 0) for pid, fill in picked if fill)
        if not any(v > 0 for v in later.values()):
            continue
        before, after = top(plain, prof["profile"]), [pid for pid, _ in picked]
        row = {"id": prof["id"], "up": sum(1 for v in votes if v[2] > 0),
               "down": sum(1 for v in votes if v[2] < 0),
               "ndcg_before": ndcg(before, later), "ndcg_after": ndcg(after, later),
               "p5_before": precision(before, later), "p5_after": precision(after, later)}
        rows.append(row)
        if per_profile:
            print(f"| {row['id']} | {row['up']} / {row['down']} | {row['ndcg_before']:.3f} | "
                  f"{row['ndcg_after']:.3f} | {row['ndcg_after'] - row['ndcg_before']:+.3f} | "
                  f"{row['p5_before']:.2f} | {row['p5_after']:.2f} |")
    diffs = np.array([r["ndcg_after"] - r["ndcg_before"] for r in rows])
    return {"profiles": len(rows),
            "ndcg_before": float(np.mean([r["ndcg_before"] for r in rows])),
            "ndcg_after": float(np.mean([r["ndcg_after"] for r in rows])),
            "p5_before": float(np.mean([r["p5_before"] for r in rows])),
            "p5_after": float(np.mean([r["p5_after"] for r in rows])),
            "worst": float(diffs.min()), "better": int((diffs > 0.005).sum()),
            "worse": int((diffs < -0.005).sum()),
            "fills": len(fills), "fills_relevant": sum(1 for g in fills if g >= 1),
            "fills_grade2": sum(1 for g in fills if g == 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--per-profile", action="store_true")
    ap.add_argument("--threshold", type=float, default=RankingConfig().reader_threshold,
                    help="[ranking] reader_threshold: a fill's least cosine to a liked paper")
    ap.add_argument("--reorder", type=float, default=RankingConfig().reader_reorder,
                    help="[ranking] reader_reorder (0: no re-ordering)")
    ap.add_argument("--no-fills", action="store_true", help="[ranking] reader_fills = false")
    args = ap.parse_args()
    cfg = RankingConfig(trending="none", reader_threshold=args.threshold,
                        reader_reorder=args.reorder, reader_fills=not args.no_fills)
    if args.per_profile:
        print("| profile | votes up / down | nDCG@10 without | with votes | change | "
              "P@5 without | with votes |")
        print("|---|---|---|---|---|---|---|")
    r = evaluate(cfg, args.per_profile)
    print(f"\n{r['profiles']} judged profiles with a relevant day-2 paper; day 1 = older half "
          f"of the sample by date, day 2 = newer half")
    print("| ranking on day 2 | nDCG@10 | P@5 |")
    print("|---|---|---|")
    print(f"| written profile only | {r['ndcg_before']:.3f} | {r['p5_before']:.3f} |")
    print(f"| written profile + day-1 votes | {r['ndcg_after']:.3f} | {r['p5_after']:.3f} |")
    print(f"\nchange in nDCG@10: {r['ndcg_after'] - r['ndcg_before']:+.3f} on average; "
          f"{r['better']} profiles better, {r['worse']} worse, worst {r['worst']:+.3f}")
    share = r["fills_relevant"] / r["fills"] if r["fills"] else 0.0
    print(f"\"because you liked\" picks on day 2 (all {len(load()[1])} profiles): "
          f"{r['fills']}, judged relevant (grade >= 1) {r['fills_relevant']} ({share:.0%}), "
          f"grade 2 {r['fills_grade2']}; unjudged papers count as not relevant")


if __name__ == "__main__":
    main()
