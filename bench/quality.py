"""Ranking quality on the judged sample set: ours vs plain BM25 vs TF-IDF cosine.

    python bench/quality.py [--per-profile]

Judgments: ``bench/judgments.json`` (graded 0/1/2 per profile over the bundled
sample papers). Metrics: nDCG@10 (graded) and P@5 (grade >= 1), averaged over
profiles that have a relevant paper; for profiles with none, how many papers
each method presents as matches (the right answer is 0). Baselines get the
profile's positive terms as one query over title + abstract: they have no
notion of exclusions, acronyms or phrases, which is the point of comparing.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import re
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from newsletter.config import RankingConfig  # noqa: E402
from newsletter.ranking.engine import Corpus, RankEntry, Ranker  # noqa: E402
from newsletter.ranking.related import RelatedTerms  # noqa: E402
from newsletter.ranking.selection import load_acronyms  # noqa: E402

K = 10


def load() -> tuple[list[RankEntry], list[dict]]:
    judged = json.loads((ROOT / "bench" / "judgments.json").read_text())
    data = json.loads((ROOT / judged["corpus"]).read_text())
    entries = [RankEntry(d["id"], d["title"], d["abstract"], tuple(d["keywords"]),
                         tuple(d["authors"]), d["upvotes"],
                         dt.date.fromisoformat(d["published"]) if d["published"] else None)
               for d in data]
    return entries, judged["profiles"]


def positive_query(profile: str) -> str:
    terms = [t.strip() for t in re.split(r"[,\n;]", profile)]
    return " ".join(re.sub(r"\^[\d.]+$", "", t).strip('"') for t in terms
                    if t and not t.startswith("-"))


def tokens(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def ours(entries: list[RankEntry], related: bool = True) -> Callable[[str], list[str]]:
    cfg = RankingConfig(trending="none")  # a trending section is not a match
    ranker = Ranker(Corpus(entries, load_acronyms(RankingConfig(), entries), cfg,
                           dt.date(2025, 12, 26), RelatedTerms.load() if related else None),
                    cfg)

    def run(profile: str) -> list[str]:
        [chunk] = ranker.rank([(0, profile)], k=K)
        return [entries[i].id for i in chunk.picks[0] if i >= 0]

    return run


def bm25(entries: list[RankEntry]) -> Callable[[str], list[str]]:
    from rank_bm25 import BM25Okapi

    index = BM25Okapi([tokens(e.title + " " + e.abstract) for e in entries])

    def run(profile: str) -> list[str]:
        scores = index.get_scores(tokens(positive_query(profile)))
        order = np.argsort(-scores, kind="stable")[:K]
        return [entries[i].id for i in order if scores[i] > 0]

    return run


def tfidf(entries: list[RankEntry]) -> Callable[[str], list[str]]:
    from sklearn.feature_extraction.text import TfidfVectorizer

    vec = TfidfVectorizer()
    matrix = vec.fit_transform([e.title + " " + e.abstract for e in entries])

    def run(profile: str) -> list[str]:
        sims = (matrix @ vec.transform([positive_query(profile)]).T).toarray().ravel()
        order = np.argsort(-sims, kind="stable")[:K]
        return [entries[i].id for i in order if sims[i] > 0]

    return run


def ndcg(ranked: list[str], judgments: dict[str, int], k: int = K) -> float:
    dcg = sum((2 ** judgments.get(e, 0) - 1) / math.log2(i + 2) for i, e in enumerate(ranked[:k]))
    ideal = sorted(judgments.values(), reverse=True)[:k]
    idcg = sum((2 ** g - 1) / math.log2(i + 2) for i, g in enumerate(ideal))
    return dcg / idcg if idcg else 0.0


def precision(ranked: list[str], judgments: dict[str, int], k: int = 5) -> float:
    return sum(1 for e in ranked[:k] if judgments.get(e, 0) >= 1) / k


def evaluate(per_profile: bool = False) -> dict[str, dict[str, float]]:
    entries, profiles = load()
    methods = {"newsletter": ours(entries),
               "newsletter without the related-terms table": ours(entries, related=False),
               "BM25 (rank_bm25)": bm25(entries), "TF-IDF cosine": tfidf(entries)}
    results: dict[str, dict[str, float]] = {}
    for name, run in methods.items():
        nd, p5, false_matches, judged_n, empty_n, excluded = [], [], 0, 0, 0, 0
        for prof in profiles:
            ranked = run(prof["profile"])
            excluded += len(set(ranked[:K]) & set(prof.get("excluded", ())))
            if prof["judgments"]:
                judged_n += 1
                nd.append(ndcg(ranked, prof["judgments"]))
                p5.append(precision(ranked, prof["judgments"]))
                if per_profile:
                    print(f"{name:18} {prof['id']:10} nDCG@10 {nd[-1]:.3f}  P@5 {p5[-1]:.2f}")
            else:
                empty_n += 1
                false_matches += len(ranked)
        results[name] = {"ndcg@10": float(np.mean(nd)), "p@5": float(np.mean(p5)),
                         "false_matches": false_matches / max(empty_n, 1),
                         "excluded": excluded,
                         "profiles": judged_n, "empty_profiles": empty_n}
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--per-profile", action="store_true")
    args = ap.parse_args()
    results = evaluate(args.per_profile)
    first = next(iter(results.values()))
    print(f"{first['profiles']} judged profiles "
          f"(+{first['empty_profiles']} with no relevant paper)")
    print("| method | nDCG@10 | P@5 | papers shown as matches when none is relevant | "
          "excluded-topic papers in the top 10 |")
    print("|---|---|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {r['ndcg@10']:.3f} | {r['p@5']:.3f} | {r['false_matches']:.1f} | "
              f"{r['excluded']} |")


if __name__ == "__main__":
    main()
