"""The source interface: text in, normalized papers out.

A source never touches the network or the database. Fetching (``fetch.py``)
and storing (``run.py``) are separate, so every format is tested on recorded
payloads and the same parser serves a URL, a file and a configured source.

One bad item should not cost the day: given a ``skipped`` list, a source keeps
every usable item and records each unusable one (position, id, reason) there.
Without the list (``ingest --strict``) the first bad item is an error. A text
that is not in the format at all is an error either way.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import ClassVar, Protocol, TypeVar

from newsletter.errors import SourceError
from newsletter.ingest.papers import Paper
from newsletter.plaintext import visible

T = TypeVar("T")


@dataclass(frozen=True)
class Skipped:
    """One unusable item of a usable source."""

    position: int  # 1-based, in the source's order
    ident: str  # the item's own id or link, "" when it has none
    reason: str

    def __str__(self) -> str:
        """One line, whatever the item's id holds (a feed's id may carry a newline, or
        an escape sequence for the terminal the line is printed in: ``plaintext``)."""
        shown = visible(" ".join(self.ident.split()), lines=False)
        ident = f" ({shown})" if shown else ""
        return f"item {self.position}{ident}: {visible(self.reason, lines=False)}"


class Source(Protocol):
    """One input format."""

    kind: ClassVar[str]
    """The name used in ``[[sources]] kind`` and in messages."""

    def sniff(self, text: str) -> bool:
        """True when ``text`` is in this format (decided from content, not file name)."""
        ...

    def parse(self, text: str, origin: str, skipped: list[Skipped] | None = None) -> list[Paper]:
        """Every usable paper in ``text``; unusable items go to ``skipped`` (or raise
        ``SourceError`` naming ``origin`` and the spot when ``skipped`` is None)."""
        ...


def collect(
    items: Iterable[T],
    build: Callable[[int, T], Paper],
    skipped: list[Skipped] | None,
    ident: Callable[[T], str] = lambda _: "",
) -> list[Paper]:
    """``build(position, item)`` for each item; a ``SourceError`` from one item
    skips that item when ``skipped`` is a list, and propagates when it is None."""
    out: list[Paper] = []
    for position, item in enumerate(items, 1):
        try:
            out.append(build(position, item))
        except SourceError as exc:
            if skipped is None:
                raise
            try:
                name = ident(item)
            except Exception:  # noqa: BLE001 - an id is a courtesy; a broken one is not fatal
                name = ""
            skipped.append(Skipped(position, name, exc.problem))
    return out
