"""What a keyword profile picks, for the preferences page: off the event loop and
cached.

Building the ranking corpus over the recent papers (``[ranking] recent_papers``)
is the expensive part, and it is the same for everyone until a paper arrives or
changes; ranking one profile against it is cheap, and the same keyword set gives
the same picks. So the corpus is cached per "papers version" (the newest change,
and the day), the picks per (version, keyword set), and both are computed off the
server's event loop (a render process, or a worker thread) so one-click
unsubscribes never wait behind a ranking. A voter's learned terms and a vote's
lesson read the same kept corpus.

A subscriber's votes change their picks (learned weights, voted papers never shown
again), so for someone with votes the picks are ranked with their votes and cached
per (version, keyword set, digest of their votes): a vote, an undo or a removed
learned term is a new key, and undoing back to the same votes finds the old picks.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from typing import Any

import anyio

from newsletter.app import App
from newsletter.ranking.feedback import Learned
from newsletter.ranking.view import VoteOutcome, pick_dicts
from newsletter.service.ranking import RecentSelection, papers_version, subscriber_learned
from newsletter.service.votes import Cast, vote_lesson
from newsletter.store import votes as votes_mod
from newsletter.store.models import Subscriber


class PicksCache:
    """The picks of keyword sets, and what voters' votes teach, read from one kept
    ranking of the recent papers (``service.ranking.RecentSelection``)."""

    def __init__(self, app: App, size: int = 256, limit: int = 5) -> None:
        self.app, self.size, self.limit = app, size, limit
        self.recent = RecentSelection(app.settings.ranking)
        self._lock = threading.Lock()
        self._version: tuple[Any, ...] | None = None
        self._picks: OrderedDict[tuple[Any, str, str | None], list[dict[str, Any]]] = (
            OrderedDict())
        self.hits = self.misses = 0

    def _compute(self, keywords: str, subscriber_id: int | None = None) -> list[
            dict[str, Any]]:
        """The picks of ``keywords``; with ``subscriber_id``, as that subscriber's
        votes change them (the same as without when they have none)."""
        with self.app.reading() as s:
            version = papers_version(s)
            taught = votes_mod.digest(s, subscriber_id) if subscriber_id is not None else None
        key = (version, " ".join(keywords.split()).lower(), taught)
        with self._lock:
            found = self._picks.get(key)
            if found is not None:
                self._picks.move_to_end(key)
                self.hits += 1
                return found
            self.misses += 1
            with self.app.reading() as s:
                version, selection = self.recent.get(s)
                if version != self._version:  # new papers or a new day: new picks
                    self._version = version
                    self._picks.clear()
                    key = (version, *key[1:])
                who: Any = 0
                if taught is not None and subscriber_id is not None:
                    selection = selection.for_subscriber(
                        subscriber_id, votes_mod.vote_history(s, subscriber_id))
                    who = subscriber_id
            picks: list[dict[str, Any]] = []
            for chunk in selection.ranker.rank(iter([(who, keywords)]), sent=selection.sent,
                                               k=self.limit):
                picks = pick_dicts(selection, chunk, 0, keywords)
            self._picks[key] = picks
            while len(self._picks) > self.size:
                self._picks.popitem(last=False)
            return picks

    def learned(self, subscriber_id: int) -> list[Learned]:
        """What the subscriber's votes teach (their preferences page), none when they
        have no votes or no longer exist."""
        with self.app.reading() as s:
            sub = s.get(Subscriber, subscriber_id)
            if sub is None or not votes_mod.digest(s, subscriber_id):
                return []
            return subscriber_learned(self.app.settings.ranking, s, sub, self.recent)

    def lesson(self, cast: Cast) -> VoteOutcome:
        """What a vote just stored taught, in words (the thank-you page)."""
        with self.app.reading() as s:
            return vote_lesson(self.app.settings.ranking, s, cast, self.recent)

    async def picks(self, keywords: str, limiter: Any = None,
                    subscriber_id: int | None = None) -> list[dict[str, Any]]:
        if not keywords.strip():
            return []
        return await anyio.to_thread.run_sync(self._compute, keywords, subscriber_id,
                                              limiter=limiter)

    def warm(self) -> None:
        """Build the corpus now (server start), not on the first visitor's request."""
        try:
            self._compute("warm up")
        except Exception:  # noqa: BLE001 - warming is an optimisation; requests retry it
            logging.getLogger("newsletter.web").exception("warming the picks cache failed")
