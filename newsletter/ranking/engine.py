"""Profiles → scores → picks with explanations, for every subscriber in one pass.

The engine is two sparse/dense matrix products per chunk of subscribers:

    relevance  = S (subscribers × features, term weights)  @  M (features × entries, BM25F)
    excluded   = X (subscribers × features, "-term" flags) @  M  > 0

A *feature* is one distinct profile term after analysis (stems, acronym
variants), shared by every subscriber who wrote it, so its BM25F row over the
day's entries is computed once however many people follow "diffusion". Top-k
per row uses ``argpartition``; no Python loop runs over subscriber × entry.
Subscribers stream through in chunks, which bounds memory at any list size.

Scoring: a paper is a *match* when its relevance reaches ``min_relevance``;
matches are ordered by ``relevance + popularity (log upvotes) + recency``.
Profiles that match nothing get a labelled "trending today" section (or
nothing), never weak matches dressed up as relevant.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import re
import sys
import threading
from collections.abc import Generator, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from newsletter.collector import fewer_collections
from newsletter.config import RankingConfig
from newsletter.errors import ProfileError
from newsletter.profile import _PLAIN_SPLIT, MAX_TERMS, Term, profile_terms
from newsletter.ranking.corpus import Analyzer, Corpus, Feature, RankEntry
from newsletter.ranking.feedback import Learned, Learner, Votes
from newsletter.ranking.reader import Reader
from newsletter.ranking.sparse import distinct, sparse
from newsletter.ranking.text import stems, words

PART_TABLE = 500_000  # distinct raw profile parts remembered per ranker
SWITCH_INTERVAL = 0.0005  # seconds, while ranking in threads (see ``Ranker.rank``)
SCORING_THREADS = 3  # chunks scored at once
LEARNED_MATCH = 2.0  # learned relevance that makes a match alone, × min_relevance
# A pick whose relevance is under this × min_relevance says "related:", not "matched:"
# (bench/quality.py's judged set: none of the 15 picks under it was judged relevant,
# 78% of those above it were).
STRONG_MATCH = 2.0
WORD_LABELS = 65_536  # terms whose words' stems are kept for "(via words)" labels

# The analysed papers and their features live in ``corpus``; importers of the engine
# find them here too.
__all__ = ["Analyzer", "Chunk", "Corpus", "Explanation", "Feature", "LearnedHit",
           "RankEntry", "Ranker", "TermHit", "because_label", "learned_part", "section_of"]

# what ``Ranker._label`` adds to a term matched through a field's related terms
_VIA = re.compile(r" \(via [^()]*\)\Z")


def section_of(label: str) -> str:
    """The profile term a matched label names, which an email's section is headed by:
    "robotics (via grasping)" is "robotics", as "robotics (via manipulation)" is; papers
    matched through different related words are one section, not one each."""
    return _VIA.sub("", label)


class TermHit(NamedTuple):
    """One profile term as the engine ranks it. A ``NamedTuple``: made once per distinct
    term and read per subscriber in the hot loop, where a tuple's speed matters."""

    fid: int  # the feature id (a row of M)
    weight: float
    exclude: bool  # a "-term": papers matching it are never picked
    text: str  # as the subscriber wrote it, for explanations


@dataclass
class Chunk:
    """Ranked picks for a chunk of subscribers (row-aligned arrays)."""

    keys: list[Any]
    picks: np.ndarray  # int32 [n, k] entry indices, -1 = none
    scores: np.ndarray  # float32 [n, k]
    trending: np.ndarray  # bool [n]: the picks are the trending section, not matches
    # int32 [n, k]: per slot, the liked paper (index into the votes' entries) a "because
    # you liked" fill came from; -1 = a keyword pick (None: nobody's votes counted)
    liked: np.ndarray | None = None


class Ranker:
    def __init__(self, corpus: Corpus, cfg: RankingConfig, votes: Votes | None = None) -> None:
        self.corpus = corpus
        self.cfg = cfg
        self.analyzer = Analyzer(corpus.acronyms, corpus.related)
        self.feature_ids: dict[Feature, int] = {}
        self._features: list[Feature] = []
        self._m = np.zeros((64, len(corpus.entries)), dtype=np.float32)
        self._term_ids: dict[Term, TermHit] = {}
        # Raw profile parts as codes: a part's code (-1: no term), each code's TermHit
        # (one per distinct term, as ``_term_ids``), and the codes' columns as arrays
        # (``_written`` gathers a whole chunk's terms from them).
        self._part_codes: dict[str, int] = {}
        self._code_of_hit: dict[TermHit, int] = {}
        self._code_hits: list[TermHit] = []
        self._code_columns: tuple[np.ndarray, np.ndarray, np.ndarray] = (
            np.zeros(0, np.int32), np.zeros(0, np.float32), np.zeros(0, np.bool_))
        self._m_csr: sparse.csr_matrix | None = None
        # While ``_rows_together`` runs: the thread that defers new features' rows and
        # the features waiting for them (computed at once by ``Corpus.rows``).
        self._deferring: int | None = None
        self._waiting: list[int] = []
        self._rows_lock = threading.RLock()  # held by the block and by explaining
        # each paper's popularity and recency parts as explanations show them (the
        # same float32 products, rounded once a paper instead of once a subscriber)
        self._shown_parts: dict[int, tuple[float, float]] = {}
        self._written_words: dict[str, list[tuple[str, tuple[str, ...]]]] = {}  # words, stems
        self._word_labels: dict[tuple[int, int, str], str] = {}  # (``_words_label``)
        self._with_phrase: dict[int, frozenset[int]] = {}  # by feature id (``_words_label``)
        self.learner = None
        self.reader: Reader | None = None
        if votes is not None and len(votes.keys):
            with self._rows_together():  # the voted papers' terms, by the thousand
                self.learner = Learner(self, votes)
            if cfg.reader_fills or cfg.reader_reorder > 0:
                self.reader = Reader(corpus, cfg, votes, self.learner.stems)

    def _terms_of(self, text: str) -> list[TermHit]:
        """A ``TermHit`` per term of the one parser's output.
        Two terms that analyse to the same feature ("diffusion, diffusions") count once,
        with the larger weight.

        The hot path at a million subscribers: a profile without quotes is split with
        the parser's own separator and each raw part is looked up in a per-ranker table
        filled from the parser (``profile_terms`` of that part alone), so each distinct
        part is parsed once per ranker, not once per subscriber. Quotes, more terms than
        the parser allows, or a repeated feature go through the parser whole."""
        parts = None if '"' in text else _PLAIN_SPLIT.split(text)
        if parts is None or len(parts) > MAX_TERMS:
            return self._dedupe([self._term_hit(t) for t in profile_terms(text)])
        table, hits = self._part_codes, self._code_hits
        found: list[TermHit] = []
        for raw in parts:
            code = table.get(raw, -2)
            if code == -2:
                code = self._part_code(raw)
            if code >= 0:
                found.append(hits[code])
        if len(found) > 1 and len({h[0] for h in found}) < len(found):
            # A repeat ("diffusion, diffusions^2"): the parser's own rule picks which
            # written form names it, so the whole profile goes through the parser.
            return self._dedupe([self._term_hit(t) for t in profile_terms(text)])
        return found

    def _m_sparse(self, nf: int) -> sparse.csr_matrix:
        """The first ``nf`` feature rows of M as CSR (a feature occurs in few papers),
        rebuilt only when features were added since."""
        m = self._m_csr  # read once: scoring threads may call this at once
        if m is None or m.shape[0] != nf:
            m = self._m_csr = sparse.csr_matrix(self._m[:nf])
        return m

    def _term_hit(self, t: Term) -> TermHit:
        ids = self._term_ids
        hit = ids.get(t)
        if hit is None:
            hit = ids[t] = TermHit(self._fid(t), t.weight, t.exclude, t.text)
        return hit

    @staticmethod
    def _dedupe(found: list[TermHit]
                ) -> list[TermHit]:
        if len(found) > 1 and len({h.fid for h in found}) < len(found):
            best: dict[tuple[int, bool], tuple[float, str]] = {}
            for f, w, x, name in found:  # a repeated term keeps its largest weight
                if (f, x) not in best or best[(f, x)][0] < w:
                    best[(f, x)] = (w, name)
            found = [TermHit(f, w, x, name) for (f, x), (w, name) in best.items()]
        return found

    def explain_many(self, text: str, entry_indices: Sequence[int],
                     key: Any = None) -> list[Explanation]:
        """``explain`` for several picks of one subscriber in one array operation;
        with ``key``, what that subscriber's votes taught counts too. Never while
        another thread parses a chunk (``_rows_together``): a term it has just seen
        has its feature already and its row only when the chunk is parsed."""
        with self._rows_lock:
            return self._explain_many(text, entry_indices, key)

    def _explain_many(self, text: str, entry_indices: Sequence[int],
                      key: Any) -> list[Explanation]:
        written = self._terms_of(text or "")
        terms = [t for t in written if not t.exclude]
        learned: list[Learned] = []
        if self.learner is not None and key is not None:
            learned = self.learner.learned(key, {t.fid for t in written})
        c, cfg = self.corpus, self.cfg
        idx = np.asarray(entry_indices, dtype=np.intp)
        if terms:
            fids = np.array([t.fid for t in terms], dtype=np.intp)
            weights = np.array([t.weight for t in terms], dtype=np.float32)
            contrib = self._m[fids[:, None], idx] * weights[:, None]
        else:
            contrib = np.zeros((0, len(idx)), dtype=np.float32)
        out = []
        columns = contrib.T.tolist()  # tiny arrays: plain Python beats numpy calls here
        feats = self._features
        parts = self._shown_parts
        # per term: its feature and its text as written
        named = [(feats[t.fid], t.text, t.fid) for t in terms]
        min_relevance, weight_relevance = cfg.min_relevance, cfg.weight_relevance
        for e, values in zip(idx.tolist(), columns, strict=True):
            # highest first; equal values keep the profile's order (a stable sort)
            hits = sorted([h for h, v in enumerate(values) if v > 0],
                          key=values.__getitem__, reverse=True)
            features = [named[h][0] for h in hits]
            matched = []
            for h in hits:
                feature, text, fid = named[h]
                label = text
                if feature.related:  # may name the related term, and add its feature
                    label = self._label(text, feature, e, features)
                if label == text and feature.parts:  # a phrase matched by its words apart
                    label = self._words_label(text, fid, feature, e)  # says which
                matched.append((label, round(values[h], 3)))
            own = sum(values)
            lifts: list[tuple[Learned, float]] = []
            also: list[LearnedHit] = []
            for item in learned:
                value = float(item.weight * self._m[item.fid, e])
                if value:
                    lifts.append((item, value))
                    if value > 0:
                        features.append(feats[item.fid])
            extra = sum(v for _, v in lifts)
            counted = learned_part(own, extra, cfg)
            because = ""
            if self.reader is not None and key is not None and own < min_relevance:
                # Not a written match: a "because you liked" fill, if a liked paper is
                # near enough (the one ``Reader`` filled it for); a match learned terms
                # made alone is named so too when a liked paper is that near.
                liked = self.reader.because(key, e)
                if liked >= 0:
                    because = self.reader.votes.entries[liked].title
                    matched = []
            if lifts:
                ratio = counted / extra if extra else 0.0  # each term's part of what counted
                # A learned phrase earns from its words apart as a written one does, and
                # says so the same way ("Non IID (via IID)").
                also = sorted((LearnedHit(self._words_label(item.term, item.fid,
                                                            feats[item.fid], e)
                                          if feats[item.fid].parts else item.term,
                                          round(v * ratio, 3), item.liked, item.disliked)
                               for item, v in lifts),
                              key=lambda h: -h.value)
            shown = parts.get(e)
            if shown is None:
                shown = parts[e] = (round(float(cfg.weight_popularity * c.popularity[e]), 4),
                                    round(float(cfg.weight_recency * c.recency[e]), 4))
            relevance = weight_relevance * (own + counted)
            out.append(Explanation(
                matched=matched,
                relevance=round(relevance, 4),
                popularity=shown[0],
                recency=shown[1],
                features=features,
                learned=also,
                strong=bool(because) or relevance >= STRONG_MATCH * min_relevance,
                because=because,
            ))
        return out

    def _label(self, text: str, feature: Feature, entry: int, features: list[Feature]) -> str:
        """A matched term as shown: with the related term that matched, if that was it
        ("medical (via chest X-ray)"); that term is highlighted too."""
        if not feature.related:
            return text
        hits = self.corpus.related_hits(entry, feature.related)
        if not hits:
            return text
        features.append(Feature("topic", tuple(hits)))
        labels = self.analyzer.related_labels
        return f"{text} (via {', '.join(labels.get(h, ' '.join(h)) for h in hits[:3])})"

    def _words_label(self, text: str, fid: int, feature: Feature, entry: int) -> str:
        """A topic of several words as shown: as written when the paper has the phrase,
        else with the words it has ("video diffusion (via video)"): its words earn part
        of a phrase's score wherever they stand (``corpus.WORDS_WEIGHT``), and saying
        "matched: video diffusion" of a paper about video alone claimed more than it
        has. The words are shown as the profile wrote them. Kept by (feature id, paper,
        text): many subscribers share a term and a pick, and a feature id hashes at
        once where the feature (nested tuples) does not."""
        key = (fid, entry, text)
        found = self._word_labels.get(key)
        if found is not None:
            return found
        c = self.corpus
        phrase = self._with_phrase.get(fid)
        if phrase is None:
            phrase = self._with_phrase[fid] = c.with_phrase(feature)
        if entry in phrase:
            found = text
        else:
            written = self._written_words.get(text)
            if written is None:
                if len(self._written_words) >= WORD_LABELS:
                    self._written_words.clear()
                written = self._written_words[text] = [
                    (w, st) for w in dict.fromkeys(words(text)) if (st := stems(w, c.acronyms))]
            has = [w for w, st in written if all(entry in c.with_word(x) for x in st)]
            found = f"{text} (via {', '.join(has)})" if has else text
        if len(self._word_labels) >= WORD_LABELS:
            self._word_labels.clear()
        self._word_labels[key] = found
        return found

    def feature_of(self, term: Term | Feature) -> int:
        """The feature id of a term or feature (made on first use), e.g. one learned
        from votes."""
        return self._fid(term)

    @property
    def features(self) -> list[Feature]:
        return self._features

    @property
    def feature_rows(self) -> np.ndarray:
        """Feature × entry relevance (BM25F), one row per feature id."""
        return self._m[: len(self._features)]

    def _fid(self, term: Term | Feature) -> int:
        feat = term if isinstance(term, Feature) else self.analyzer.feature(term)
        fid = self.feature_ids.get(feat)
        if fid is None:
            fid = self.feature_ids[feat] = len(self.feature_ids)
            self._features.append(feat)
            if fid >= self._m.shape[0]:
                grown = np.zeros((self._m.shape[0] * 2, self._m.shape[1]), dtype=np.float32)
                grown[: self._m.shape[0]] = self._m
                self._m = grown
            if self._deferring == threading.get_ident():
                self._waiting.append(fid)
            else:
                self._m[fid] = self.corpus.row(feat)
        return fid

    @contextlib.contextmanager
    def _rows_together(self) -> Iterator[None]:
        """New features' rows computed together when the block ends (``Corpus.rows``:
        a chunk's new terms, or a learner's, by the thousand), not one by one in
        ``_fid``: the same rows. Only this thread defers, and it holds ``_rows_lock``
        meanwhile, which explaining takes too: a feature made in the block has its id
        (and its parts' codes) at once but its row only at the end, so no other thread
        may read it before (the scoring threads read only rows of chunks parsed before).
        The rows are written however the block ends, so a feature is never left
        without its row."""
        if self._deferring == threading.get_ident():  # inside: the outer block writes them
            yield
            return
        with self._rows_lock:
            self._deferring = threading.get_ident()
            try:
                yield
            finally:
                self._deferring = None
                waiting, self._waiting = self._waiting, []
                if waiting:
                    self._m[waiting] = self.corpus.rows([self._features[f]
                                                         for f in waiting])

    def rank(
        self,
        subscribers: Iterable[tuple[Any, str]],
        *,
        sent: Mapping[Any, Iterable[int]] | None = None,
        k: int | None = None,
        chunk_size: int = 4096,
    ) -> Iterator[Chunk]:
        """Yield ranked chunks for ``(key, profile text)`` pairs, in input order.

        ``sent`` maps a key to entry indices that subscriber already had.
        A profile that fails to parse raises ``ProfileError`` naming the key.
        """
        sent, k = sent or {}, k or self.cfg.max_papers
        batches = _batches(subscribers, chunk_size)
        batch = next(batches, None)
        if batch is None:
            return
        written = self._written(batch)
        following = next(batches, None)
        if following is None:  # one chunk: nothing to overlap
            yield self._scored(batch, written, sent, k)
            return
        # Two chunks or more (``_overlapped``). The collector is kept out of the way
        # (``fewer_collections``) for each step: a million profiles' parts and columns
        # triggered collections that walked everything the ranking keeps, 1.9 s of
        # 14.8 s. Never across a yield: a caller holding a half-read ranking (in a
        # reference cycle, say) must not leave the process's collector frozen.
        steps = self._overlapped(batch, written, following, batches, sent, k)
        try:
            while True:
                with fewer_collections():
                    chunk = next(steps, None)
                if chunk is None:
                    return
                yield chunk
        finally:
            steps.close()

    def _overlapped(self, batch: list[tuple[Any, str]], written: _Written,
                    following: list[tuple[Any, str]] | None,
                    batches: Iterator[list[tuple[Any, str]]],
                    sent: Mapping[Any, Iterable[int]], k: int
                    ) -> Generator[Chunk, None, None]:
        """Two threads score chunks (sparse products, top-k: numpy and scipy let go of
        the GIL there) while this one parses the next chunk's profiles and the caller
        uses the last result; results come in input order. Only this thread adds
        features, and rows below a chunk's ``nf`` never change; the learner locks its
        caches (explaining picks uses them too). A thread waiting for the GIL would wait
        up to the interpreter's switch interval (5 ms) for this one to let go, many
        times a chunk: shorter while ranking. The threads end with the ranking, before
        anything forks."""
        scoring: collections.deque[Future[Chunk]] = collections.deque()
        with _short_switch_interval(), ThreadPoolExecutor(
                SCORING_THREADS, thread_name_prefix="newsletter-rank") as pool:
            try:
                scoring.append(pool.submit(self._scored, batch, written, sent, k))
                while following is not None:
                    try:
                        batch, written = following, self._written(following)
                    except ProfileError:
                        while scoring:  # what was ranked before the bad profile comes out
                            yield scoring.popleft().result()  # first, as in one thread
                        raise
                    following = next(batches, None)
                    if len(scoring) >= SCORING_THREADS:
                        yield scoring.popleft().result()
                    scoring.append(pool.submit(self._scored, batch, written, sent, k))
                while scoring:
                    yield scoring.popleft().result()
            finally:
                for future in scoring:
                    future.cancel()

    def _scored(self, batch: list[tuple[Any, str]], written: _Written,
                sent: Mapping[Any, Iterable[int]], k: int) -> Chunk:
        """One chunk, in place on one n × entries score matrix (each pass over it costs
        real time at a million rows): written relevance, what votes add, the bar for a
        match, popularity and recency, then exclusions and what was sent."""
        keys = [key for key, _ in batch]
        score, unmatched = self._relevance(written)
        at = None  # the chunk's votes, found once for the learner and the reader alike
        if self.learner is not None:  # (the learner locks its own caches)
            at = self.learner.votes.rows_for(keys)
            self._add_learned(self.learner, score, unmatched, keys, written, at)
        np.putmask(score, unmatched, np.float32(-np.inf))
        if self.cfg.weight_relevance != 1.0:
            score *= self.cfg.weight_relevance
        score += self.corpus.bonus_canonical
        excluded = None
        if written.excluded is not None:
            # only the rows that exclude a term (a few in a chunk): the product of the
            # others is zero, and over all n rows it cost three times as much
            x = written.excluded
            some = np.flatnonzero(np.diff(x.indptr))
            excluded = np.zeros(score.shape, dtype=np.bool_)
            excluded[some] = np.asarray(x[some] @ self._m[: written.nf]) > 0
            score[excluded] = -np.inf
        sent_rows, sent_cols = _mask_sent(score, keys, sent)
        picks, scores = _top_k(score, k)
        liked = None
        if self.reader is not None:  # re-ordered and filled from 👍 (reader.py)
            liked = self.reader.apply(keys, picks, scores, score, excluded, sent_rows,
                                      sent_cols, at)
        trending = np.zeros(written.n, dtype=bool)
        if self.cfg.trending == "section" and self.cfg.trending_count:
            empty = picks[:, 0] < 0
            if empty.any():
                trending = empty
                picks[empty], scores[empty] = self._trending(
                    np.flatnonzero(empty), written.excluded, sent_rows, sent_cols, k)
        return Chunk(keys, picks, scores, trending, liked)

    def _written(self, batch: list[tuple[Any, str]]) -> _Written:
        """The chunk's profiles as sparse matrices over the features (parsed, with new
        features added, before ``nf`` is read).

        At a million subscribers this is the one Python pass per profile, so it works on
        the whole chunk at once: every plain profile is split with the parser's own
        separator, each raw part becomes a code through one table (``map`` over the
        chunk's parts, a part parsed once per ranker), and the codes' columns (feature,
        weight, exclusion) are gathered with numpy. The profiles ``_terms_of`` would send
        through the parser whole (quotes, more parts than the parser allows, a feature
        written twice) are taken out and done by ``_terms_of`` itself, one by one. The
        terms are the same as ``_terms_of`` finds for each profile (a test compares).
        Like ``_fid``, it runs on the ranking's own thread only (the scoring threads
        never add codes or features)."""
        n = len(batch)
        texts = [text or "" for _, text in batch]
        split = _PLAIN_SPLIT.split
        whole = {i for i, t in enumerate(texts) if '"' in t}
        parts = ([[] if i in whole else split(t) for i, t in enumerate(texts)] if whole
                 else [split(t) for t in texts])
        sizes = np.fromiter(map(len, parts), np.intp, n)
        long = np.flatnonzero(sizes > MAX_TERMS).tolist()
        if long:
            whole.update(long)
            sizes[long] = 0
            parts = [[] if i in whole else p for i, p in enumerate(parts)]
        flat = list(itertools.chain.from_iterable(parts))
        table = self._part_codes
        codes = np.fromiter(map(table.get, flat, itertools.repeat(-2)), np.intp, len(flat))
        rows = np.repeat(np.arange(n, dtype=np.int32), sizes)
        unseen = np.flatnonzero(codes == -2)
        parsed: dict[int, list[TermHit]] = {}  # the profiles parsed whole, by row
        if len(unseen) or whole:
            # New parts and whole profiles in the order of the rows, as one by one:
            # features are numbered as they first appear, so the numbers are the same.
            by_row: dict[int, list[int]] = collections.defaultdict(list)
            for i, r in zip(unseen.tolist(), rows[unseen].tolist(), strict=True):
                by_row[r].append(i)
            # A part new to the table may come many times in the chunk (in a new
            # ranker's first chunk, every part is new: 22,061 parts of 4,000 profiles
            # were 7,060 distinct): parsed at its first, then found in the table.
            try:
                with self._rows_together():
                    for r in sorted(by_row.keys() | whole):
                        if r in whole:
                            parsed[r] = self._terms_of(texts[r])
                        for i in by_row.get(r, ()):
                            raw = flat[i]
                            found = table.get(raw)
                            codes[i] = self._part_code(raw) if found is None else found
            except ProfileError:
                self._first_bad(batch)  # raises, naming the subscriber as one by one would
                raise
        known = codes >= 0
        codes, rows = codes[known], rows[known]
        fid_of, weight_of, exclude_of = self._columns()
        fids = fid_of[codes]
        if len(fids) > 1:
            # a feature twice in one profile ("diffusion, diffusions^2"): that profile is
            # parsed whole, where the parser's own rule picks the written form
            span = len(self.feature_ids) + 1
            pair = np.sort(rows.astype(np.int64) * span + fids)
            twice = pair[1:][pair[1:] == pair[:-1]] // span
            if len(twice):
                again = distinct(twice)
                repeated = np.zeros(n, np.bool_)
                repeated[again] = True
                keep = ~repeated[rows]
                codes, rows, fids = codes[keep], rows[keep], fids[keep]
                for r in again.tolist():  # (their parts parsed: no error is left)
                    parsed[r] = self._terms_of(texts[r])
        weights, excl = weight_of[codes], exclude_of[codes]
        if parsed:
            order = sorted(parsed)
            more = [h for r in order for h in parsed[r]]
            more_fids, more_weights, more_excl = _hit_columns(more)
            rows = np.concatenate([rows, np.repeat(np.asarray(order, np.int32),
                                                   [len(parsed[r]) for r in order])])
            fids = np.concatenate([fids, more_fids])
            weights = np.concatenate([weights, more_weights])
            excl = np.concatenate([excl, more_excl])
        pos = ~excl
        nf = len(self.feature_ids)
        excluded = None
        if excl.any():
            excluded = sparse.csr_matrix((np.ones(int(excl.sum()), np.float32),
                                          (rows[excl], fids[excl])), shape=(n, nf))
        return _Written(n, nf, rows, fids,
                        sparse.csr_matrix((weights[pos], (rows[pos], fids[pos])),
                                          shape=(n, nf)),
                        excluded)

    def _part_code(self, raw: str) -> int:
        """The code of one raw profile part (-1: no term), parsed as ``_terms_of``
        parses a part alone; remembered while the table has room (PART_TABLE)."""
        terms = profile_terms(raw)  # "" or blanks: no term
        code = -1
        if terms:
            hit = self._term_hit(terms[0])
            code = self._code_of_hit.get(hit, -1)
            if code < 0:  # one code per distinct term (as ``_term_ids`` keeps one)
                code = len(self._code_hits)
                self._code_hits.append(hit)
                self._code_of_hit[hit] = code
        if len(self._part_codes) < PART_TABLE:
            self._part_codes[raw] = code
        return code

    def _columns(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Each code's feature, weight and exclusion, as arrays: extended by the codes
        added since (never rebuilt over all of them)."""
        cols = self._code_columns
        hits = self._code_hits[len(cols[0]):]
        if hits:
            fids, weights, excl = _hit_columns(hits)
            cols = self._code_columns = (np.concatenate([cols[0], fids]),
                                         np.concatenate([cols[1], weights]),
                                         np.concatenate([cols[2], excl]))
        return cols

    def _first_bad(self, batch: list[tuple[Any, str]]) -> None:
        """Raise for the first profile of ``batch`` that does not parse, naming its
        subscriber (what parsing them one by one raises)."""
        for key, text in batch:
            try:
                self._terms_of(text or "")
            except ProfileError as exc:
                raise ProfileError(f"subscriber {key}: {exc.message}") from None

    def _relevance(self, written: _Written) -> tuple[np.ndarray, np.ndarray]:
        """Written relevance (n × entries, S @ M) and where it misses the bar for a
        match."""
        if written.nf:
            score = np.asarray(written.weights @ self._m[: written.nf], dtype=np.float32)
        else:
            score = np.zeros((written.n, len(self.corpus.entries)), np.float32)
        return score, score < self.cfg.min_relevance

    def _add_learned(self, learner: Learner, score: np.ndarray, unmatched: np.ndarray,
                     keys: list[Any], written: _Written,
                     at: tuple[np.ndarray, np.ndarray] | None = None) -> None:
        """Votes add learned weights over the same features and the same M, never on a
        written term; in place on ``score`` and ``unmatched``."""
        n, nf = written.n, written.nf
        present = sparse.csr_matrix((np.ones(len(written.fids), np.float32),
                                     (written.rows, written.fids)), shape=(n, nf))
        learned = learner.matrix(keys, present, at)
        if not learned.nnz:
            return
        # Sparse × sparse: learned terms touch few papers, so the lift and its bounds are
        # computed only where it is not zero, not over n × entries.
        lifted = (learned @ self._m_sparse(nf)).tocoo()
        r, c = lifted.row, lifted.col
        value = lifted.data.astype(np.float32)
        base = score[r, c]
        # Learned terms alone make a match only well past the bar a written term must
        # pass: a vote is weaker evidence than what the reader wrote.
        alone = unmatched[r, c] & (value >= LEARNED_MATCH * self.cfg.min_relevance)
        # They count for at most ``feedback_share`` of the written relevance (up or
        # down), or of their own in a match they make alone (``learned_part`` for one
        # paper).
        bound = np.where(alone, value, base) * np.float32(self.cfg.feedback_share)
        score[r, c] = base + np.clip(value, -bound, bound)
        unmatched[r[alone], c[alone]] = False

    def _trending(self, rows: np.ndarray, x: sparse.csr_matrix | None, sent_rows: list[int],
                  sent_cols: list[int], k: int) -> tuple[np.ndarray, np.ndarray]:
        """The labelled "trending today" picks for rows with no match: popular papers,
        still never an excluded topic or a paper the subscriber already had."""
        c = self.corpus
        pop = np.broadcast_to(c.popularity + c.recency * np.float32(1e-3),
                              (len(rows), len(c.entries))).astype(np.float32)
        pop[:, ~c.canonical] = -np.inf
        if x is not None:
            pop[np.asarray(x[rows] @ self._m[: x.shape[1]]) > 0] = -np.inf
        if sent_rows:
            where = {r: i for i, r in enumerate(rows.tolist())}
            pairs = [(where[r], col) for r, col in zip(sent_rows, sent_cols, strict=True)
                     if r in where]
            if pairs:
                rr, cc = zip(*pairs, strict=True)
                pop[list(rr), list(cc)] = -np.inf
        t_picks, t_scores = _top_k(pop, min(self.cfg.trending_count, k))
        picks = np.full((len(rows), k), -1, dtype=np.int32)
        scores = np.full((len(rows), k), -np.inf, dtype=np.float32)
        picks[:, : t_picks.shape[1]] = t_picks
        scores[:, : t_scores.shape[1]] = t_scores
        return picks, scores


def because_label(title: str) -> str:
    """What a "because you liked" fill says, in the email and wherever picks show."""
    return f"because you liked \u201c{title}\u201d"


def learned_part(written: float, lifted: float, cfg: RankingConfig) -> float:
    """What learned relevance ``lifted`` adds to a paper whose written relevance is
    ``written``, as ``Ranker._scored`` counts it for the whole matrix: within
    ±``feedback_share`` × ``written`` for a written match; ``feedback_share`` × ``lifted``
    for a match learned terms make alone (``LEARNED_MATCH``); otherwise all of it (no
    match: only a trending pick is explained so)."""
    share = cfg.feedback_share
    if written >= cfg.min_relevance:
        return min(max(lifted, -share * written), share * written)
    if lifted >= LEARNED_MATCH * cfg.min_relevance:
        return share * lifted
    return lifted


@dataclass(frozen=True, slots=True)
class LearnedHit:
    """A learned term's part in one pick's score."""

    term: str
    value: float
    liked: int  # liked papers the term came from
    disliked: int


@dataclass
class Explanation:
    matched: list[tuple[str, float]]
    relevance: float
    popularity: float
    recency: float
    features: list[Feature] = field(default_factory=list)
    learned: list[LearnedHit] = field(default_factory=list)
    strong: bool = True  # a clear match ("matched:"), else a weak one ("related:")
    because: str = ""  # a fill: the title of the liked paper it is like (reader.py)

    @property
    def score(self) -> float:
        return round(self.relevance + self.popularity + self.recency, 4)

    @property
    def also_like(self) -> list[str]:
        """ "Mamba — you liked 2 papers about it" per learned term that lifted the pick."""
        return [f"{h.term} — you liked {h.liked} paper{'' if h.liked == 1 else 's'} about it"
                for h in self.learned if h.value > 0 and h.liked]

    @property
    def why(self) -> str:
        if self.because:
            return because_label(self.because)
        label = "matched: " if self.strong else "related: "
        parts = [label + ", ".join(t for t, _ in self.matched)] if self.matched else []
        also = self.also_like
        if also:
            parts.append("also like: " + "; ".join(also))
        return " · ".join(parts)


@dataclass(frozen=True, slots=True)
class _Written:
    """A chunk's written profiles over the ``nf`` features known when it was parsed."""

    n: int
    nf: int
    rows: np.ndarray  # int32, the row of each written term (excluded ones too)
    fids: np.ndarray  # int32, its feature
    weights: sparse.csr_matrix  # n × nf term weights, "-terms" left out
    excluded: sparse.csr_matrix | None  # n × nf, 1 per "-term"; None: the chunk has none


def _mask_sent(score: np.ndarray, keys: list[Any], sent: Mapping[Any, Iterable[int]]
               ) -> tuple[list[int], list[int]]:
    """Never a paper the subscriber already had: -inf in place, and the (row, column)
    pairs masked, which the trending section honours too."""
    sent_rows: list[int] = []
    sent_cols: list[int] = []
    if sent:
        for r, key in enumerate(keys):
            for c in sent.get(key, ()):
                sent_rows.append(r)
                sent_cols.append(c)
        if sent_rows:
            score[sent_rows, sent_cols] = -np.inf
    return sent_rows, sent_cols


_switch_lock = threading.Lock()
_switch_users = [0, 0.0]  # rankings in threads now, the interval before the first


@contextlib.contextmanager
def _short_switch_interval() -> Iterator[None]:
    """The interpreter's switch interval at ``SWITCH_INTERVAL`` while any ranking runs
    in threads (two at once, in a web server's threads, restore it once, at the end)."""
    with _switch_lock:
        if not _switch_users[0]:
            _switch_users[1] = sys.getswitchinterval()
            sys.setswitchinterval(min(_switch_users[1], SWITCH_INTERVAL))
        _switch_users[0] += 1
    try:
        yield
    finally:
        with _switch_lock:
            _switch_users[0] -= 1
            if not _switch_users[0]:
                sys.setswitchinterval(_switch_users[1])


def _batches(items: Iterable[tuple[Any, str]], size: int
             ) -> Iterator[list[tuple[Any, str]]]:
    batch: list[tuple[Any, str]] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _hit_columns(hits: Sequence[TermHit]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The feature, weight and exclusion of each term, as arrays (one pass each)."""
    n = len(hits)
    return (np.fromiter((h.fid for h in hits), np.int32, n),
            np.fromiter((h.weight for h in hits), np.float32, n),
            np.fromiter((h.exclude for h in hits), np.bool_, n))


def _top_k(score: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices and values of the k best per row, best first; -1 / -inf where fewer."""
    n, m = score.shape
    picks = np.full((n, k), -1, dtype=np.int32)
    values = np.full((n, k), -np.inf, dtype=np.float32)
    k_eff = min(k, m)
    if k_eff == 0 or n == 0:
        return picks, values
    if k_eff < m:
        part = np.argpartition(-score, k_eff - 1, axis=1)[:, :k_eff]
    else:
        part = np.broadcast_to(np.arange(m), (n, m))
    part_scores = np.take_along_axis(score, part, axis=1)
    order = np.argsort(-part_scores, axis=1, kind="stable")
    top = np.take_along_axis(part, order, axis=1)
    top_scores = np.take_along_axis(part_scores, order, axis=1)
    picks[:, :k_eff] = np.where(np.isfinite(top_scores), top, -1)
    values[:, :k_eff] = top_scores
    return picks, values
