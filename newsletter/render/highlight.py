"""Where a subscriber's matched terms occur in a paper's text, for highlighting.

The same analysis as ranking (stems, acronyms), so what is highlighted is what
matched.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence

from newsletter.ranking.engine import Feature
from newsletter.ranking.text import STOPWORDS, Acronyms, analyze_words

_WORD = re.compile(r"\w+")
# features remembered per highlighter: bounded, since explanations make features of
# their own (a field's related terms that matched) and a web process keeps editions open
FEATURE_CACHE = 4096
# Between two highlighted words: spaces, hyphens, slashes. Such spans join into one phrase.
_JOINER = re.compile(r"[\s\-\u2010-\u2015/]*")


class Highlighter:
    """One text, analysed once, answering "where do these features occur?" quickly.

    Tokens are indexed by their first stem (and first raw word), so a lookup costs
    one dict access per variant instead of a scan of the whole text.
    """

    def __init__(self, text: str, acronyms: Acronyms,
                 analyzed: dict[str, list[tuple[str, str]]] | None = None) -> None:
        """``analyzed``: each word's analysis, shared by the highlighters of one edition
        (same acronyms): most words of an abstract occur in many others, and stemming
        each occurrence again was most of building a highlighter."""
        tokens: list[tuple[int, int, str, str]] = []  # start, end, stem, raw
        add = tokens.append
        known = {} if analyzed is None else analyzed
        for m in _WORD.finditer(text):
            word = m.group()
            found = known.get(word)
            if found is None:
                found = known[word] = analyze_words([word], acronyms)
            start, end = m.span()
            for stem_, raw in found:
                add((start, end, stem_, raw))
        self.text = text
        self.tokens = tokens
        self.content = [t for t in tokens if t[3] not in STOPWORDS]
        # the words alone, for comparing a phrase's rest as one list slice
        self.content_stems = [t[2] for t in self.content]
        self.by_stem: dict[str, list[int]] = defaultdict(list)
        for i, stem_ in enumerate(self.content_stems):
            self.by_stem[stem_].append(i)
        # the raw words and their index: only exact phrases read them, made on the first
        self._raw: tuple[dict[str, list[int]], list[str]] | None = None
        # by the feature's identity (the entry keeps it alive, so the id stays its own):
        # hashing a Feature (nested tuples) cost more than the rest of a lookup
        self._cache: dict[int, tuple[Feature, list[tuple[int, int]]]] = {}
        self._joined: dict[int, tuple[Feature, list[tuple[int, int]]]] = {}

    def _raw_index(self) -> tuple[dict[str, list[int]], list[str]]:
        """Token positions by raw word (every token, stop words too), and the raw words
        alone (for comparing an exact phrase's rest as a slice)."""
        if self._raw is None:
            words = [t[3] for t in self.tokens]
            by_raw: dict[str, list[int]] = defaultdict(list)
            for i, raw in enumerate(words):
                by_raw[raw].append(i)
            self._raw = (by_raw, words)
        return self._raw

    @property
    def by_raw(self) -> dict[str, list[int]]:
        return self._raw_index()[0]

    def feature_spans(self, feat: Feature) -> list[tuple[int, int]]:
        """Where one feature occurs (cached: many subscribers share features)."""
        hit = self._cache.get(id(feat))
        if hit is not None and hit[0] is feat:
            return hit[1]
        found: list[tuple[int, int]] = []
        if feat.kind != "author":
            topic = feat.kind == "topic"
            seq, index, words = ((self.content, self.by_stem, self.content_stems) if topic
                                 else (self.tokens, *self._raw_index()))
            for variant in feat.variants:
                n = len(variant)
                starts = index.get(variant[0])
                if not starts:
                    continue
                if n == 1:
                    found.extend([(seq[i][0], seq[i][1]) for i in starts])
                    continue
                rest = list(variant[1:])
                for i in starts:
                    if words[i + 1:i + n] == rest:  # (a slice past the end is shorter)
                        found.append((seq[i][0], seq[i + n - 1][1]))
            if topic and feat.parts and not found:
                for part in feat.parts:  # the words matched, not the phrase: mark them
                    for i in self.by_stem.get(part, ()):
                        found.append((self.content[i][0], self.content[i][1]))
        if len(self._cache) >= FEATURE_CACHE:
            self._cache.clear()
        self._cache[id(feat)] = (feat, found)
        return found

    def spans(self, features: Sequence[Feature]) -> list[tuple[int, int]]:
        found = [span for feat in features for span in self.feature_spans(feat)]
        found.sort()
        merged: list[tuple[int, int]] = []
        for a, b in found:
            if merged and a <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(b, merged[-1][1]))
            else:
                merged.append((a, b))
        return merged

    def joined(self, features: Sequence[Feature]) -> list[tuple[int, int]]:
        """``join_spans(text, spans(features))``: what an excerpt highlights. Each
        feature's own joined spans are kept (most excerpts made afresh are of one
        feature); several features join the union of theirs, the same spans, since a
        gap of joiner characters that other spans cover in part leaves gaps of joiner
        characters."""
        if len(features) == 1:
            return self._joined_one(features[0])
        return join_spans(self.text, [s for f in features for s in self._joined_one(f)])

    def _joined_one(self, feat: Feature) -> list[tuple[int, int]]:
        hit = self._joined.get(id(feat))
        if hit is not None and hit[0] is feat:
            return hit[1]
        found = join_spans(self.text, self.feature_spans(feat))
        if len(self._joined) >= FEATURE_CACHE:
            self._joined.clear()
        self._joined[id(feat)] = (feat, found)
        return found


def join_spans(text: str, spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sorted spans, with neighbours separated only by spaces or hyphens joined: a
    phrase ("state-space model") is one highlight, never three fragments."""
    if len(spans) < 2:  # (most features occur once or twice in an abstract)
        return list(spans)
    out: list[tuple[int, int]] = []
    for a, b in sorted(spans):
        if out and (a <= out[-1][1] or _JOINER.fullmatch(text, out[-1][1], a)):
            out[-1] = (out[-1][0], max(b, out[-1][1]))
        else:
            out.append((a, b))
    return out


def highlight_spans(text: str, features: Sequence[Feature], acronyms: Acronyms) -> list[
        tuple[int, int]]:
    """Character spans in ``text`` where any of ``features`` occurs (for highlighting)."""
    return Highlighter(text, acronyms).spans(features)
