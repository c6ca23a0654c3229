"""Ingest formats: one module per format behind ``base.Source``; ``detect`` picks one."""

from .arxiv import ArxivSource
from .base import Source
from .dailypapers import DailyPapersSource
from .feed import FeedSource
from .jsonfile import JsonEntriesSource
from .pagedump import PageDumpSource

# Order matters for sniffing: the specific formats before the general ones.
SOURCES: tuple[Source, ...] = (
    DailyPapersSource(),
    JsonEntriesSource(),
    ArxivSource(),
    FeedSource(),
    PageDumpSource(),
)
BY_KIND: dict[str, Source] = {s.kind: s for s in SOURCES}

__all__ = ["SOURCES", "BY_KIND", "Source"]
