"""The application context a command runs in: settings plus a lazily opened database.

Commands receive this object instead of reaching for globals, so tests can run
many independent apps (different databases, configs) in one process.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from newsletter.config import Settings, load_settings
from newsletter.store.db import get_engine, session_scope


@dataclass
class App:
    settings: Settings
    _engine: Engine | None = field(default=None, repr=False)

    @classmethod
    def load(cls, config: str | None = None) -> App:
        return cls(load_settings(config))

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = get_engine(self.settings.database.url)
        return self._engine

    @contextmanager
    def session(self) -> Iterator[Session]:
        with session_scope(self.engine) as s:
            yield s

    @contextmanager
    def reading(self) -> Iterator[Session]:
        """A read-only session: on SQLite it takes no write lock, so pages that only
        read never queue behind (or hold up) the writes of one-click unsubscribes."""
        with session_scope(self.engine, readonly=True) as s:
            yield s
