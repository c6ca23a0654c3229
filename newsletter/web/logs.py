"""Tokens are secrets (a webhook token lets anyone suppress subscribers; a link token
acts for one subscriber), so no log line prints one: not the access log, not an error
with its traceback, not a line some library writes.

``RedactTokens`` is the one filter that does it. ``redact_logs`` puts it on every
handler of the root logger (where every logger's records end up, uvicorn's
included), so a logger added later is covered without anyone remembering to."""

from __future__ import annotations

import logging
import re

# A token in a URL path (link tokens, webhook tokens, vote links) ...
SECRET_PATH = re.compile(
    r"(/(?:webhooks/[^/\s]+|unsubscribe|confirm|preferences|view|feed|data|erase"
    r"|feedback/[a-z]+)/)"
    r"[^/\s?#\"'<>]+")
# ... and a signed link token wherever it stands (a mailto subject, an exception's text):
# base-36 ids, optionally a nonce, and a 128-bit MAC in base64url.
SIGNED_TOKEN = re.compile(
    r"(?<![0-9A-Za-z_.-])[0-9a-z]{1,13}(?:-[0-9a-z]{1,13}){0,7}(?:\.[0-9a-z]{1,16})?"
    r"\.[A-Za-z0-9_-]{22}(?![A-Za-z0-9_-])")
# Structured fields the JSON log format copies from a record (observe.logs.FIELDS).
TEXT_FIELDS = ("error", "job", "email")


def redact(text: str) -> str:
    return SIGNED_TOKEN.sub("…", SECRET_PATH.sub(r"\1…", text))


class RedactTokens(logging.Filter):
    """Rewrites a record before any formatter sees it: the message (arguments merged
    in), the traceback text, the stack and the structured text fields."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a broken format string: leave it to the formatter
            message = None
        if message is not None:
            record.msg, record.args = redact(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        for name in TEXT_FIELDS:
            value = record.__dict__.get(name)
            if isinstance(value, str):
                setattr(record, name, redact(value))
        return True


def redact_logs() -> None:
    """Put ``RedactTokens`` on every handler of the root logger (once each)."""
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, RedactTokens) for f in handler.filters):
            handler.addFilter(RedactTokens())
