"""A reader model from votes: papers like the ones a reader liked.

The written profile stays the base. What a reader's 👍 add on top of it is
paper-to-paper similarity (TF-IDF cosine over title, keywords and abstract):

* **Fills.** Slots the keyword ranking leaves empty are filled with today's papers
  most similar to a paper the reader liked, each labelled "because you liked
  <that paper's title>", and only at a cosine of ``[ranking] reader_threshold`` or
  more. An excluded topic, a duplicate copy, a paper already sent or voted on is
  never filled; keyword matches always come first.
* **Re-ordering.** Once a reader has ``REORDER_MIN_LIKES`` 👍, each keyword pick gains
  ``reader_reorder`` × its best similarity to a liked paper, and the picks are put
  in that order: which papers are picked does not change, only their order, and a
  cosine is at most 1, so the shift is small next to relevance (1 and up).

Why paper-to-paper and not a per-reader linear model or centroid over terms:
today's papers are compared with each liked paper once per ranking (``liked papers
× papers``, a few hundred thousand numbers), so a reader's fill score is a lookup
and a max, and the liked paper that earned the fill, which the label names, is known
without more work; it is vectorised over a chunk of subscribers like the rest of the
engine (``bench/rank_speed.py``). What it is worth on the judged set, and what it is
not, is in docs/benchmarks.md (Feedback): few fills reach the threshold there and
few of them are judged relevant.

Work is done only where it can matter: fills for rows that have both a 👍 and an
empty slot; re-ordering for rows with ``REORDER_MIN_LIKES`` 👍 and two picks or more.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from newsletter.config import RankingConfig
from newsletter.ranking.corpus import Corpus, RankEntry
from newsletter.ranking.sparse import sparse
from newsletter.ranking.text import STOPWORDS, analyze_words, words

if TYPE_CHECKING:
    from newsletter.ranking.feedback import Votes

REORDER_MIN_LIKES = 2  # 👍 a reader needs before their picks are re-ordered
NEIGHBOURS = 20  # per liked paper, today's most similar papers kept for fills
_FIELDS = (("title", 2.0), ("keywords", 1.0), ("abstract", 1.0))


def _stems(entry: RankEntry, corpus: Corpus,
           known: Mapping[str, Sequence[str]] | None = None) -> dict[str, float]:
    """Field-weighted stem counts of a paper, analysed as the corpus analyses papers;
    ``known``: its fields' stems already found (by the learner), not analysed again."""
    counts: dict[str, float] = {}
    texts = {"title": entry.title, "keywords": " , ".join(entry.keywords),
             "abstract": entry.abstract}
    for fname, weight in _FIELDS:
        if known is not None and fname in known:
            stems: Sequence[str] = known[fname]
        else:
            stems = [st for st, raw in analyze_words(words(texts[fname]), corpus.acronyms)
                     if raw not in STOPWORDS]
        for st in stems:
            if len(st) > 1:
                counts[st] = counts.get(st, 0.0) + weight
    return counts


def _corpus_stems(corpus: Corpus, i: int) -> dict[str, float]:
    """``_stems`` of today's paper ``i`` from the corpus's own analysis."""
    return _stems(corpus.entries[i], corpus,
                  {fname: corpus.stem_text[fname][i].split() for fname, _ in _FIELDS})


class PaperVectors:
    """Today's papers as L2-normalised TF-IDF rows (log tf, smooth idf over today's
    papers), made once per corpus and shared by every ranker of it."""

    def __init__(self, corpus: Corpus) -> None:
        self.corpus = corpus
        self.vocab: dict[str, int] = {}
        counted = [_corpus_stems(corpus, i) for i in range(len(corpus.entries))]
        for c in counted:
            for st in c:
                self.vocab.setdefault(st, len(self.vocab))
        df = np.zeros(len(self.vocab), dtype=np.float64)
        for c in counted:
            for st in c:
                df[self.vocab[st]] += 1
        n = len(corpus.entries)
        self.idf = (np.log((1 + n) / (1 + df)) + 1).astype(np.float32)
        self.matrix = self.vectors(counted)

    def vectors(self, counted: Sequence[dict[str, float]]) -> sparse.csr_matrix:
        """Rows for papers' stem counts; stems today's papers lack are left out (they
        cannot make two papers similar)."""
        rows: list[int] = []
        cols: list[int] = []
        vals: list[float] = []
        vocab = self.vocab
        for r, c in enumerate(counted):
            for st, count in c.items():
                col = vocab.get(st)
                if col is not None:
                    rows.append(r)
                    cols.append(col)
                    vals.append(count)
        m = sparse.csr_matrix((np.log1p(np.asarray(vals, np.float32)), (rows, cols)),
                              shape=(len(counted), len(vocab)), dtype=np.float32)
        m = m @ sparse.diags(self.idf)
        norms = np.sqrt(np.asarray(m.multiply(m).sum(axis=1)).ravel())
        norms[norms == 0] = 1
        return sparse.csr_matrix(sparse.diags(1 / norms.astype(np.float32)) @ m,
                                 dtype=np.float32)

    @classmethod
    def of(cls, corpus: Corpus) -> PaperVectors:
        found = getattr(corpus, "_paper_vectors", None)
        if found is None:
            found = cls(corpus)
            corpus._paper_vectors = found  # type: ignore[attr-defined]
        return found


class Reader:
    """Fills and re-ordering from 👍 for one ranker (one day's papers)."""

    def __init__(self, corpus: Corpus, cfg: RankingConfig, votes: Votes,
                 stems: Mapping[str, Mapping[str, Sequence[str]]] | None = None) -> None:
        """``stems``: per voted paper id, its fields' stems if already found."""
        self.corpus = corpus
        self.cfg = cfg
        self.votes = votes
        # papers someone liked (a count, not np.unique: ten million votes sort slowly)
        liked = np.flatnonzero(np.bincount(votes.papers[votes.signs > 0],
                                           minlength=len(votes.entries)))
        # liked paper index (into votes.entries) → its row in ``sim``
        self.row_of = np.full(len(votes.entries), -1, dtype=np.int32)
        self.row_of[liked] = np.arange(len(liked), dtype=np.int32)
        self.liked = liked
        vectors = PaperVectors.of(corpus)
        today = {e.id: i for i, e in enumerate(corpus.entries)}
        counted = []
        same: list[tuple[int, int]] = []
        for r, p in enumerate(liked.tolist()):
            entry = votes.entries[p]
            if entry.id in today:
                same.append((r, today[entry.id]))
            counted.append(_stems(entry, corpus, (stems or {}).get(entry.id)))
        lv = vectors.vectors(counted)
        sim = np.asarray((lv @ vectors.matrix.T).todense(), dtype=np.float32)
        for r, i in same:  # a liked paper among today's is never "like itself"
            sim[r, i] = 0
        self.sim = sim  # liked papers × today's papers, cosine
        self.neighbours = self._neighbours(sim, cfg.reader_threshold)

    @staticmethod
    def _neighbours(sim: np.ndarray, threshold: float) -> sparse.csr_matrix:
        """Per liked paper, today's papers at ``threshold`` or more, the ``NEIGHBOURS``
        most similar (CSR, columns best first): all a fill can come from."""
        n, m = sim.shape
        keep = min(NEIGHBOURS, m)
        if not n or not keep:
            return sparse.csr_matrix((n, m), dtype=np.float32)
        top = np.argpartition(-sim, keep - 1, axis=1)[:, :keep] if keep < m else (
            np.broadcast_to(np.arange(m), (n, m)))
        vals = np.take_along_axis(sim, top, axis=1)
        order = np.argsort(-vals, axis=1, kind="stable")
        top = np.take_along_axis(top, order, axis=1)
        vals = np.take_along_axis(vals, order, axis=1)
        ok = vals >= threshold
        counts = ok.sum(axis=1)
        indptr = np.concatenate([[0], np.cumsum(counts)])
        return sparse.csr_matrix((vals[ok], top[ok], indptr), shape=(n, m))

    def _likes(self, keys: Sequence[Any], at: tuple[np.ndarray, np.ndarray] | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
        """(row in ``keys``, row in ``sim``) per 👍 of those subscribers, by row;
        ``at``: their votes (``Votes.rows_for``) if already found."""
        rows, idx = self.votes.rows_for(keys) if at is None else at
        up = self.votes.signs[idx] > 0
        return rows[up], self.row_of[self.votes.papers[idx[up]]]

    def apply(self, keys: Sequence[Any], picks: np.ndarray, scores: np.ndarray,
              score: np.ndarray, excluded: np.ndarray | None, sent_rows: list[int],
              sent_cols: list[int], at: tuple[np.ndarray, np.ndarray] | None = None
              ) -> np.ndarray:
        """Re-order and fill one chunk's picks in place; returns, per slot, the liked
        paper (index into ``votes.entries``) a fill came from, -1 elsewhere.

        ``score`` is the chunk's score matrix after masking (-inf: not a match, or
        never to be picked); ``excluded`` the rows' excluded papers (None: none)."""
        n, k = picks.shape
        liked_of = np.full((n, k), -1, dtype=np.int32)
        if not len(self.liked):
            return liked_of
        rows, lp = self._likes(keys, at)
        if not len(rows):
            return liked_of
        likes = np.bincount(rows, minlength=n)
        if self.cfg.reader_reorder > 0:
            self._reorder(picks, scores, rows, lp, likes)
        if self.cfg.reader_fills:
            self._fill(picks, scores, liked_of, score, excluded, sent_rows, sent_cols,
                       rows, lp)
        return liked_of

    def _reorder(self, picks: np.ndarray, scores: np.ndarray, rows: np.ndarray,
                 lp: np.ndarray, likes: np.ndarray) -> None:
        """Keyword picks of rows with enough 👍 re-sorted by score + reorder × their
        best similarity to a liked paper."""
        n, k = picks.shape
        want = (likes >= REORDER_MIN_LIKES) & (picks[:, min(1, k - 1)] >= 0)
        sel = want[rows]
        if not sel.any() or k < 2:
            return
        rr, pp = rows[sel], lp[sel]
        # One row per 👍, k columns, gathered through flat indices in one dimension
        # (several times faster than 2-d fancy indexing at five million 👍).
        small = np.int32 if self.sim.size < 2**31 else np.intp  # int32 halves the traffic
        at = (pp.astype(small) * self.sim.shape[1])[:, None] + np.maximum(picks, 0)[rr]
        gathered = self.sim.ravel()[at.ravel()].reshape(at.shape)
        starts = np.flatnonzero(np.r_[True, rr[1:] != rr[:-1]])
        best = np.maximum.reduceat(gathered, starts, axis=0)
        target = rr[starts]
        sub = scores[target]
        lifted = np.where(picks[target] >= 0, sub + np.float32(self.cfg.reader_reorder) * best,
                          -np.inf)
        order = np.argsort(-lifted, axis=1, kind="stable")
        picks[target] = np.take_along_axis(picks[target], order, axis=1)
        scores[target] = np.take_along_axis(sub, order, axis=1)

    def _fill(self, picks: np.ndarray, scores: np.ndarray, liked_of: np.ndarray,
              score: np.ndarray, excluded: np.ndarray | None, sent_rows: list[int],
              sent_cols: list[int], rows: np.ndarray, lp: np.ndarray) -> None:
        n, k = picks.shape
        need = (picks < 0).sum(axis=1)
        sel = need[rows] > 0
        if not sel.any():
            return
        rr, pp = rows[sel], lp[sel]
        nb = self.neighbours
        counts = np.diff(nb.indptr)[pp]
        if not counts.sum():
            return
        starts = np.repeat(nb.indptr[pp], counts)
        offs = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
        at = starts + offs
        r = np.repeat(rr, counts)
        c = nb.indices[at]
        v = nb.data[at]
        p = np.repeat(pp, counts)
        # Never a match already picked (rows with an empty slot picked every match),
        # an excluded topic, a duplicate copy, or a paper sent or voted on.
        ok = ~np.isfinite(score[r, c]) & self.corpus.canonical[c]
        if excluded is not None:
            ok &= ~excluded[r, c]
        if sent_rows:
            m = score.shape[1]
            had = np.asarray(sent_rows, np.int64) * m + np.asarray(sent_cols, np.int64)
            ok &= ~np.isin(r.astype(np.int64) * m + c, had)
        r, c, v, p = r[ok], c[ok], v[ok], p[ok]
        if not len(r):
            return
        # Best first per row; a paper near two liked ones counts once, for the nearer
        # (the lower liked index on a tie, as ``because`` finds it).
        order = np.lexsort((p, -v, r))
        r, c, v, p = r[order], c[order], v[order], p[order]
        _, first = np.unique(r.astype(np.int64) * score.shape[1] + c, return_index=True)
        first.sort()
        r, c, v, p = r[first], c[first], v[first], p[first]
        group = np.flatnonzero(np.r_[True, r[1:] != r[:-1]])
        sizes = np.diff(np.r_[group, len(r)])
        pos = np.arange(len(r)) - np.repeat(group, sizes)
        take = pos < need[r]
        r, c, v, p, pos = r[take], c[take], v[take], p[take], pos[take]
        slot = (k - need[r]) + pos
        picks[r, slot] = c
        scores[r, slot] = v
        liked_of[r, slot] = self.liked[p]

    def because(self, key: Any, entry: int) -> int:
        """The liked paper (index into ``votes.entries``) a fill of ``entry`` for
        ``key`` comes from, as ``_fill`` chose it; -1: none reaches the threshold."""
        rows, lp = self._likes([key])
        if not len(rows):
            return -1
        nb = self.neighbours
        best, found = -1.0, -1
        for r in sorted(set(lp.tolist())):
            lo, hi = nb.indptr[r], nb.indptr[r + 1]
            hit = np.flatnonzero(nb.indices[lo:hi] == entry)
            if len(hit) and nb.data[lo + hit[0]] > best:
                best, found = float(nb.data[lo + hit[0]]), int(self.liked[r])
        return found
