"""The keyword-profile language subscribers write.

    state space models, "mixture of experts", diffusion^2, -medical, author:"Yann LeCun"

* Terms are separated by commas or new lines.
* A term of several words is a topic, matched as a phrase after stemming and
  hyphen folding (``state-space model`` matches ``state space models``).
* ``"quotes"`` force an exact phrase: words in order, no stemming.
* ``-term`` excludes: a paper that matches it is never picked.
* ``term^2`` weights a term (0 < weight <= 10; default 1).
* ``author:"Name"`` matches an author name (any order of given/family names).

Parse errors name the term and what is wrong, because the person typing the
profile is the one who can fix it.

The language is a format of stored data, like the address rules in ``addresses``: the
store checks every profile it keeps (an import names the bad line), the ranking
matches them, so it lives beside both stages rather than inside either.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Literal

from newsletter.errors import ProfileError

MAX_TERMS = 500
MAX_TERM_CHARS = 200
# A profile as a person writes one (a sign-up form, an import, the console): real ones
# are a few hundred characters. Unbounded, one form post of a megabyte was stored, and
# kept in the parser's caches at several megabytes a post.
MAX_PROFILE_CHARS = 10_000
_PLAIN_SPLIT = re.compile(r"[,\n;]")
PROFILE_CACHE = 65_536  # parsed profiles kept: an edition's plan and render share one parse
TERM_CACHE = 500_000  # parsed terms kept: a million profiles share a few thousand terms

TermKind = Literal["topic", "exact", "author"]


@dataclass(frozen=True, slots=True)
class Term:
    text: str
    kind: TermKind = "topic"
    weight: float = 1.0
    exclude: bool = False
    _hash: int = field(default=0, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Terms key the ranker's caches a million times per edition: hash once.
        object.__setattr__(self, "_hash", hash((self.text, self.kind, self.weight,
                                                self.exclude)))

    def __hash__(self) -> int:
        return self._hash

    def __str__(self) -> str:
        body = f'"{self.text}"' if self.kind == "exact" else self.text
        if self.kind == "author":
            body = f'author:"{self.text}"'
        prefix = "-" if self.exclude else ""
        suffix = f"^{self.weight:g}" if self.weight != 1.0 else ""
        return f"{prefix}{body}{suffix}"


@dataclass(frozen=True, slots=True)
class Profile:
    terms: tuple[Term, ...] = ()

    @property
    def positive(self) -> tuple[Term, ...]:
        return tuple(t for t in self.terms if not t.exclude)

    @property
    def negative(self) -> tuple[Term, ...]:
        return tuple(t for t in self.terms if t.exclude)

    def __str__(self) -> str:
        return ", ".join(str(t) for t in self.terms)


def _split(text: str) -> list[str]:
    """Split on commas/new lines outside double quotes."""
    parts: list[str] = []
    buf: list[str] = []
    quoted = False
    for ch in text:
        if ch == '"':
            quoted = not quoted
        if ch in ",\n;" and not quoted:
            parts.append("".join(buf))
            buf = []
            continue
        buf.append(ch)
    if quoted:
        raise ProfileError(f'unclosed quote in profile: {"".join(buf).strip()!r}')
    parts.append("".join(buf))
    return [p.strip() for p in parts if p.strip()]


def weight_at(body: str) -> int:
    """Where the term's weight begins: the first ``^`` followed by nothing but one run
    of characters other than spaces and commas, and spaces (what the pattern
    ``\\^\\s*([^\\s,]*)\\s*$`` finds first); -1 when there is none. Found in one pass
    from the end: that pattern, searched from each ``^`` in turn, took time growing
    with the square of the term (a sign-up of 40,000 ``^`` held the server 38 s). A
    hypothesis test compares the two."""
    end = len(body.rstrip())
    start = end
    while start > 0 and not body[start - 1].isspace() and body[start - 1] != ",":
        start -= 1  # the last run: what the weight would be
    while start > 0 and body[start - 1].isspace():
        start -= 1  # the spaces before it, which may follow the ^
    return body.find("^", max(start - 1, 0))


def _term(raw: str) -> Term:
    body = raw
    weight = 1.0
    at = weight_at(body)
    if at >= 0:
        try:
            weight = float(body[at + 1:].strip())
        except ValueError:
            raise ProfileError(
                f"term {raw!r}: weight after ^ must be a number, like diffusion^2"
            ) from None
        if not 0 < weight <= 10:
            raise ProfileError(f"term {raw!r}: weight must be above 0 and at most 10")
        body = body[:at].rstrip()
    exclude = body.startswith("-")
    if exclude:
        body = body[1:].lstrip()
    kind: TermKind = "topic"
    if body.lower().startswith("author:"):
        kind = "author"
        body = body[len("author:") :].strip()
    if len(body) >= 2 and body.startswith('"') and body.endswith('"'):
        body = body[1:-1].strip()
        kind = "exact" if kind == "topic" else kind
    elif '"' in body:
        raise ProfileError(f"term {raw!r}: quotes must wrap the whole term")
    body = " ".join(body.split())
    if not re.search(r"\w", body):
        what = "author name" if kind == "author" else "term"
        raise ProfileError(f"term {raw!r}: empty {what}")
    if len(body) > MAX_TERM_CHARS:
        raise ProfileError(f"term {body[:30]!r}...: longer than {MAX_TERM_CHARS} characters")
    return Term(body, kind, weight, exclude)


def _parts(text: str) -> list[str]:
    """The raw terms of a profile. Without quotes a regex split gives what ``_split``
    gives (the hot path at a million subscribers); with quotes, ``_split`` decides."""
    if '"' in text:
        return _split(text)
    return [p for p in (q.strip() for q in _PLAIN_SPLIT.split(text)) if p]


def _identified(raw: str) -> tuple[Term, tuple[str, str, bool]]:
    """One term and its identity for de-duplication."""
    t = _term(raw)
    return t, (t.text.casefold(), t.kind, t.exclude)


_parsed_term = lru_cache(maxsize=TERM_CACHE)(_identified)  # most terms are shared


@lru_cache(maxsize=PROFILE_CACHE)
def profile_terms(text: str) -> tuple[Term, ...]:
    """The one profile parser: every caller (ranking, explanations, the preferences
    page, and ``checked_profile`` for what people write) goes through here, so they
    cannot disagree. Raises ``ProfileError`` saying which term is wrong and why."""
    return _terms(text, _parsed_term)


def checked_profile(text: str) -> tuple[Term, ...]:
    """A profile a person wrote, before it is stored: at most ``MAX_PROFILE_CHARS``,
    parsed as ``profile_terms`` parses it but kept in none of its caches (an outsider
    may post any number of profiles; the ranking later parses the stored ones)."""
    if len(text) > MAX_PROFILE_CHARS:
        raise ProfileError(f"profile has {len(text):,} characters: at most "
                           f"{MAX_PROFILE_CHARS:,}")
    return _terms(text, _identified)


def _terms(text: str, parse: Callable[[str], tuple[Term, tuple[str, str, bool]]]
           ) -> tuple[Term, ...]:
    parts = _parts(text or "")
    if len(parts) > MAX_TERMS:
        raise ProfileError(f"profile has {len(parts)} terms: at most {MAX_TERMS}")
    found = [parse(p) for p in parts]
    if len({key for _, key in found}) == len(found):
        return tuple(t for t, _ in found)
    seen: dict[tuple[str, str, bool], Term] = {}
    for t, key in found:  # a repeated term keeps its largest weight, at its first place
        if key not in seen or seen[key].weight < t.weight:
            seen[key] = t
    return tuple(seen.values())


def parse_profile(text: str) -> Profile:
    """Parse a profile; raise ``ProfileError`` saying which term is wrong and why."""
    return Profile(profile_terms(text))
