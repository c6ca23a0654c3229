"""A field's vocabulary: broad areas and the words that signal them.

"-medical" should exclude a paper about bone suppression in chest X-rays even though
it never says "medical": it says chest X-ray, pulmonary, clinical. The bundled table
(``newsletter/data/related_terms.tsv``, editable, or your own via ``[ranking]
related_terms``) lists, per area, the names a subscriber would write and the terms
papers of that area use. Only a profile term that *is* an area name is expanded, so
"medical image segmentation" stays the precise phrase it is.

Terms are kept as text here and analysed by the ranker with the same acronym table as
the papers, so "MRI" and "magnetic resonance imaging" meet like every other term.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

from newsletter.errors import ConfigError
from newsletter.ranking.text import fold


@dataclass(frozen=True, slots=True)
class Area:
    name: str  # the first name on its line, for messages
    terms: tuple[str, ...]  # related terms, as written in the table


class RelatedTerms:
    """Area name (folded) → its related terms."""

    def __init__(self, areas: dict[str, Area] | None = None) -> None:
        self.areas: dict[str, Area] = dict(areas or {})

    def area(self, text: str) -> Area | None:
        return self.areas.get(" ".join(fold(text).replace("-", " ").split()))

    @classmethod
    def parse(cls, text: str, origin: str) -> RelatedTerms:
        areas: dict[str, Area] = {}
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip() or line.startswith("#"):
                continue
            if "\t" not in line:
                raise ConfigError(f"{origin}:{number}: expected area names<TAB>related terms")
            names_text, terms_text = line.split("\t", 1)
            names = [n.strip() for n in names_text.split(",") if n.strip()]
            terms = tuple(t.strip() for t in terms_text.split(",") if t.strip())
            if not names or not terms:
                raise ConfigError(f"{origin}:{number}: an area needs a name and related terms")
            area = Area(names[0], terms)
            for name in names:
                areas.setdefault(" ".join(fold(name).replace("-", " ").split()), area)
        return cls(areas)

    @classmethod
    def load(cls, path: str | Path | None = None) -> RelatedTerms:
        return _load(str(path) if path else "")


@lru_cache(maxsize=8)
def _load(path: str) -> RelatedTerms:
    if path:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"[ranking] related_terms: cannot read {path}: "
                              f"{exc.strerror}") from None
        return RelatedTerms.parse(text, path)
    data = resources.files("newsletter").joinpath("data/related_terms.tsv")
    return RelatedTerms.parse(data.read_text("utf-8"), "related_terms.tsv")
