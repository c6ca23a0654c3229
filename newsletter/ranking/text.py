"""Research-vocabulary text analysis shared by profiles and papers.

Both sides go through the same pipeline so that they meet in the middle:
NFKC + case folding, hyphens split (``state-space`` = ``state space``, with the
joined form kept too so ``pre-training`` also meets ``pretraining``), a small
stop-word list removed, Snowball stems, and acronym plurals folded (``GNNs`` =
``GNN``). Acronyms and their long forms are equivalent through ``Acronyms``:
a shipped, editable table plus pairs learned from "Long Form (LF)" in papers.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Iterator
from functools import lru_cache
from importlib import resources
from pathlib import Path

import Stemmer

_STEMMER = Stemmer.Stemmer("english")
_WORD = re.compile(r"\w+(?:[-‐‑–']\w+)*")
_HYPHENS = re.compile(r"[-‐‑–']")
STOPWORDS = frozenset(
    [
        "a", "an", "and", "are", "as", "at", "be", "by", "for", "from", "has", "have", "in",
        "into", "is", "it", "its", "of", "on", "or", "that", "the", "their", "this", "to", "via",
        "was", "were", "with", "without", "we", "our", "using", "based", "towards", "toward",
    ]
)
# ``(?<!\w)``: a match never starts inside a word (from there the same words lead to
# the same parenthesis, so the word's start matched first); without it the engine
# tried up to eight words from every character of an abstract (4x the time, and
# opening an edition learns from every paper). Same matches, fuzzed.
_ACRONYM_IN_PARENTHESES = r"\(\s*([A-Z][A-Za-z0-9]*[A-Z][a-z]?s?)\s*\)"
_DEFINITION = re.compile(r"(?<!\w)((?:[\w][\w-]*\s+){1,8}?)" + _ACRONYM_IN_PARENTHESES)
# ``definitions`` finds the same matches from each "(LF)" backwards: the parenthesis
# alone (the same pattern as ``_DEFINITION``'s end), then (on the text reversed) the run
# of up to eight words before it, where a match of ``_DEFINITION`` must start.
_PARENTHESIS = re.compile(_ACRONYM_IN_PARENTHESES)
_WORDS_BEFORE = re.compile(r"(?:\s+[\w-]*\w){1,8}")  # reversed: "<space>drow"


def fold(text: str) -> str:
    return unicodedata.normalize("NFKC", text).casefold()


@lru_cache(maxsize=200_000)
def stem(word: str) -> str:
    return str(_STEMMER.stemWord(word))


def words(text: str) -> list[str]:
    """Surface words, hyphenated compounds kept whole (case preserved)."""
    return _WORD.findall(unicodedata.normalize("NFKC", text))


class Acronyms:
    """Acronym ⇄ long form, both as stem tuples."""

    def __init__(self, pairs: Iterable[tuple[str, str]] = ()) -> None:
        self.short_to_long: dict[str, tuple[str, ...]] = {}
        self.long_to_short: dict[tuple[str, ...], str] = {}
        self.plain: set[str] = set()  # folded acronyms, for plural folding
        for short, long in pairs:
            self.add(short, long)

    def add(self, short: str, long: str) -> None:
        key = fold(short)
        if key.endswith("s") and key[:-1] in self.plain:
            return
        expansion = tuple(s for s, _ in analyze_words(words(long), None) if s not in STOPWORDS)
        if not expansion or key in self.short_to_long:
            return
        self.short_to_long[key] = expansion
        self.long_to_short.setdefault(expansion, key)
        self.plain.add(key)

    @classmethod
    def load(cls, path: str | Path | None = None) -> Acronyms:
        if path:
            text = Path(path).read_text(encoding="utf-8")
        else:
            text = resources.files("newsletter").joinpath("data/acronyms.tsv").read_text("utf-8")
        table = cls()
        for line in text.splitlines():
            if line.strip() and not line.startswith("#") and "\t" in line:
                short, long = line.split("\t", 1)
                table.add(short.strip(), long.strip())
        return table

    def learn(self, text: str) -> int:
        """Add pairs a paper defines as "Long Form (LF)"; returns how many were new."""
        added = 0
        for m in definitions(text):
            short = m.group(2)
            letters = short[:-1] if short.endswith("s") and len(short) > 2 else short
            caps = [c for c in letters if c.isupper() or c.isdigit()]
            parts = [p for w in m.group(1).split() for p in _HYPHENS.split(w) if p]
            n = len(caps)
            if n < 2 or len(parts) < n:
                continue
            candidate = parts[-n:]
            if all(p[0].casefold() == c.casefold() for p, c in zip(candidate, caps, strict=True)):
                key = fold(letters)
                if key not in self.short_to_long and not key.isdigit():
                    self.add(letters, " ".join(candidate))
                    added += 1
        return added


def definitions(text: str) -> Iterator[re.Match[str]]:
    """What ``_DEFINITION.finditer(text)`` finds, about 20 times faster: searched from the
    left, the pattern tried up to eight words from every word of an abstract, and
    opening an edition reads every paper. Here each candidate parenthesis is found
    first; the words before it (read backwards, at most eight, as the pattern allows)
    give the only place a match ending there can start, and the pattern is matched
    there. A match never spans a parenthesis, so the matches follow one another as
    ``finditer``'s do (a test compares the two on generated text)."""
    backwards = ""
    for paren in _PARENTHESIS.finditer(text):
        if not backwards:
            backwards = text[::-1]
        run = _WORDS_BEFORE.match(backwards, len(text) - paren.start())
        if run is None:
            continue
        m = _DEFINITION.match(text, len(text) - run.end(), paren.end())
        if m is not None:
            yield m


def analyze_words(surface: list[str], acronyms: Acronyms | None) -> list[tuple[str, str]]:
    """(stem, raw) per token: hyphen parts split, acronym plurals folded."""
    out: list[tuple[str, str]] = []
    for w in surface:
        for part in _HYPHENS.split(w):
            if not part:
                continue
            raw = fold(part)
            # "GNNs", "ViTs", "LLMs": an acronym's plural is the acronym
            if (acronyms and raw.endswith("s") and raw[:-1] in acronyms.plain
                    and any(c.isupper() for c in part[1:])):
                raw = raw[:-1]
            out.append((raw if acronyms and raw in acronyms.plain else stem(raw), raw))
    return out


def stems(text: str, acronyms: Acronyms | None) -> tuple[str, ...]:
    """Content stems of ``text`` (stop words out): the matching key of a topic."""
    return tuple(s for s, r in analyze_words(words(text), acronyms) if r not in STOPWORDS)


def raw_tokens(text: str) -> tuple[str, ...]:
    """Folded tokens, stop words kept, no stemming: the key of an "exact phrase"."""
    return tuple(fold(p) for w in words(text) for p in _HYPHENS.split(w) if p)


def joined_compounds(text: str) -> list[str]:
    """Hyphenated compounds written as one word (``pre-training`` → ``pretrain``)."""
    return [stem(fold(_HYPHENS.sub("", w))) for w in words(text) if _HYPHENS.search(w)]
