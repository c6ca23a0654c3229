"""What a keyword profile picks, for the preferences page: off the event loop and
cached.

Building the ranking corpus over every stored paper is the expensive part, and it
is the same for everyone until a paper arrives or changes; ranking one profile
against it is cheap, and the same keyword set gives the same picks. So the
corpus is cached per "papers version" (count and newest change), the picks per
(version, keyword set), and both are computed in a worker thread so one-click
unsubscribes never wait behind a ranking.

A subscriber's votes change their picks (learned weights, voted papers never shown
again), so for someone with votes the picks are ranked with their votes and cached
per (version, keyword set, digest of their votes): a vote, an undo or a removed
learned term is a new key, and undoing back to the same votes finds the old picks.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections import OrderedDict
from typing import Any

import anyio
from sqlalchemy import func, select

from newsletter.app import App
from newsletter.ranking.selection import Selection
from newsletter.ranking.view import pick_dicts
from newsletter.store import votes as votes_mod
from newsletter.store.models import Entry, utcnow
from newsletter.store.queries import candidate_entries


class PicksCache:
    def __init__(self, app: App, size: int = 256, limit: int = 5) -> None:
        self.app, self.size, self.limit = app, size, limit
        self._lock = threading.Lock()
        self._selection: tuple[Any, Selection] | None = None
        self._picks: OrderedDict[tuple[Any, str, str | None], list[dict[str, Any]]] = (
            OrderedDict())
        self.hits = self.misses = 0

    def _version(self) -> tuple[Any, ...]:
        with self.app.reading() as s:
            row = s.execute(select(func.count(Entry.id), func.max(Entry.updated_at),
                                   func.max(Entry.arrived_at))).one()
        return (int(row[0] or 0), row[1], row[2], dt.date.today())

    def _compute(self, keywords: str, subscriber_id: int | None = None) -> list[
            dict[str, Any]]:
        """The picks of ``keywords``; with ``subscriber_id``, as that subscriber's
        votes change them (the same as without when they have none)."""
        version = self._version()
        taught = None
        if subscriber_id is not None:
            with self.app.reading() as s:
                taught = votes_mod.digest(s, subscriber_id)
        key = (version, " ".join(keywords.split()).lower(), taught)
        with self._lock:
            found = self._picks.get(key)
            if found is not None:
                self._picks.move_to_end(key)
                self.hits += 1
                return found
            self.misses += 1
            if self._selection is None or self._selection[0] != version:
                with self.app.reading() as s:
                    rows = candidate_entries(s, since=None, until=utcnow())
                    selection = Selection.build(self.app.settings.ranking, rows,
                                                dt.date.today())
                self._selection = (version, selection)
                self._picks.clear()
            selection = self._selection[1]
            who: Any = 0
            if taught is not None and subscriber_id is not None:
                with self.app.reading() as s:
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
