"""What one email showed, kept with its ledger row (``deliveries.shown``) when it is
sent: the keywords it was ranked for, each pick in order with the profile terms it
matched and the learned terms that lifted it (or, for a "because you liked" fill, the
liked paper's title), the section (matched or trending) and
whether it was a weekly email. View in browser, the archive and the Atom feed render
from this record, so they show what was sent whatever the profile is now.

Compact JSON, not the HTML (a million deliveries a day): the terms are written once
in a table and each pick names them by position; the paper's text comes from
``entries``, which the edition keeps anyway. A typical record is 200-400 bytes.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from newsletter.ranking.engine import Explanation, LearnedHit, section_of

VERSION = 1


@dataclass
class Pick:
    id: str
    matched: list[str] = field(default_factory=list)
    learned: list[tuple[str, int]] = field(default_factory=list)  # (term, papers liked)
    strong: bool = True  # "matched:" (else "related:", a weak match)
    liked: str = ""  # a "because you liked" fill: the liked paper's title


@dataclass
class Shown:
    keywords: str
    picks: list[Pick]
    trending: bool = False
    weekly: bool = False
    gap: bool = False  # a weekdays reader's Monday email: the papers since Friday's

    @property
    def entry_ids(self) -> list[str]:
        return [p.id for p in self.picks]

    def sections(self) -> list[tuple[str, int]]:
        """(section, papers) in order: the term each pick is grouped under, as the
        email's opening line counts them."""
        if self.trending:
            return [("trending", len(self.picks))]
        counts: dict[str, int] = {}
        for p in self.picks:
            key = section_of(p.matched[0]) if p.matched else "other"
            counts[key] = counts.get(key, 0) + 1
        return list(counts.items())

    def why(self, entry_id: str) -> str:
        for p in self.picks:
            if p.id == entry_id:
                return explanation(p).why
        return ""


# One encoder for every record (``json.dumps`` with options makes a new one each call).
_COMPACT = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def encode(keywords: str, entry_ids: Sequence[str],
           explanations: Sequence[Explanation | None], *, trending: bool,
           weekly: bool, gap: bool = False) -> str:
    terms: dict[str, int] = {}
    picks: list[Any] = []
    for eid, ex in zip(entry_ids, explanations, strict=True):
        row: list[Any] = [eid]
        if ex is not None:
            row.append([terms.setdefault(t, len(terms)) for t, _ in ex.matched])
            learned = [[h.term, h.liked] for h in ex.learned if h.value > 0 and h.liked]
            if learned or not ex.strong or ex.because:
                row.append(learned)
            if not ex.strong or ex.because:
                row.append(int(ex.strong))
            if ex.because:
                row.append(ex.because)
        picks.append(row)
    record: dict[str, Any] = {"v": VERSION, "k": keywords, "t": list(terms), "p": picks}
    if trending:
        record["tr"] = 1
    if weekly:
        record["w"] = 1
    if gap:
        record["g"] = 1
    return _COMPACT.encode(record)


def decode(text: str | None) -> Shown | None:
    """The record, or None for a row sent before records were kept (or unreadable)."""
    if not text:
        return None
    try:
        record = json.loads(text)
        terms = record["t"]
        picks = [Pick(row[0], [terms[i] for i in (row[1] if len(row) > 1 else [])],
                      [(t, int(n)) for t, n in (row[2] if len(row) > 2 else [])],
                      strong=len(row) < 4 or bool(row[3]),
                      liked=str(row[4]) if len(row) > 4 else "")
                 for row in record["p"]]
        return Shown(record["k"], picks, bool(record.get("tr")), bool(record.get("w")),
                     bool(record.get("g")))
    except (ValueError, KeyError, IndexError, TypeError):
        return None


def explanation(pick: Pick, features: Any = ()) -> Explanation:
    """The pick's explanation as the email gave it (``why`` says the same words);
    ``features`` highlight the excerpt (from the recorded keywords)."""
    return Explanation(matched=[(t, 0.0) for t in pick.matched], relevance=0.0,
                       popularity=0.0, recency=0.0, features=list(features),
                       learned=[LearnedHit(t, 1.0, n, 0) for t, n in pick.learned],
                       strong=pick.strong, because=pick.liked)
