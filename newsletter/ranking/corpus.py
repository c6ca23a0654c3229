"""The papers being ranked, analysed once: what a profile term becomes (a *feature*)
and how strongly each paper matches it (BM25F over title, keywords and abstract).

A feature's row over the day's papers is computed once, on first use, and shared by
every subscriber who wrote the term; the engine (``engine.py``) multiplies these rows
with the subscribers' weights, and the learner (``feedback.py``) finds the terms of
voted papers in the same index. Both build on this module, neither on the other's
internals.
"""

from __future__ import annotations

import datetime as dt
import itertools
import math
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from newsletter.config import RankingConfig
from newsletter.ingest.papers import normalize_title
from newsletter.profile import Term
from newsletter.ranking.related import RelatedTerms
from newsletter.ranking.text import (
    STOPWORDS,
    Acronyms,
    analyze_words,
    fold,
    joined_compounds,
    raw_tokens,
    stem,
    stems,
    words,
)

FIELD_WEIGHTS = {"title": 3.0, "keywords": 2.0, "abstract": 1.0}
K1, B = 1.2, 0.75
MAX_NGRAM = 4
MIN_IDF_N = 100  # idf is computed as if at least this many papers were ranked
PHRASE_WEIGHT = 1.0  # a topic's score: the phrase (or acronym form) ...
WORDS_WEIGHT = 1.0  # ... plus its words' mean score, scaled by the share present ...
COVERAGE_POWER = 0.0  # ... to this power, so one word of three earns little
ROWS_AT_ONCE = 512  # features scored together by ``Corpus.rows`` (a few MB of arrays)


@dataclass(frozen=True, slots=True)
class RankEntry:
    """What the ranker needs of a paper."""

    id: str
    title: str
    abstract: str = ""
    keywords: tuple[str, ...] = ()
    authors: tuple[str, ...] = ()
    upvotes: int = 0
    published: dt.date | None = None

    @classmethod
    def of(cls, e: Any) -> RankEntry:
        return cls(e.id, e.title, e.abstract or "", tuple(e.keywords or ()),
                   tuple(e.authors or ()), int(e.upvotes or 0), e.published)


@dataclass(frozen=True, slots=True)
class Feature:
    kind: str  # topic | exact | author | exclude (an exclusion with a field's vocabulary)
    variants: tuple[tuple[str, ...], ...]
    parts: tuple[str, ...] = ()  # a multi-word topic's words, for partial credit
    related: tuple[tuple[str, ...], ...] = ()  # an area's related terms (related.py)


class Analyzer:
    """Turns profile terms into features, caching by term so repeats cost nothing."""

    def __init__(self, acronyms: Acronyms, related: RelatedTerms | None = None) -> None:
        self.acronyms = acronyms
        self.related = related
        self.related_labels: dict[tuple[str, ...], str] = {}  # stems → the table's words
        self._cache: dict[tuple[str, str, bool], Feature] = {}

    def feature(self, term: Term) -> Feature:
        key = (term.kind, fold(term.text), term.exclude)
        cached = self._cache.get(key)
        if cached is None:
            cached = self._cache[key] = self._build(term)
        return cached

    def _build(self, term: Term) -> Feature:
        if term.kind == "exact":
            return Feature("exact", (raw_tokens(term.text),))
        if term.kind == "author":
            return Feature("author", (tuple(sorted(set(raw_tokens(term.text)))),))
        base = stems(term.text, self.acronyms)
        if not base:  # a term of stop words only ("the"): match it literally
            return Feature("exact", (raw_tokens(term.text),))
        variants = {base, *self._acronym_variants(base)}
        if len(base) > 1:
            joined = "".join(base)
            variants.add((joined,))
        parts = tuple(dict.fromkeys(base)) if len(base) > 1 else ()
        ordered = tuple(sorted(variants, key=lambda v: (len(v), v)))
        related = self._related(term.text, variants)
        if related and term.exclude:
            return Feature("exclude", ordered, parts, related)
        return Feature("topic", ordered, parts, related)

    def _related(self, text: str, own: set[tuple[str, ...]]) -> tuple[tuple[str, ...], ...]:
        """The related terms of an area named by ``text`` (none unless it names one)."""
        area = self.related.area(text) if self.related else None
        if area is None:
            return ()
        out: dict[tuple[str, ...], None] = {}
        for words_ in area.terms:
            key = stems(words_, self.acronyms)
            if key and key not in own:
                out[key] = None
                self.related_labels.setdefault(key, words_)
        return tuple(out)

    def _acronym_variants(self, base: tuple[str, ...]) -> set[tuple[str, ...]]:
        a = self.acronyms
        out: set[tuple[str, ...]] = set()
        for i, tok in enumerate(base):  # expand an acronym inside the term
            long = a.short_to_long.get(tok)
            if long:
                out.add(base[:i] + long + base[i + 1 :])
        for n in range(len(base), 1, -1):  # contract a long form inside the term
            for i in range(len(base) - n + 1):
                short = a.long_to_short.get(base[i : i + n])
                if short:
                    out.add(base[:i] + (short,) + base[i + n :])
        return out


def _ngrams(tokens: Sequence[str], max_n: int, shortest: int = 1
            ) -> Iterator[tuple[str, ...]]:
    """Every run of ``shortest`` to ``max_n`` tokens, shortest first: ``zip`` makes
    them and ``chain`` strings them together, both in C (a generator yielding each
    gram cost as much again as counting them)."""
    return itertools.chain.from_iterable(
        [zip(*(tokens[k:] for k in range(n)), strict=False)
         for n in range(shortest, max_n + 1)])


def _word(word: str, acronyms: Acronyms) -> tuple[tuple[str, ...], tuple[str, ...],
                                                  tuple[str, ...]]:
    """One surface word as the corpus indexes it: its content stems (stop words out),
    its folded tokens (for exact phrases) and, when hyphenated, its joined stem.

    Most words of an abstract are plain ASCII letters and digits: for those the same
    three answers are made directly (folding is lower-casing, there is one part and no
    compound), without the text pipeline's regular expressions, normalisation and
    generators, which were most of opening an edition's corpus. A test compares the
    two ways on generated words."""
    if word.isascii() and word.isalnum():
        raw = word.lower()
        own = raw
        # "GNNs", "ViTs": an acronym's plural is the acronym (as ``analyze_words``)
        if (raw.endswith("s") and raw[:-1] in acronyms.plain
                and any(c.isupper() for c in word[1:])):
            own = raw[:-1]
        if own in STOPWORDS:
            return (), (raw,), ()
        return (own if own in acronyms.plain else stem(own),), (raw,), ()
    return _word_analysed(word, acronyms)


def _word_analysed(word: str, acronyms: Acronyms) -> tuple[
        tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """``_word`` through the text pipeline, for any word."""
    return (tuple(s for s, r in analyze_words([word], acronyms) if r not in STOPWORDS),
            raw_tokens(word), tuple(joined_compounds(word)))


# absent grams a field's postings remember (``Postings._absent``): a few MB at most
ABSENT_GRAMS = 50_000


class Postings(dict[tuple[str, ...], dict[int, int]]):
    """One field's postings, gram (1 to ``MAX_NGRAM`` stems) → {paper: count}, read as
    ``postings[gram]``: a word's made at once, a longer gram's on first ask (from the
    papers of its rarest word) and kept.

    Built eagerly, every n-gram of every paper went into a dict of its own (a few
    hundred thousand entries for a day's papers, the largest part of opening an
    edition), for the few thousand phrases profiles ask about. A paper's gram counts
    come in one C call (``Counter``). The same postings, in the same (paper) order."""

    __slots__ = ("_absent", "_count")

    def __init__(self) -> None:
        super().__init__()
        self._count: list[Callable[[tuple[str, ...]], int | None]] = []  # by paper
        # Grams asked for that no paper has, up to ``ABSENT_GRAMS``: not kept as entries
        # (see ``__missing__``), yet asked again and again (planning's rows, then each
        # email's explanation of a phrase) and each time searched from their rarest word.
        self._absent: set[tuple[str, ...]] = set()

    def add(self, grams: Counter[tuple[str, ...]], words: Counter[tuple[str, ...]]) -> None:
        """The next paper's counts: of its grams, and of its words alone (1-grams)."""
        i = len(self._count)
        self._count.append(grams.get)
        self._absent.clear()  # a new paper may have them
        get = super().get
        for w, c in words.items():
            found = get(w)
            if found is None:
                self[w] = found = {}
            found[i] = c

    def __missing__(self, gram: tuple[str, ...]) -> dict[int, int]:
        if len(gram) < 2 or gram in self._absent:
            return {}
        # a paper with the gram has each of its words: the rarest word's papers
        get = super().get
        fewest = min((get((w,), {}) for w in gram), key=len)
        count = self._count
        made = {i: c for i in fewest if (c := count[i](gram))}
        if made:  # kept only when some paper has it: what is kept stays within what
            # the eager index held, whatever a long-lived process (the web's previews)
            # is asked
            self[gram] = made
        else:  # remembered as absent, boundedly for the same reason
            if len(self._absent) >= ABSENT_GRAMS:
                self._absent.clear()
            self._absent.add(gram)
        return made

    def get(self, gram: tuple[str, ...], default: Any = None) -> Any:
        """As ``postings[gram]``, ``default`` when no paper has it."""
        return self[gram] or default


class Corpus:
    """The entries being ranked, analysed once; feature rows computed on demand."""

    def __init__(self, entries: Sequence[RankEntry], acronyms: Acronyms,
                 cfg: RankingConfig, today: dt.date | None = None,
                 related: RelatedTerms | None = None) -> None:
        self.entries = list(entries)
        self.position = {e.id: i for i, e in enumerate(self.entries)}
        self.acronyms = acronyms
        self.related = related  # a field vocabulary (None: no expansion)
        self.cfg = cfg
        self.today = today or dt.date.today()
        n = len(self.entries)
        self.index: dict[str, Postings] = {f: Postings() for f in FIELD_WEIGHTS}
        self.raw_text: dict[str, list[str]] = {f: [] for f in FIELD_WEIGHTS}
        self.stem_text: dict[str, list[str]] = {f: [] for f in FIELD_WEIGHTS}
        lengths = np.zeros(n, dtype=np.float64)
        self.author_tokens: list[list[frozenset[str]]] = []
        # Each distinct word analysed once (the acronym table is complete by now): most
        # words of a paper occur in many others, and analysing every occurrence again
        # was most of opening an edition.
        seen: dict[str, tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]] = {}
        for i, e in enumerate(self.entries):
            texts = {"title": e.title, "keywords": " , ".join(e.keywords), "abstract": e.abstract}
            for fname, text in texts.items():
                toks: list[str] = []
                raws: list[str] = []
                joined: list[str] = []  # hyphenated words written as one
                for w in words(text):
                    known = seen.get(w)
                    if known is None:
                        known = seen[w] = _word(w, acronyms)
                    toks += known[0]
                    raws += known[1]
                    if known[2]:
                        joined += known[2]
                lengths[i] += FIELD_WEIGHTS[fname] * len(toks)
                alone: Counter[tuple[str, ...]] = Counter(zip(toks, strict=False))
                grams = alone.copy()  # the 1-grams, then the longer ones
                grams.update(_ngrams(toks, MAX_NGRAM, shortest=2))
                if joined:
                    grams.update(zip(joined, strict=True))
                    alone.update(zip(joined, strict=True))
                self.index[fname].add(grams, alone)
                self.raw_text[fname].append(" " + " ".join(raws) + " ")
                self.stem_text[fname].append(" " + " ".join(toks) + " ")
            self.author_tokens.append([frozenset(raw_tokens(a)) for a in e.authors])
        self.length_norm = (1 - B + B * lengths / max(lengths.mean(), 1.0)) if n else lengths
        self.popularity = np.log1p(np.array([max(e.upvotes, 0) for e in self.entries],
                                            dtype=np.float32))
        self.recency = np.array([self._recency(e.published) for e in self.entries],
                                dtype=np.float32)
        self.canonical = self._canonical_mask()
        self.bonus = (cfg.weight_popularity * self.popularity
                      + cfg.weight_recency * self.recency).astype(np.float32)
        # The bonus with -inf on duplicate copies: one addition both scores and drops them.
        self.bonus_canonical = np.where(self.canonical, self.bonus,
                                        np.float32(-np.inf)).astype(np.float32)
        self.trending_order = np.lexsort((-self.recency, -self.popularity))
        self._rows: dict[Feature, np.ndarray] = {}
        self._with_word: dict[str, frozenset[int]] = {}

    def _recency(self, published: dt.date | None) -> float:
        if published is None:
            return 0.5
        age = max((self.today - published).days, 0)
        return float(0.5 ** (age / 7.0))

    def _canonical_mask(self) -> np.ndarray:
        """False for near-duplicates (same work twice): only the best copy is ranked."""
        mask = np.ones(len(self.entries), dtype=bool)
        buckets: dict[str, list[int]] = defaultdict(list)
        for i, e in enumerate(self.entries):
            buckets[" ".join(normalize_title(e.title).split()[:3])].append(i)
        for members in buckets.values():
            if len(members) < 2:
                continue
            token_sets = {i: set(normalize_title(self.entries[i].title).split()) for i in members}
            for a_pos, a in enumerate(members):
                for b in members[a_pos + 1 :]:
                    if not (mask[a] and mask[b]):
                        continue
                    sa, sb = token_sets[a], token_sets[b]
                    if len(sa & sb) / max(len(sa | sb), 1) >= 0.85:
                        ea, eb = self.entries[a], self.entries[b]
                        rank_a = (ea.upvotes, not ea.id.startswith("t:"), len(ea.abstract))
                        rank_b = (eb.upvotes, not eb.id.startswith("t:"), len(eb.abstract))
                        mask[b if rank_a >= rank_b else a] = False
        return mask

    def row(self, feature: Feature) -> np.ndarray:
        """BM25F of ``feature`` over every entry (float32, zero where absent)."""
        cached = self._rows.get(feature)
        if cached is not None:
            return cached
        if self._is_plain(feature):
            self._plain(feature)
            return self._rows[feature]
        n = len(self.entries)
        if feature.kind == "exclude":
            # An exclusion with a field's vocabulary: the term itself anywhere, or its
            # related terms as more than a passing mention (a stricter bar than a topic's).
            out = self.row(Feature("topic", feature.variants, feature.parts)).copy()
            strict = self.related_evidence(feature.related) >= self.cfg.exclude_related_min
            out[strict] += 1.0
            self._rows[feature] = out
            return out
        if feature.kind == "author":
            tf = np.zeros((1, n), dtype=np.float64)
            want = set(feature.variants[0])
            for i, authors in enumerate(self.author_tokens):
                if any(want <= a for a in authors):
                    tf[0, i] += FIELD_WEIGHTS["title"]
            out = self._bm25(tf)[0]
        else:
            # A topic naming a field also earns part of its score from the field's words.
            own = self.row(Feature(feature.kind, feature.variants, feature.parts))
            tf = self._tf([("topic", feature.related)])
            out = (own + self.cfg.related_weight * self._bm25(tf)[0]).astype(np.float32)
        self._rows[feature] = out
        return out

    def rows(self, features: Sequence[Feature]) -> np.ndarray:
        """``row`` of each feature, as one (len(features) × entries) float32 array. A
        day's new profile terms come by the thousand, and one row at a time is mostly
        numpy's per-call overhead on arrays of a few hundred papers: the plain topics and
        exact phrases (all but exclusions, authors and a field's related terms) are
        scored together (``_plain``)."""
        out = np.zeros((len(features), len(self.entries)), dtype=np.float32)
        plain: dict[Feature, list[int]] = {}
        for i, feature in enumerate(features):
            cached = self._rows.get(feature)
            if cached is not None:
                out[i] = cached
            elif self._is_plain(feature):
                plain.setdefault(feature, []).append(i)
            else:
                out[i] = self.row(feature)
        self._plain(*plain)
        for feature, at in plain.items():
            out[at] = self._rows[feature]
        return out

    def _is_plain(self, feature: Feature) -> bool:
        """A plain topic or exact phrase, scored in batches (``_plain``): not an
        exclusion, an author, nor a topic that also earns from a field's related terms."""
        return feature.kind in ("topic", "exact") and not (
            feature.related and self.cfg.related_weight)

    def _plain(self, *features: Feature) -> None:
        """The rows of plain topics and exact phrases, into the cache: a topic's words
        first (they have none of their own), then the rest (a word asked for as a term
        of its own is done then, and only then), at most ``ROWS_AT_ONCE`` a batch."""
        words_ = {Feature("topic", ((w,),)) for f in features for w in f.parts}
        for which in (words_, features):
            batch = list(dict.fromkeys(f for f in which if f not in self._rows))
            for start in range(0, len(batch), ROWS_AT_ONCE):
                self._plain_rows(batch[start : start + ROWS_AT_ONCE])

    def _plain_rows(self, features: list[Feature]) -> None:
        """BM25F rows of plain topics and exact phrases, into the cache; a topic's words
        must be there already. A topic's words, in any order, earn part of a phrase
        match: the phrase is the strong signal, the words catch "point cloud semantic
        segmentation" for "point cloud segmentation" (as sequential-dependence models
        do). Topics with as many words are mixed at once; sums over a topic's words run
        word by word."""
        scored = self._bm25(self._tf([(f.kind, f.variants) for f in features]))
        by_parts: dict[int, list[int]] = {}
        for j, feature in enumerate(features):
            if feature.parts:
                by_parts.setdefault(len(feature.parts), []).append(j)
        for size, group in by_parts.items():
            # G topics × their ``size`` words × papers
            parts = np.array([[self._rows[Feature("topic", ((w,),))]
                               for w in features[j].parts] for j in group], dtype=np.float32)
            word_idf = np.array([[self._idf(int(np.count_nonzero(w))) for w in row]
                                 for row in parts], dtype=np.float64)
            share = ((word_idf[:, :, None] * (parts > 0)).sum(axis=1)
                     / np.maximum(word_idf.sum(axis=1), 1e-9)[:, None])
            bag = (parts.sum(axis=1) / size * share ** COVERAGE_POWER * (share > 0.5))
            scored[group] = (PHRASE_WEIGHT * scored[group] + WORDS_WEIGHT * bag).astype(
                np.float32)
        # The cache keeps rows of this one array (views): a topic's phrase-only row is
        # replaced in it above, not kept beside its final row.
        for j, feature in enumerate(features):
            self._rows[feature] = scored[j]

    def related_evidence(self, related: Sequence[tuple[str, ...]]) -> np.ndarray:
        """How strongly each entry is about a field: per related term present, the
        weight of the strongest field it appears in (title 3, keywords 2, abstract 1),
        plus one for a repeat; so one passing mention in an abstract scores 1."""
        evidence = np.zeros(len(self.entries), dtype=np.float32)
        for variant in related:
            best: dict[int, float] = {}
            for fname, weight in FIELD_WEIGHTS.items():
                for i, count in self._postings(fname, "topic", variant).items():
                    best[i] = max(best.get(i, 0.0), weight + (1.0 if count > 1 else 0.0))
            for i, value in best.items():
                evidence[i] += value
        return evidence

    def with_phrase(self, feature: Feature) -> frozenset[int]:
        """The entries that have the topic's phrase (one of its variants: the words in
        order, an acronym form), not only its words apart (for explanations, which keep
        it by feature id)."""
        return frozenset(i for v in feature.variants for f in FIELD_WEIGHTS
                         for i in self._postings(f, feature.kind, v))

    def with_word(self, stem_: str) -> frozenset[int]:
        """The entries that have this stem, in any field (for explanations)."""
        found = self._with_word.get(stem_)
        if found is None:
            found = self._with_word[stem_] = frozenset(
                i for f in FIELD_WEIGHTS for i in self.index[f].get((stem_,), ()))
        return found

    def related_hits(self, index: int, related: Sequence[tuple[str, ...]]) -> list[
            tuple[str, ...]]:
        """Which of ``related`` occur in entry ``index`` (for explanations)."""
        return [v for v in related if any(index in self._postings(f, "topic", v)
                                          for f in FIELD_WEIGHTS)]

    def _idf(self, df: int) -> float:
        big_n = max(len(self.entries), MIN_IDF_N)
        return math.log(1 + (big_n - df + 0.5) / (df + 0.5))

    def _tf(self, terms: Sequence[tuple[str, Sequence[tuple[str, ...]]]]) -> np.ndarray:
        """Each entry's field-weighted count of each (kind, variants) term (terms ×
        entries, float64). Summed in dicts, then put in the array at once: adding to
        numpy elements one by one cost most of building a feature's row. The sums are
        small whole numbers, exact in any order."""
        at_row: list[int] = []
        at_col: list[int] = []
        counts: list[float] = []
        for j, (kind, variants) in enumerate(terms):
            acc: dict[int, float] = {}
            get = acc.get
            for fname, weight in FIELD_WEIGHTS.items():
                for variant in variants:
                    for i, count in self._postings(fname, kind, variant).items():
                        acc[i] = get(i, 0.0) + weight * count
            at_row += [j] * len(acc)
            at_col += acc
            counts += acc.values()
        tf = np.zeros((len(terms), len(self.entries)), dtype=np.float64)
        tf[at_row, at_col] = counts
        return tf

    def _bm25(self, tf: np.ndarray) -> np.ndarray:
        """BM25 of each row of counts (rows × entries) as float32; zero for a row no
        entry has."""
        df = np.count_nonzero(tf, axis=1)
        idf = np.array([self._idf(int(d)) for d in df.tolist()], dtype=np.float64)
        out = (idf[:, None] * tf * (K1 + 1) / (tf + K1 * self.length_norm)).astype(
            np.float32)
        out[df == 0] = 0
        return out

    def _postings(self, fname: str, kind: str, variant: tuple[str, ...]) -> dict[int, int]:
        if kind == "topic" and len(variant) <= MAX_NGRAM:
            return self.index[fname][variant]
        needle = " " + " ".join(variant) + " "  # longer phrases: scan the analysed text
        texts = self.stem_text[fname] if kind == "topic" else self.raw_text[fname]
        return {i: hay.count(needle) for i, hay in enumerate(texts) if needle in hay}
