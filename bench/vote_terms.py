"""What the voted papers teach, when an edition opens: CPU of making their terms.

    python bench/vote_terms.py [--papers 12000] [--votes 300000] [--rounds 3]

After the votes are read (``bench/vote_read.py``), opening an edition finds each voted
paper's terms against the day's papers (``ranking.feedback.Learner``) and the reader
model's vectors of them (``ranking.reader.Reader``), inside ``Ranker(corpus, cfg,
votes)``. That work grows with the papers ever voted on, not with the readers. Here:
``--papers`` synthetic voted papers (the bundled papers' abstracts under recombined
titles, ``bench.common.synthetic_entries``), ``--votes`` votes of 4,000 readers spread
over them and over 400 days, against the bundled papers as the day's. Printed: CPU
seconds of building the ranker, the features it made and a digest of the learned
terms (the same for two checkouts that learn the same: ``PYTHONPATH=CHECKOUT python
bench/vote_terms.py`` runs another checkout's code).
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import sys
import time
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parent.parent))  # after PYTHONPATH

import numpy as np  # noqa: E402

from bench.common import synthetic_entries  # noqa: E402

TODAY = dt.date(2025, 12, 26)


def one_round(papers: int, votes: int) -> tuple[float, int, str]:
    from newsletter.config import RankingConfig
    from newsletter.ranking.corpus import Corpus, RankEntry
    from newsletter.ranking.engine import Ranker
    from newsletter.ranking.feedback import Votes
    from newsletter.ranking.selection import load_acronyms
    from newsletter.render.samples import sample_papers

    cfg = RankingConfig()
    today = [RankEntry.of(p) for p in sample_papers()]
    voted = synthetic_entries(papers, seed=5)
    rng = np.random.default_rng(1)
    history = Votes.arrays(rng.integers(0, 4000, votes), rng.integers(0, papers, votes),
                           np.where(rng.random(votes) < 0.8, 1, -1),
                           rng.integers(0, 400, votes).astype(np.float32), voted)
    corpus = Corpus(today, load_acronyms(cfg, today), cfg, TODAY)
    started = time.process_time()
    ranker = Ranker(corpus, cfg, history)
    cpu = time.process_time() - started
    assert ranker.learner is not None
    learner = ranker.learner
    digest = hashlib.sha256()
    for row in zip(learner._p_rows.tolist(), learner._p_cols.tolist(),
                   learner._p_vals.tolist(), strict=True):
        p, fid, weight = row
        digest.update(f"{voted[p].id} {ranker.features[fid]} {weight:.6f}\n".encode())
    return cpu, len(ranker.features), digest.hexdigest()[:16]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--papers", type=int, default=12_000)
    ap.add_argument("--votes", type=int, default=300_000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    import newsletter

    print(f"{args.papers:,} voted papers, {args.votes:,} votes, the bundled papers as "
          f"today's; code from {Path(newsletter.__file__).parent.parent}")
    print("| round | CPU s | features | digest of what was learned |")
    print("|---|---|---|---|")
    for r in range(1, args.rounds + 1):
        cpu, features, digest = one_round(args.papers, args.votes)
        print(f"| {r} | {cpu:.2f} | {features:,} | {digest} |")


if __name__ == "__main__":
    main()
