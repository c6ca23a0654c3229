"""Ingest formats: one module per format behind ``base.Source``; ``detect`` picks one."""

from newsletter.ingest.formats.arxiv import ArxivSource
from newsletter.ingest.formats.base import Skipped, Source
from newsletter.ingest.formats.dailypapers import DailyPapersSource
from newsletter.ingest.formats.feed import FeedSource
from newsletter.ingest.formats.jsonfeed import JsonFeedSource
from newsletter.ingest.formats.jsonfile import JsonEntriesSource
from newsletter.ingest.formats.pagedump import PageDumpSource

# Order matters for sniffing: the specific formats before the general ones.
SOURCES: tuple[Source, ...] = (
    DailyPapersSource(),
    JsonFeedSource(),
    JsonEntriesSource(),
    ArxivSource(),
    FeedSource(),
    PageDumpSource(),
)
BY_KIND: dict[str, Source] = {s.kind: s for s in SOURCES}

__all__ = ["SOURCES", "BY_KIND", "Source", "Skipped"]
