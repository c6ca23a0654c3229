"""The editions use cases wired as the CLI and the scheduler wire them (the config
sections of ``settings`` and its configured transport), for tests that hold a
Settings: ``run_send(settings, engine, day)`` is what ``newsletter send --yes`` does
after its checks."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from newsletter.config import Settings
from newsletter.delivery.edition import EditionConfig
from newsletter.delivery.preview import PreviewReport
from newsletter.service import editions, preview
from newsletter.transports import Transport, make_transport


def run_send(settings: Settings, engine: Engine, day: dt.date, *,
             transport: Transport | None = None, **kw: Any) -> editions.SendSummary:
    return editions.send(EditionConfig.of(settings), engine, day,
                         transport or make_transport(settings), **kw)


def plan_edition(settings: Settings, engine: Engine, day: dt.date,
                 slot: str = "") -> editions.Planned:
    return editions.plan_edition(EditionConfig.of(settings), engine, day, slot)


def run_preview(settings: Settings, engine: Engine, day: dt.date, out: Path,
                **kw: Any) -> PreviewReport:
    return preview.preview(EditionConfig.of(settings), engine, day, out, **kw)
