"""What votes teach the ranking: learned weights on top of the written profile.

A vote ("more like this" / "less like this") is about one paper. Rocchio's classic
relevance feedback moves a query towards the papers liked and away from those
disliked; here the "query" is the written profile, which stays the base and is never
rewritten. Learned weights are added beside it, in the same sparse matrix:

    learned = up · Σ_liked decay · terms(paper) / n_liked^½ − down · Σ_disliked (same)

* ``terms(paper)`` are the words and two-word phrases of the paper's title and
  keywords that other papers of today use (``[ranking] feedback_terms`` of them, by
  tf·√idf with the abstract counting towards tf, scaled so the best is 1; rhetorical
  title words such as "rethinking" never), analysed like profile terms and so matched
  as the reader's own are (a phrase also by its words apart, for part of the score).
  A phrase taken stands for its words: a paper titled "Fine tuning ..." teaches
  "fine tuning", not "fine" and "tuning" besides (``Learner._take``). Choosing by
  rarity alone picked dataset names and one-off words that lifted unrelated papers
  (measured with ``bench/feedback.py``).
* Bounds: each learned weight lies within ±``feedback_max_weight``; weaker ones than
  ``feedback_min_weight`` are dropped, and at most ``MAX_LEARNED`` per subscriber
  are kept, so a subscriber with a hundred votes costs the engine like one with ten.
* Decay: a vote's weight halves every ``feedback_half_life_days``.
* A learned weight never lands on a term the subscriber wrote (or excluded), nor on
  its words, nor on a term holding it whole ("diffusion model" for a written
  "diffusion", ``Learner._cover``): the written profile decides those, so no vote can
  erase a written topic, and none is shown learned beside the reader's own.
* Learned terms re-order the written profile's matches, moving a paper by at most
  ``feedback_share`` of its written relevance, up or down (``engine.learned_part``):
  one liked paper's title terms with a high BM25 in a weak match could otherwise
  lift it over better ones (measured with ``bench/feedback.py``). Alone they make a
  match only at twice ``min_relevance`` (``engine.LEARNED_MATCH``), counted at that
  share of their own relevance.
* Terms the subscriber removed on the preferences page are not learned again.

Everything here is vectorized per chunk of subscribers (sparse products), because
the engine ranks a million subscribers in one pass.
"""

from __future__ import annotations

import itertools
import math
import re
import threading
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from newsletter.config import RankingConfig
from newsletter.profile import Term
from newsletter.ranking.corpus import Corpus, Feature, RankEntry
from newsletter.ranking.sparse import distinct, sparse
from newsletter.ranking.text import STOPWORDS, analyze_words, stem, words

MAX_LEARNED = 10  # learned terms kept per subscriber (the strongest)
MAX_DF_SHARE = 0.2  # a term in more of today's papers than this says little
NORM_POWER = 0.5  # n votes of one direction weigh n^0.5 times one vote
HEADLINE_ONLY = True  # a paper's terms come from its title and keywords (abstract: tf only)
IDF_POWER = 0.5  # how much rarity in today's papers counts when choosing a paper's terms
_FIELDS = (("title", 3.0), ("keywords", 2.0), ("abstract", 1.0))
_HYPHENS = re.compile(r"[-‐‑–']")  # as in text.py
# Words titles use for rhetoric, not topic ("Rethinking ...", "Go Wider Instead of Deeper"):
# learned from one paper they lift unrelated ones, so they are never learned.
TITLE_FILLER = frozenset(stem(w) for w in """
    adding all any are beyond better can do does every fast faster general generic go
    how improve improved improving instead is it just less make makes more much need
    new novel one revisit revisited revisiting rethink rethinking simple simpler study
    than toward towards two understand understanding unified very what when where which
    why wider deeper you your approach approaches method methods framework frameworks
    effective efficient efficiently via all-in-one large-scale scale scaling technical
    report again meets meet beyond inside matter matters really
    """.split())  # noqa: SIM905 - a word list reads better as words


class RankerLike(Protocol):
    """What the learner needs of the engine's ranker: the papers, the settings, and
    feature ids (made on first use), so learned weights land in the ranker's matrix.
    The engine makes the learner; the learner knows the ranker only through this."""

    @property
    def corpus(self) -> Corpus: ...

    @property
    def cfg(self) -> RankingConfig: ...

    @property
    def features(self) -> list[Feature]: ...

    def feature_of(self, term: Term | Feature) -> int: ...


@dataclass
class Votes:
    """Every vote that counts for one ranking, as arrays sorted by subscriber key.

    ``papers`` index ``entries`` (the voted papers' text, which need not be among
    the papers being ranked); ``mutes`` are the learned terms (stem keys, see
    ``term_key``) each subscriber removed.
    """

    keys: np.ndarray  # int64, sorted
    papers: np.ndarray  # int32
    signs: np.ndarray  # int8: +1 more like this, -1 less
    ages: np.ndarray  # float32 days since the vote
    entries: list[RankEntry]
    mutes: dict[int, frozenset[str]] = field(default_factory=dict)

    @classmethod
    def of(cls, rows: Iterable[tuple[int, int, int, float]], entries: list[RankEntry],
           mutes: dict[int, frozenset[str]] | None = None) -> Votes:
        """From (subscriber key, paper index, sign, age in days) rows, any order."""
        data = list(rows)
        return cls.arrays(np.array([r[0] for r in data], dtype=np.int64),
                          np.array([r[1] for r in data], dtype=np.int32),
                          np.array([r[2] for r in data], dtype=np.int8),
                          np.array([r[3] for r in data], dtype=np.float32), entries, mutes)

    @classmethod
    def arrays(cls, keys: np.ndarray, papers: np.ndarray, signs: np.ndarray,
               ages: np.ndarray, entries: list[RankEntry],
               mutes: dict[int, frozenset[str]] | None = None) -> Votes:
        """``of`` from columns already made (``store.votes.VoteHistory``): one vote a
        position, any order; a subscriber's votes keep their order."""
        order = np.argsort(keys, kind="stable")
        return cls(np.asarray(keys, np.int64)[order], np.asarray(papers, np.int32)[order],
                   np.asarray(signs, np.int8)[order], np.asarray(ages, np.float32)[order],
                   entries, dict(mutes or {}))

    def rows_for(self, keys: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
        """(row in ``keys``, vote index) for every vote of those subscribers."""
        try:
            wanted = np.asarray(keys, dtype=np.int64)
        except (TypeError, ValueError):  # keys that are not subscriber ids: no votes
            return np.zeros(0, np.intp), np.zeros(0, np.intp)
        lo = np.searchsorted(self.keys, wanted, "left")
        hi = np.searchsorted(self.keys, wanted, "right")
        counts = hi - lo
        total = int(counts.sum())
        rows = np.repeat(np.arange(len(wanted)), counts)
        starts = np.repeat(lo - np.cumsum(counts) + counts, counts)
        return rows, starts + np.arange(total)


@dataclass(frozen=True, slots=True)
class Learned:
    """One learned term of one subscriber."""

    fid: int
    term: str  # as the papers wrote it
    key: str  # stems, what removing it on the preferences page stores
    weight: float
    liked: int  # liked papers it came from
    disliked: int


def term_key(feature: Feature) -> str:
    return " ".join(feature.variants[0]) if feature.variants else ""


# Where a stop word stood: no two-word term is learned across it ("Models for Long
# Video" taught "Models Long", a phrase no paper has).
GAP = ("", "")


def _tokens(text: str, ranker: RankerLike,
            known: dict[str, list[tuple[str, str]]] | None = None) -> list[tuple[str, str]]:
    """(stem, surface word) per content word, in order, with ``GAP`` where stop words
    stood between two of them: the analysis profile terms and papers get
    (``analyze_words`` splits hyphens the same way as ``_HYPHENS`` here).
    ``known``: each word's tokens, kept across papers (a word is analysed alone, so
    the same word gives the same tokens; most words of a paper occur in many others)."""
    if known is None:
        known = {}
    acronyms = ranker.corpus.acronyms
    out: list[tuple[str, str]] = []
    for w in words(text):
        toks = known.get(w)
        if toks is None:
            parts = [p for p in _HYPHENS.split(w) if p]
            toks = known[w] = [GAP if raw in STOPWORDS else (st, part) for (st, raw), part
                               in zip(analyze_words([w], acronyms), parts, strict=True)]
        for t in toks:
            if t is not GAP or (out and out[-1] is not GAP):
                out.append(t)
    return out


Gram = tuple[str, ...]  # the stems of a one- or two-word term


def _field_text(entry: RankEntry, fname: str) -> str:
    if fname == "title":
        return entry.title
    return " , ".join(entry.keywords) if fname == "keywords" else entry.abstract


def _learnable_grams(toks: list[tuple[str, str]]
                     ) -> Iterator[tuple[Gram, list[tuple[str, str]]]]:
    """Each one- and two-word gram of ``toks`` (stem, surface word) that may be learned,
    with its tokens: single words of three letters or more and not a number, and no
    rhetorical title word (``TITLE_FILLER``) in either size."""
    for size in (1, 2):
        for i in range(len(toks) - size + 1):
            part = toks[i : i + size]
            gram = tuple(t for t, _ in part)
            if size == 1 and (len(gram[0]) < 3 or gram[0].isdigit()):
                continue
            if "" in gram or any(g in TITLE_FILLER for g in gram):  # (a GAP)
                continue
            yield gram, part


class Learner:
    """Votes → learned weights per chunk of subscribers, for one ranker (one day's
    papers): each voted paper's terms are found once, as feature ids of the ranker."""

    def __init__(self, ranker: RankerLike, votes: Votes) -> None:
        self.ranker = ranker
        self.votes = votes
        cfg = ranker.cfg
        self.labels: dict[int, str] = {}
        # per voted paper id, each field's content-word stems (what ``reader.py`` reuses)
        self.stems: dict[str, dict[str, list[str]]] = {}
        self.keys: dict[int, str] = {}
        self._grams: dict[int, tuple[str, ...]] = {}  # learned feature → its stems
        self._covers: dict[int, list[int]] = {}  # written feature → learned ones it covers
        self._by_word: dict[str, list[int]] = {}  # stem → learned features using it
        self._cover_m: sparse.csr_matrix | None = None  # written × learned, "covers"
        # The caches above and below are built as rankings need them, and a ranking
        # scores chunks in threads (``Ranker.rank``) while its caller may explain
        # picks: ``matrix`` and ``learned`` hold this lock.
        self._lock = threading.Lock()
        rows: list[int] = []
        cols: list[int] = []
        vals: list[float] = []
        # the papers voted on: marked in a mask (np.unique sorts all ten million votes)
        voted = np.zeros(len(votes.entries), dtype=bool)
        voted[votes.papers] = True
        used = np.flatnonzero(voted)
        known: dict[str, list[tuple[str, str]]] = {}  # word → its tokens, while reading
        having: dict[Gram, frozenset[int]] = {}  # gram → today's papers with it, meanwhile
        for p in used.tolist():
            for fid, weight in self._paper_terms(votes.entries[p], cfg.feedback_terms,
                                                 known, having):
                rows.append(p)
                cols.append(fid)
                vals.append(weight)
        self._p_rows = np.asarray(rows, dtype=np.int32)
        self._p_cols = np.asarray(cols, dtype=np.int32)
        self._p_vals = np.asarray(vals, dtype=np.float32)
        self._p: sparse.csr_matrix | None = None
        decay = np.power(np.float32(0.5), votes.ages / np.float32(cfg.feedback_half_life_days))
        self._vote_weight = (votes.signs.astype(np.float32) * decay).astype(np.float32)
        self._mute_ids: dict[str, int] = {v: k for k, v in self.keys.items()}

    def _paper_terms(self, entry: RankEntry, limit: int,
                     known: dict[str, list[tuple[str, str]]] | None = None,
                     having: dict[Gram, frozenset[int]] | None = None,
                     ) -> list[tuple[int, float]]:
        """The paper's most distinctive terms that today's papers use, as (feature id,
        weight in (0, 1]). ``known``: words' tokens (``_tokens``), ``having``: today's
        papers with a gram (``_rare_grams``), both kept across papers."""
        counts, surface, headline = self._gram_counts(entry, {} if known is None else known)
        return self._take(self._rare_grams(entry, counts, headline,
                                           {} if having is None else having), surface, limit)

    def _gram_counts(self, entry: RankEntry, known: dict[str, list[tuple[str, str]]]
                     ) -> tuple[dict[Gram, float], dict[Gram, str], set[Gram]]:
        """The paper's learnable grams: their counts weighted by field (``_FIELDS``),
        the first surface form of each, and those of the title and keywords. The
        abstract only adds to grams the title or keywords have (``HEADLINE_ONLY``):
        its own words would make every paper about its methods section."""
        counts: dict[Gram, float] = {}
        surface: dict[Gram, str] = {}
        headline: set[Gram] = set()
        stems = self.stems.setdefault(entry.id, {})
        for fname, weight in _FIELDS:
            abstract = fname == "abstract"
            toks = _tokens(_field_text(entry, fname), self.ranker, known)
            stems[fname] = [st for st, _ in toks if st]
            if HEADLINE_ONLY and abstract:
                # Only counts for the title's and keywords' grams (which passed the
                # filters and have their surface form), so no gram is made to be
                # dropped: the abstract's hundreds of grams are only looked up.
                st = [t for t, _ in toks]  # (with the gaps: no pair across a stop word)
                for gram in itertools.chain(zip(st), zip(st, st[1:], strict=False)):
                    if gram in headline:
                        counts[gram] += weight
                continue
            for gram, part in _learnable_grams(toks):
                if HEADLINE_ONLY and abstract and gram not in headline:
                    continue
                counts[gram] = counts.get(gram, 0.0) + weight
                if not abstract:
                    headline.add(gram)
                surface.setdefault(gram, " ".join(w for _, w in part))
        return counts, surface, headline

    def _rare_grams(self, entry: RankEntry, counts: dict[Gram, float], headline: set[Gram],
                    having: dict[Gram, frozenset[int]]) -> list[tuple[float, Gram]]:
        """(score, gram), best first, for the grams some but few other papers of today
        use (at most ``MAX_DF_SHARE`` of them, or two): a term no other paper has cannot
        lift one, and one most have says nothing. Score: log count × idf^IDF_POWER."""
        corpus = self.ranker.corpus
        n = max(len(corpus.entries), 1)
        itself = corpus.position.get(entry.id)
        scored: list[tuple[float, Gram]] = []
        for gram, count in counts.items():
            if HEADLINE_ONLY and gram not in headline:
                continue
            # Today's papers with the gram, found once a gram: the voted papers share
            # most of their title words, and gathering them again for each paper was a
            # quarter of learning from a year of votes.
            found = having.get(gram)
            if found is None:
                found = having[gram] = frozenset().union(
                    *[corpus.index[fname][gram] for fname, _ in _FIELDS])
            # other papers with the term: the paper itself is never shown
            df = len(found) - (itself in found)
            if not df or df > max(2, MAX_DF_SHARE * n):
                continue
            scored.append((math.log1p(count) * corpus._idf(df) ** IDF_POWER, gram))
        scored.sort(key=lambda x: (-x[0], x[1]))
        return scored

    def _take(self, scored: list[tuple[float, Gram]], surface: dict[Gram, str],
              limit: int) -> list[tuple[int, float]]:
        """The first ``limit`` distinct features of ``scored`` as (feature id, score
        scaled so the best taken is 1), each remembered with its label (``_remember``).

        Every term is analysed like a written one, so it matches as the ranker matches
        the reader's own: a word with its acronym forms, a two-word phrase as the
        phrase, its joined and acronym forms, and its words apart for part of the score
        where they say enough (``corpus.WORDS_WEIGHT``). A phrase taken therefore
        stands for its own words, which are not taken beside it (and give way if they
        came first): "Fine tuning" taught "Fine" and "tuning" too, three terms for one
        thing the reader liked, and alone those words lift papers the phrase is not
        about ("fine-grained", any hyperparameter tuning). Measured against the
        phrase alone (only where the paper has it) without its words, which lost the
        one relevant paper a liked paper's "Non-IID" found through "IID":
        ``bench/feedback.py``."""
        chosen: list[tuple[float, Gram, int]] = []
        taken: set[int] = set()
        in_phrases: set[str] = set()  # the words of the phrases chosen
        for score, gram in scored:
            if len(chosen) >= limit:
                break
            if len(gram) == 1 and gram[0] in in_phrases:
                continue
            fid = self.ranker.feature_of(Term(surface[gram]))
            if fid in taken:
                continue
            taken.add(fid)
            if len(gram) == 2:
                in_phrases.update(gram)
                chosen = [c for c in chosen if len(c[1]) != 1 or c[1][0] not in gram]
            chosen.append((score, gram, fid))
        top = chosen[0][0] if chosen else 1.0
        out: list[tuple[int, float]] = []
        for score, gram, fid in chosen:
            self._remember(fid, gram, surface[gram])
            out.append((fid, score / top))
        return out

    def _remember(self, fid: int, gram: Gram, label: str) -> None:
        """A learned feature's label and removal key (the first paper that taught it
        names it), and its stems, which ``_cover`` matches written terms against."""
        self.labels.setdefault(fid, label)
        # A phrase's key is its stems (a written phrase's feature lists its joined form
        # first), as removed phrases were stored when learned phrases had no other form.
        self.keys.setdefault(fid, " ".join(gram) if len(gram) > 1
                             else term_key(self.ranker.features[fid]))
        if fid not in self._grams:
            self._grams[fid] = gram
            for w in gram:
                self._by_word.setdefault(w, []).append(fid)

    def _cover_matrix(self, written: sparse.csr_matrix) -> sparse.csr_matrix:
        """The written × learned "covers" matrix for ``written``'s features (each
        written term's own forms and its words: "residual connections" covers
        "residual" and "connections"), extended for the written terms not seen yet.
        Called with the lock held: it reads and extends the caches."""
        nf = written.shape[1]
        cover = self._cover_m
        if cover is not None and cover.shape[0] != nf:
            cover = None
        cols = distinct(written.indices)
        fresh = [f for f in cols.tolist() if f not in self._covers]
        for fid in fresh:
            self._covers[fid] = self._cover(self.ranker.features[fid])
        if fresh or cover is None:
            pairs = [(w, c) for w, covered in self._covers.items() if w < nf for c in covered]
            a = [w for w, _ in pairs]
            b = [c for _, c in pairs]
            cover = self._cover_m = sparse.csr_matrix(
                (np.ones(len(pairs), np.float32), (a, b)), shape=(nf, nf))
        return cover

    def _cover(self, feature: Feature) -> list[int]:
        """The learned features a written one covers: those made only of its words
        ("residual connections" covers "residual"), and those that hold one of its
        forms whole ("diffusion" covers "diffusion model"): the written term already
        matches every paper with the learned one there (stems, as the ranker matches
        them), so a learned weight would only count that topic again, and the
        preferences page showed "more on Diffusion Model" beside the reader's own
        "diffusion". An exact phrase or an author is matched on other text (raw words,
        the author list), so only its words count."""
        words_ = {w for v in feature.variants for w in v} | set(feature.parts)
        near = {fid for w in words_ for fid in self._by_word.get(w, ())}
        forms = feature.variants if feature.kind in ("topic", "exclude") else ()
        return [fid for fid in near if set(self._grams[fid]) <= words_
                or any(_holds(self._grams[fid], v) for v in forms)]

    def paper_fids(self, entry_id: str) -> list[int]:
        """The feature ids learned from one voted paper."""
        for p, e in enumerate(self.votes.entries):
            if e.id == entry_id:
                return self._p_cols[self._p_rows == p].tolist()
        return []

    def _paper_matrix(self, nf: int) -> sparse.csr_matrix:
        p = self._p
        if p is None or p.shape[1] != nf:
            p = self._p = sparse.csr_matrix((self._p_vals, (self._p_rows, self._p_cols)),
                                            shape=(len(self.votes.entries), nf))
        return p

    def matrix(self, keys: Sequence[Any], written: sparse.csr_matrix,
               at: tuple[np.ndarray, np.ndarray] | None = None) -> sparse.csr_matrix:
        """Learned weights (len(keys) × features), never on a ``written`` term."""
        with self._lock:  # only the caches: the products run outside it
            p, cover = self._paper_matrix(written.shape[1]), self._cover_matrix(written)
        return self._matrix(keys, written, at, p, cover)

    def _matrix(self, keys: Sequence[Any], written: sparse.csr_matrix,
                at: tuple[np.ndarray, np.ndarray] | None, p: sparse.csr_matrix,
                cover: sparse.csr_matrix) -> sparse.csr_matrix:
        """``matrix``, given the voted papers' terms ``p`` and the covers matrix read
        under the lock: the rest reads nothing shared that changes, so two scoring
        threads compute their chunks' weights at once (scipy's sparse products let go
        of the GIL; under the lock, one thread waited for the other's)."""
        cfg = self.ranker.cfg
        n, nf = written.shape
        rows, idx = self.votes.rows_for(keys) if at is None else at
        if not len(rows):
            return sparse.csr_matrix((n, nf), dtype=np.float32)
        weight = self._vote_weight[idx]
        up = weight > 0
        n_up = np.bincount(rows[up], minlength=n).astype(np.float32)
        n_down = np.bincount(rows[~up], minlength=n).astype(np.float32)
        scale = np.where(up, cfg.feedback_up / np.maximum(n_up[rows], 1) ** NORM_POWER,
                         cfg.feedback_down / np.maximum(n_down[rows], 1) ** NORM_POWER)
        v = sparse.csr_matrix(((weight * scale).astype(np.float32),
                               (rows, self.votes.papers[idx])),
                              shape=(n, len(self.votes.entries)))
        learned = (v @ p).tocsr()
        covered = written + (written > 0).astype(np.float32) @ cover if cover.nnz else written
        learned = learned - learned.multiply(covered > 0)
        mutes = self.votes.mutes
        if mutes:
            mr: list[int] = []
            mc: list[int] = []
            for r, key in enumerate(keys):
                for term in mutes.get(key, ()):
                    fid = self._mute_ids.get(term)
                    if fid is not None:
                        mr.append(r)
                        mc.append(fid)
            if mr:
                mask = sparse.csr_matrix((np.ones(len(mr), np.float32), (mr, mc)), shape=(n, nf))
                learned = learned - learned.multiply(mask > 0)
        learned = learned.astype(np.float32, copy=False)
        np.clip(learned.data, -cfg.feedback_max_weight, cfg.feedback_max_weight,
                out=learned.data)
        learned.data[np.abs(learned.data) < max(cfg.feedback_min_weight, 1e-6)] = 0
        learned.eliminate_zeros()
        return _strongest(learned, MAX_LEARNED)

    def learned(self, key: Any, written_fids: set[int]) -> list[Learned]:
        """One subscriber's learned terms, strongest first, with the papers behind them."""
        with self._lock:
            return self._learned(key, written_fids)

    def _learned(self, key: Any, written_fids: set[int]) -> list[Learned]:
        nf = len(self.ranker.features)
        cols = sorted(f for f in written_fids if f < nf)
        written = sparse.csr_matrix((np.ones(len(cols), np.float32),
                                     ([0] * len(cols), cols)), shape=(1, nf))
        row = self._matrix([key], written, None, self._paper_matrix(nf),
                           self._cover_matrix(written))  # (the lock is held)
        if not row.nnz:
            return []
        _, idx = self.votes.rows_for([key])
        p = self._paper_matrix(nf)
        liked: Counter[int] = Counter()
        disliked: Counter[int] = Counter()
        for i in idx.tolist():
            paper = int(self.votes.papers[i])
            target = liked if self.votes.signs[i] > 0 else disliked
            target.update(p.indices[p.indptr[paper] : p.indptr[paper + 1]].tolist())
        out = [Learned(int(f), self.labels.get(int(f), ""), self.keys.get(int(f), ""),
                       round(float(w), 4), liked[int(f)], disliked[int(f)])
               for f, w in zip(row.indices, row.data, strict=True)]
        out.sort(key=lambda x: (-abs(x.weight), x.term))
        return out


def _holds(gram: Gram, form: tuple[str, ...]) -> bool:
    """Whether ``form`` occurs in ``gram``, its words side by side in order."""
    n = len(form)
    return any(gram[i : i + n] == form for i in range(len(gram) - n + 1))


def _strongest(m: sparse.csr_matrix, k: int) -> sparse.csr_matrix:
    """Keep the ``k`` largest |weights| per row (ties may keep a few more): the rows
    are padded to a small dense block and cut with one ``np.partition``."""
    counts = np.diff(m.indptr)
    if not len(counts) or counts.max() <= k:
        return m
    rows = np.repeat(np.arange(m.shape[0]), counts)
    pos = np.arange(m.nnz) - np.repeat(m.indptr[:-1], counts)
    block = np.full((m.shape[0], int(counts.max())), -1.0, dtype=np.float32)
    magnitude = np.abs(m.data)
    block[rows, pos] = magnitude
    kth = np.partition(block, block.shape[1] - k, axis=1)[:, block.shape[1] - k]
    m.data[magnitude < kth[rows]] = 0
    m.eliminate_zeros()
    return m
