"""Tokens in URLs are secrets (a webhook token lets anyone suppress subscribers; a
link token acts for one subscriber), so the access log never prints them."""

from __future__ import annotations

import logging
import re

SECRET_PATH = re.compile(
    r"(/(?:webhooks/[^/\s]+|unsubscribe|confirm|preferences|view|feed)/)[^/\s?\"]+")


def redact(text: str) -> str:
    return SECRET_PATH.sub(r"\1…", text)


class RedactTokens(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        record.msg = redact(str(record.msg))
        return True


def redact_access_log() -> None:
    for name in ("uvicorn.access", "uvicorn.error"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactTokens) for f in logger.filters):
            logger.addFilter(RedactTokens())
