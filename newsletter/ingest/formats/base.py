"""The source interface: bytes in, normalized papers out.

A source never touches the network or the database. Fetching (``fetch.py``)
and storing (``ingest.py``) are separate, so every format is tested on recorded
payloads and the same parser serves a URL, a file and a configured source.
"""

from __future__ import annotations

from typing import ClassVar, Protocol

from newsletter.ingest.papers import Paper


class Source(Protocol):
    """One input format."""

    kind: ClassVar[str]
    """The name used in ``[[sources]] kind`` and in messages."""

    def sniff(self, text: str) -> bool:
        """True when ``text`` is in this format (decided from content, not file name)."""
        ...

    def parse(self, text: str, origin: str) -> list[Paper]:
        """Every paper in ``text``; raise ``SourceError`` naming ``origin`` and the spot."""
        ...
