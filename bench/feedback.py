"""What votes teach: day-2 ranking quality with and without day-1 votes.

    python bench/feedback.py [--per-profile] [--threshold 0.3] [--reorder 0.5] [--no-fills]
                             [--model cosine|rocchio|ridge|logistic] [--beta 0.5]
                             [--negatives 20] [--fields default|title|title+abstract]
                             [--bigrams] [--compare]

The judged sample (``bench/judgments.json``) is split by publication date. "Day 1"
shows each profile its top 10 of the older half and votes as the judgments say (more
like this on grade 2, less like this on grade 0, nothing on grade 1); "day 2" ranks the
newer half with and without those votes. Metrics as in ``bench/quality.py``: nDCG@10
(graded, ideal from the day-2 judgments) and P@5, per profile and on average over the
profiles that have a relevant day-2 paper; and, over all profiles, how many day-2 picks
the email would say "because you liked" of and how many of those are judged relevant.

``--model`` chooses what scores a fill (the label always names the liked paper with
the highest cosine to it): ``cosine``, what ``newsletter/ranking/reader.py`` does (the
best cosine to any liked paper); ``rocchio``, the cosine with the mean of the liked
papers' vectors minus ``--beta`` × the mean of the disliked ones; ``ridge`` and
``logistic``, a per-reader linear model on the same TF-IDF vectors (liked = +1;
disliked, shown but not liked, and ``--negatives`` random unliked day-1 papers = -1),
in the spirit of arxiv-sanity-lite's per-user SVM. ``--fields`` and ``--bigrams``
change the vectors for every model. ``--compare`` prints the whole table of
docs/benchmarks.md (Feedback).

The judged set lists only papers judged relevant (grade 1 or 2); a paper it does not
list was either read and judged 0 or never read. Fills are counted three ways: judged
relevant, judged not relevant (on the profile's excluded list, or in the top 15 of
the keyword ranking, BM25 or TF-IDF over the whole sample: the pool the judges read,
less its keyword search) and unjudged (the rest: not relevant as far as this set can tell).
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from scipy import sparse

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.quality import K, load, ndcg, positive_query, precision, tokens  # noqa: E402
from newsletter.config import RankingConfig  # noqa: E402
from newsletter.ranking import reader as reader_mod  # noqa: E402
from newsletter.ranking.engine import Corpus, RankEntry, Ranker  # noqa: E402
from newsletter.ranking.feedback import Votes  # noqa: E402
from newsletter.ranking.reader import NEIGHBOURS, PaperVectors, Reader  # noqa: E402
from newsletter.ranking.related import RelatedTerms  # noqa: E402
from newsletter.ranking.selection import load_acronyms  # noqa: E402
from newsletter.ranking.text import STOPWORDS, analyze_words, words  # noqa: E402

TODAY = dt.date(2025, 12, 26)
POOL = 15  # the keyword ranking's top this many over the whole sample: read by the judges
FIELDS: dict[str, tuple[tuple[str, float], ...]] = {"default": reader_mod._FIELDS,
          "title": (("title", 1.0),),
          "title+abstract": (("title", 1.0), ("abstract", 1.0))}


@dataclass(frozen=True)
class Model:
    """How a fill is scored (see the module docstring)."""

    name: str = "cosine"
    beta: float = 0.5  # rocchio: weight of the disliked papers' mean
    negatives: int = 20  # ridge/logistic: random unliked day-1 papers as -1
    lam: float = 1.0  # ridge/logistic: L2 penalty
    fields: str = "default"
    bigrams: bool = False
    fill_all: bool = False  # every empty slot filled, at any score (models compared alike)


def _stems_bigrams(entry: RankEntry, corpus: Corpus,
                   known: Mapping[str, Sequence[str]] | None = None) -> dict[str, float]:
    """``reader._stems`` plus each pair of neighbouring stems in a field."""
    counts: dict[str, float] = {}
    texts = {"title": entry.title, "keywords": " , ".join(entry.keywords),
             "abstract": entry.abstract}
    for fname, weight in reader_mod._FIELDS:
        if known is not None and fname in known:
            stems: Sequence[str] = known[fname]
        else:
            stems = [st for st, raw in analyze_words(words(texts[fname]), corpus.acronyms)
                     if raw not in STOPWORDS]
        stems = [st for st in stems if len(st) > 1]
        for st in list(stems) + [f"{a}_{b}" for a, b in zip(stems, stems[1:], strict=False)]:
            counts[st] = counts.get(st, 0.0) + weight
    return counts


@contextmanager
def vectors_of(model: Model) -> Iterator[None]:
    """The reader's vectors with ``model``'s fields and bigrams, for this run only."""
    saved = reader_mod._FIELDS, reader_mod._stems
    reader_mod._FIELDS = FIELDS[model.fields]  # type: ignore[assignment]
    if model.bigrams:
        reader_mod._stems = _stems_bigrams
    try:
        yield
    finally:
        reader_mod._FIELDS, reader_mod._stems = saved


class ModelReader(Reader):
    """``Reader`` with fills scored by a per-reader model of one subscriber's votes
    (re-ordering unchanged): each of today's papers is put under the liked paper with
    the highest cosine to it (the one the label names), at the model's score, and
    ``Reader._fill`` takes the best at ``reader_threshold`` or more as before."""

    def __init__(self, corpus: Corpus, cfg: RankingConfig, votes: Votes,
                 model: Model, unliked: Sequence[RankEntry]) -> None:
        super().__init__(corpus, cfg, votes)
        if not len(self.liked):
            return
        vectors = PaperVectors.of(corpus)
        stems = [reader_mod._stems(e, corpus) for e in votes.entries]
        voted = vectors.vectors(stems)
        up = votes.papers[votes.signs > 0]
        down = votes.papers[votes.signs < 0]
        if model.name == "cosine":
            score = self.sim.max(axis=0)
        elif model.name == "rocchio":
            c = np.asarray(voted[up].mean(axis=0)).ravel()
            if len(down):
                c -= model.beta * np.asarray(voted[down].mean(axis=0)).ravel()
            norm = float(np.linalg.norm(c)) or 1.0
            score = np.asarray(vectors.matrix @ c).ravel() / norm
        else:
            neg = sorted(set(down.tolist()))
            x = sparse.vstack([voted[up], voted[neg],
                               vectors.vectors([reader_mod._stems(e, corpus) for e in unliked])]
                              ).tocsr()
            y = np.r_[np.ones(len(up)), -np.ones(x.shape[0] - len(up))]
            w = (_ridge if model.name == "ridge" else _logistic)(x, y, model.lam)
            score = np.asarray(vectors.matrix @ w).ravel()
        today = {e.id: i for i, e in enumerate(corpus.entries)}
        for e in (votes.entries[p] for p in votes.papers):
            if e.id in today:  # a paper voted on is never a fill
                score[today[e.id]] = -np.inf
        floor = -np.inf if model.fill_all else cfg.reader_threshold
        self.score = score
        owner = np.argmax(self.sim, axis=0)  # the liked row each paper would name
        rows, cols, vals = [], [], []
        for r in range(len(self.liked)):
            mine = np.flatnonzero((owner == r) & (score >= floor) & np.isfinite(score))
            mine = mine[np.argsort(-score[mine], kind="stable")][:NEIGHBOURS]
            rows.extend([r] * len(mine))
            cols.extend(mine.tolist())
            vals.extend(score[mine].tolist())
        self.neighbours = sparse.csr_matrix(
            (np.asarray(vals, np.float32), (rows, cols)),
            shape=self.sim.shape, dtype=np.float32)
        # CSR from coordinates sorts columns; ``_fill`` orders by value itself, and
        # ``because`` looks a column up, so the order within a row does not matter.


def _ridge(x: sparse.csr_matrix, y: np.ndarray, lam: float) -> np.ndarray:
    """Least squares with an L2 penalty, in the dual (a few dozen examples, thousands
    of terms): w = Xᵀ (XXᵀ + λI)⁻¹ y."""
    gram = (x @ x.T).toarray()
    alpha = np.linalg.solve(gram + lam * np.eye(len(y)), y)
    return np.asarray(x.T @ alpha).ravel()


def _logistic(x: sparse.csr_matrix, y: np.ndarray, lam: float,
              steps: int = 300) -> np.ndarray:
    """L2-penalised logistic regression by gradient descent (classes weighted equally,
    as a linear SVM with balanced classes would be); the score is the margin."""
    w = np.zeros(x.shape[1])
    b = 0.0
    weight = np.where(y > 0, 0.5 / max((y > 0).sum(), 1), 0.5 / max((y < 0).sum(), 1))
    lr = 2.0
    for _ in range(steps):
        m = y * (x @ w + b)
        g = -weight * y / (1 + np.exp(m))
        w -= lr * (np.asarray(x.T @ g).ravel() + lam * w / len(y))
        b -= lr * float(g.sum())
    return w


def baselines(entries: list[RankEntry]) -> Callable[[str], set[str]]:
    """The top ``POOL`` of the two other rankers the judged pool was made from
    (``bench/quality.py``: BM25 and TF-IDF over title and abstract)."""
    from rank_bm25 import BM25Okapi
    from sklearn.feature_extraction.text import TfidfVectorizer

    index = BM25Okapi([tokens(e.title + " " + e.abstract) for e in entries])
    vec = TfidfVectorizer()
    matrix = vec.fit_transform([e.title + " " + e.abstract for e in entries])

    def run(profile: str) -> set[str]:
        query = positive_query(profile)
        found: set[str] = set()
        for scores in (index.get_scores(tokens(query)),
                       (matrix @ vec.transform([query]).T).toarray().ravel()):
            order = np.argsort(-scores, kind="stable")[:POOL]
            found |= {entries[i].id for i in order if scores[i] > 0}
        return found

    return run


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


def evaluate(cfg: RankingConfig, per_profile: bool = False,
             model: Model | None = None) -> dict[str, Any]:
    model = model or Model()
    with vectors_of(model):
        return _evaluate(cfg, per_profile, model)


def _evaluate(cfg: RankingConfig, per_profile: bool, model: Model) -> dict[str, Any]:
    entries, profiles = load()
    day1, day2 = split(entries)
    first = Ranker(corpus_of(day1, cfg), cfg)
    later_corpus = corpus_of(day2, cfg)
    plain = Ranker(later_corpus, cfg)
    whole = Ranker(corpus_of(entries, cfg), cfg)
    pooled = baselines(entries)
    no_fills = RankingConfig(**{**cfg.model_dump(), "reader_fills": False})
    day2_ids = {e.id for e in day2}
    papers = {e.id: e for e in day1}
    rows = []
    # per "because you liked" pick: "relevant", "not relevant" (judged), "unjudged"
    fills: list[str] = []
    grade2 = 0
    ranks: list[int] = []  # per relevant day-2 paper a fill could be, its rank by the model
    room: list[tuple[int, int, int]] = []  # (empty slots, candidates, relevant candidates)
    for prof in profiles:
        grades = prof["judgments"]
        later = {k: v for k, v in grades.items() if k in day2_ids}
        [chunk] = whole.rank([(0, prof["profile"])], k=POOL)
        pool = set(prof.get("excluded", ())) | pooled(prof["profile"]) | {
            whole.corpus.entries[i].id for i in chunk.picks[0] if i >= 0}
        shown = top(first, prof["profile"])
        votes = [(0, i, 1 if grades.get(pid, 0) == 2 else -1, 1.0)
                 for i, pid in enumerate(shown) if grades.get(pid, 0) != 1]
        voted = Votes.of(votes, [papers[pid] for pid in shown])
        taught = Ranker(later_corpus, cfg, voted)
        keywords = top(Ranker(later_corpus, no_fills, voted), prof["profile"])
        if taught.reader is not None and len(taught.reader.liked):
            rng = random.Random(f"{prof['id']}")
            others = [e for e in day1 if grades.get(e.id, 0) != 2]
            unliked = [papers[pid] for pid in shown if grades.get(pid, 0) == 1]
            unliked += rng.sample(others, min(model.negatives, len(others)))
            scorer = ModelReader(later_corpus, cfg, voted, model, unliked)
            if model.name != "cosine" or model.fill_all:
                taught.reader = scorer
            if len(keywords) < K:  # where fills can go: each relevant candidate's rank
                cand = [i for i, e in enumerate(day2) if e.id not in keywords
                        and e.id not in prof.get("excluded", ())
                        and np.isfinite(scorer.score[i])]
                order = sorted(cand, key=lambda i: -scorer.score[i])
                ranks += [n + 1 for n, i in enumerate(order) if grades.get(day2[i].id, 0)]
                found = sum(1 for i in cand if grades.get(day2[i].id, 0))
                room.append((K - len(keywords), len(cand), found))
        picked = top_fills(taught, prof["profile"])
        for pid, fill in picked:
            if fill:
                g = grades.get(pid, 0)
                grade2 += g == 2
                fills.append("relevant" if g else "not relevant" if pid in pool
                             else "unjudged")
        if not any(v > 0 for v in later.values()):
            continue
        before, after = top(plain, prof["profile"]), [pid for pid, _ in picked]
        row = {"id": prof["id"], "up": sum(1 for v in votes if v[2] > 0),
               "down": sum(1 for v in votes if v[2] < 0),
               "ndcg_before": ndcg(before, later), "ndcg_after": ndcg(after, later),
               "ndcg_kw": ndcg(keywords, later),
               "p5_before": precision(before, later), "p5_after": precision(after, later)}
        rows.append(row)
        if per_profile:
            print(f"| {row['id']} | {row['up']} / {row['down']} | {row['ndcg_before']:.3f} | "
                  f"{row['ndcg_after']:.3f} | {row['ndcg_after'] - row['ndcg_before']:+.3f} | "
                  f"{row['p5_before']:.2f} | {row['p5_after']:.2f} |")
    diffs = np.array([r["ndcg_after"] - r["ndcg_before"] for r in rows])
    vs_kw = np.array([r["ndcg_after"] - r["ndcg_kw"] for r in rows])
    return {"profiles": len(rows),
            "ndcg_before": float(np.mean([r["ndcg_before"] for r in rows])),
            "ndcg_after": float(np.mean([r["ndcg_after"] for r in rows])),
            "p5_before": float(np.mean([r["p5_before"] for r in rows])),
            "p5_after": float(np.mean([r["p5_after"] for r in rows])),
            "worst": float(diffs.min()), "better": int((diffs > 0.005).sum()),
            "worse": int((diffs < -0.005).sum()), "worst_vs_no_fills": float(vs_kw.min()),
            "fills": len(fills), "fills_relevant": fills.count("relevant"),
            "fills_not_relevant": fills.count("not relevant"),
            "fills_unjudged": fills.count("unjudged"), "fills_grade2": grade2,
            "ranks": ranks, "room": room}


# (label, model, thresholds) of ``--compare``: docs/benchmarks.md (Feedback); None: every
# empty slot filled at any score, so every model fills the same slots
COMPARE: list[tuple[str, Model, tuple[float | None, ...]]] = [
    ("cosine, best over liked papers (reader.py)", Model(), (0.3, 0.2, 0.1, None)),
    ("rocchio, beta 0.5", Model("rocchio", beta=0.5), (0.3, 0.2, 0.1, None)),
    ("rocchio, beta 0.25", Model("rocchio", beta=0.25), (0.2, 0.1, None)),
    ("rocchio, beta 0 (mean of liked)", Model("rocchio", beta=0.0), (0.2, 0.1, None)),
    ("ridge, 20 random negatives", Model("ridge"), (0.1, 0.05, None)),
    ("ridge, no random negatives", Model("ridge", negatives=0), (0.1, None)),
    ("logistic, 20 random negatives", Model("logistic"), (0.5, 0.2, None)),
    ("cosine, title + abstract", Model(fields="title+abstract"), (0.2, 0.1, None)),
    ("cosine, title only", Model(fields="title"), (0.25, 0.15, None)),
    ("cosine, + bigrams", Model(bigrams=True), (0.2, 0.1, None)),
    ("rocchio beta 0.5, + bigrams", Model("rocchio", bigrams=True), (0.2, None)),
]


def compare(reorder: float) -> None:
    print("| fill model | threshold | fills | judged relevant | judged not relevant | "
          "unjudged | nDCG@10 | P@5 | worst vs written only | worst vs no fills | "
          "rank of each relevant candidate (mean) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for label, base, thresholds in COMPARE:
        for t in thresholds:
            model = replace(base, fill_all=t is None)
            cfg = RankingConfig(trending="none", reader_threshold=t or 0.0,
                                reader_reorder=reorder)
            r = evaluate(cfg, model=model)
            share = f" ({r['fills_relevant'] / r['fills']:.0%})" if r["fills"] else ""
            ranks = r["ranks"]
            rank = (f"{', '.join(map(str, sorted(ranks)))} ({np.mean(ranks):.0f})"
                    if t is None else "")
            print(f"| {label} | {'all' if t is None else t} | {r['fills']} | "
                  f"{r['fills_relevant']}{share} | {r['fills_not_relevant']} | "
                  f"{r['fills_unjudged']} | {r['ndcg_after']:.3f} | {r['p5_after']:.3f} | "
                  f"{r['worst']:+.3f} | {r['worst_vs_no_fills']:+.3f} | {rank} |")


    room = r["room"]
    slots, cands = sum(x[0] for x in room), sum(x[1] for x in room)
    best = sum(min(x[0], x[2]) for x in room)
    chance = sum(x[0] * x[2] / x[1] for x in room if x[1])
    print(f"\nWhat fills can reach: {slots} empty slots in {len(room)} profiles with a 👍; "
          f"{sum(x[2] for x in room)} judged relevant papers among their {cands} "
          f"candidates (day-2 papers the keywords did not pick, excluded topics left out, "
          f"about {cands // max(len(room), 1)} a profile); at best {best} relevant fills, "
          f"by chance {chance:.1f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--per-profile", action="store_true")
    ap.add_argument("--threshold", type=float, default=RankingConfig().reader_threshold,
                    help="[ranking] reader_threshold: a fill's least score")
    ap.add_argument("--reorder", type=float, default=RankingConfig().reader_reorder,
                    help="[ranking] reader_reorder (0: no re-ordering)")
    ap.add_argument("--no-fills", action="store_true", help="[ranking] reader_fills = false")
    ap.add_argument("--model", choices=("cosine", "rocchio", "ridge", "logistic"),
                    default="cosine", help="what scores a fill (see above)")
    ap.add_argument("--beta", type=float, default=0.5, help="rocchio: disliked weight")
    ap.add_argument("--negatives", type=int, default=20,
                    help="ridge/logistic: random unliked day-1 papers as negatives")
    ap.add_argument("--fields", choices=tuple(FIELDS), default="default",
                    help="default: title x2, keywords, abstract")
    ap.add_argument("--bigrams", action="store_true", help="pairs of stems as terms too")
    ap.add_argument("--fill-all", action="store_true",
                    help="fill every empty slot at any score (no threshold)")
    ap.add_argument("--compare", action="store_true",
                    help="the table of every model in docs/benchmarks.md")
    args = ap.parse_args()
    if args.compare:
        compare(args.reorder)
        return
    model = Model(args.model, beta=args.beta, negatives=args.negatives, fields=args.fields,
                  bigrams=args.bigrams, fill_all=args.fill_all)
    cfg = RankingConfig(trending="none", reader_threshold=args.threshold,
                        reader_reorder=args.reorder, reader_fills=not args.no_fills)
    if args.per_profile:
        print("| profile | votes up / down | nDCG@10 without | with votes | change | "
              "P@5 without | with votes |")
        print("|---|---|---|---|---|---|---|")
    r = evaluate(cfg, args.per_profile, model)
    print(f"\n{r['profiles']} judged profiles with a relevant day-2 paper; day 1 = older half "
          f"of the sample by date, day 2 = newer half")
    print("| ranking on day 2 | nDCG@10 | P@5 |")
    print("|---|---|---|")
    print(f"| written profile only | {r['ndcg_before']:.3f} | {r['p5_before']:.3f} |")
    print(f"| written profile + day-1 votes | {r['ndcg_after']:.3f} | {r['p5_after']:.3f} |")
    print(f"\nchange in nDCG@10: {r['ndcg_after'] - r['ndcg_before']:+.3f} on average; "
          f"{r['better']} profiles better, {r['worse']} worse, worst {r['worst']:+.3f} "
          f"(worst against the same votes without fills {r['worst_vs_no_fills']:+.3f})")
    share = r["fills_relevant"] / r["fills"] if r["fills"] else 0.0
    print(f"\"because you liked\" picks on day 2 (all {len(load()[1])} profiles, model "
          f"{args.model}): {r['fills']}, judged relevant (grade >= 1) {r['fills_relevant']} "
          f"({share:.0%}, grade 2 {r['fills_grade2']}), judged not relevant "
          f"{r['fills_not_relevant']}, unjudged {r['fills_unjudged']}")


if __name__ == "__main__":
    main()
