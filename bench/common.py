"""Shared helpers for the benchmarks: sample data, synthetic entries and profiles."""

from __future__ import annotations

import json
import random
import re
import resource
from collections import Counter
from pathlib import Path

from newsletter.ranking.engine import RankEntry
from newsletter.ranking.text import STOPWORDS

SAMPLE = Path(__file__).resolve().parent.parent / "newsletter" / "data" / "sample_papers.json"


def sample_papers() -> list[dict]:
    return json.loads(SAMPLE.read_text())


def synthetic_entries(n: int, seed: int = 1) -> list[RankEntry]:
    """The sample papers, topped up to ``n`` with recombined titles and abstracts."""
    papers = sample_papers()
    rng = random.Random(seed)
    out = [RankEntry(p["id"], p["title"], p["abstract"], upvotes=p["upvotes"]) for p in papers]
    while len(out) < n:
        a, b = rng.sample(papers, 2)
        words = a["title"].split()
        rng.shuffle(words)
        out.append(RankEntry(f"syn{len(out)}", " ".join(words), b["abstract"],
                             upvotes=rng.randint(0, 50)))
    return out[:n]


def vocabulary(min_count: int = 1) -> list[str]:
    """Terms people would type: frequent 1-3 word phrases from the sample titles."""
    counts: Counter[str] = Counter()
    for p in sample_papers():
        toks = [t.lower() for t in re.findall(r"[A-Za-z][A-Za-z-]+", p["title"])]
        for n in (1, 2, 3):
            for i in range(len(toks) - n + 1):
                gram = toks[i : i + n]
                if gram[0] in STOPWORDS or gram[-1] in STOPWORDS:
                    continue
                counts[" ".join(gram)] += 1
    return [t for t, c in counts.items() if c >= min_count]


def synthetic_profiles(n: int, seed: int = 2) -> list[str]:
    """3-8 terms each; about 10% of terms weighted and 5% exclusions."""
    vocab = vocabulary()
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        terms = rng.sample(vocab, rng.randint(3, 8))
        if rng.random() < 0.3:
            terms[0] = f"{terms[0]}^2"
        if rng.random() < 0.2:
            terms[-1] = "-" + terms[-1]
        out.append(", ".join(terms))
    return out


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
