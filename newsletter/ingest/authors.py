"""Author lists as feeds write them: split at the top level, affiliations kept apart.

arXiv RSS writes ``Aleteia Araujo (University of Brasilia Brazil, The University
of Melbourne Australia), Breno Costa (...)`` in one ``dc:creator``. Splitting on
every comma cuts the affiliation into fake authors; leaving the parentheses in
the name makes ``author:"Aleteia Araujo"`` profiles miss. So commas and
semicolons split only outside brackets, and a trailing parenthetical is an
affiliation, stored beside the name rather than in it.
"""

from __future__ import annotations

import re

_OPEN = {"(": ")", "[": "]", "{": "}"}
_CLOSE = {v: k for k, v in _OPEN.items()}
# " and " (or " & ") between names, looked for only where a run of space starts: looked
# for from every space of a run, 40 KB of spaces in one author string took 12 s
_AND = re.compile(r"(?<!\s)\s+(?:and|&)\s+", re.IGNORECASE)
_LEADING_AND = re.compile(r"^(?:and|&)\s+", re.IGNORECASE)
_SECOND_WORD = re.compile(r"^\s*\S+\s+(?=\S)")  # up to where the second word starts


def _top_level_split(text: str, seps: str) -> list[str] | None:
    """``text`` cut at ``seps`` outside brackets; None when the brackets do not balance."""
    parts: list[str] = []
    stack: list[str] = []
    start = 0
    for i, ch in enumerate(text):
        if ch in _OPEN:
            stack.append(_OPEN[ch])
        elif ch in _CLOSE:
            if not stack or stack[-1] != ch:
                return None
            stack.pop()
        elif ch in seps and not stack:
            parts.append(text[start:i])
            start = i + 1
    if stack:
        return None
    parts.append(text[start:])
    return parts


def _split_and(piece: str) -> list[str]:
    """``"A. Smith and B. Jones"`` -> two names: the last "and" outside brackets, when
    both sides have at least two words (so "Tom and Jerry Lab" stays one), then the
    same again on what is left of it. One pass over the "and"s, each one's bracket
    depth counted from the one before: counted from the start for every "and", and
    split again by recursion, an author list thousands of "and"s long (a physics
    collaboration's) took seconds and then exceeded the recursion limit."""
    cuts: list[re.Match[str]] = []  # the "and"s outside brackets, in order
    balance, at = 0, 0
    for m in _AND.finditer(piece):
        balance += (sum(piece.count(c, at, m.start()) for c in _OPEN)
                    - sum(piece.count(c, at, m.start()) for c in _CLOSE))
        at = m.start()
        if balance == 0:
            cuts.append(m)
    # what is left keeps two words while it reaches past the second word's start
    second = _SECOND_WORD.search(piece)
    names: list[str] = []
    end = len(piece)
    for m in reversed(cuts):
        if m.end() > end:  # (not within what is left)
            continue
        right = piece[m.end():end]
        if second is None or second.end() >= m.start() or len(right.split(None, 1)) < 2:
            break
        names.append(right)
        end = m.start()
    names.append(piece[:end])
    return names[::-1]


def name_and_affiliations(raw: str) -> tuple[str, list[str]]:
    """``"Ada Lovelace (Univ. X, Lab Y)"`` -> ``("Ada Lovelace", ["Univ. X, Lab Y"])``.

    Only trailing bracketed groups are affiliations; a nickname in the middle
    (``Thomas (Tom) Smith``) stays part of the name. The groups are read from the end
    once, and what is left of the name is an index, not a copy: copying it again for
    each group, "A (x)(x)(x)..." (a broken or hostile feed's) took 17 s for 1.2 MB.
    """
    name = raw.strip()
    found: list[str] = []  # the affiliations, last first
    end = len(name)  # the name is name[:end]
    while end and name[end - 1] in ")]":
        close = name[end - 1]
        opener = _CLOSE[close]
        depth = 0
        for i in range(end - 1, -1, -1):
            if name[i] == close:
                depth += 1
            elif name[i] == opener:
                depth -= 1
                if depth == 0:
                    break
        else:
            break  # unbalanced: leave the text as it is
        rest = i
        while rest and name[rest - 1].isspace():
            rest -= 1
        if not rest:  # nothing but brackets: not a name with an affiliation
            break
        inner = name[i + 1 : end - 1].strip()
        if inner:
            found.append(inner)
        end = rest
    return name[:end].strip().rstrip(",;").strip(), found[::-1]


def split_author_list(text: str) -> list[str]:
    """One author string cut into one string per author, affiliations still attached."""
    parts = _top_level_split(text, ",;")
    if parts is None:  # unbalanced brackets: fall back to a plain split, losing nothing
        parts = re.split(r"[,;]", text)
    out: list[str] = []
    for part in parts:
        part = _LEADING_AND.sub("", part.strip())  # "A, B, and C"
        out.extend(p.strip() for p in _split_and(part) if p.strip())
    return out


def split_authors(text: str) -> list[tuple[str, list[str]]]:
    """Every (name, affiliations) in one author string, in order; empty names dropped."""
    pairs = (name_and_affiliations(piece) for piece in split_author_list(text))
    return [(name, affs) for name, affs in pairs if name]
