"""Logging for the long-running commands: text for a terminal, JSON lines for a
collector (``--log-format json`` or ``[log] format = "json"``).

A JSON line carries ``ts``, ``level``, ``logger``, ``msg`` and whatever structured
fields the caller attached (edition, subscriber id, outcome, seconds, ...). A
subscriber's address is dropped unless ``[log] include_address`` is set (the ``email``
field, and any address written in ``msg``): logs are shipped to places with weaker
access control than the database.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import sys
from typing import Any, TextIO

from newsletter.config import LogConfig
from newsletter.plaintext import json_text, visible

ADDRESS = re.compile(r"[^\s<>'\"(),;:@]+@[^\s<>'\"(),;:]+")  # an address in running text
FIELDS = ("edition", "subscriber", "email", "outcome", "seconds", "attempts", "error",
          "slot", "job", "papers", "new", "updated", "sent", "failed", "deferred", "due")


class JsonFormatter(logging.Formatter):
    def __init__(self, include_address: bool = False) -> None:
        super().__init__()
        self.include_address = include_address

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key in FIELDS:
            value = record.__dict__.get(key)
            if value is not None:
                data[key] = value
        if not self.include_address:
            data.pop("email", None)
            data["msg"] = ADDRESS.sub("<address>", data["msg"])
        if record.exc_text:  # first: a filter may have rewritten it (web.logs redacts)
            data["exc"] = record.exc_text
        elif record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        return json_text(json.dumps(data, ensure_ascii=False, default=str))


class TextFormatter(logging.Formatter):
    """One line a record (a traceback follows on its own lines): what the message
    quotes from outside (a feed's id or source, a subscriber's name) may hold a line
    break, which forged a record of its own, or an escape sequence for the operator's
    terminal; those characters are written out as escapes (``plaintext.visible``)."""

    def __init__(self, include_address: bool = False) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")
        self.include_address = include_address

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's
        # (a captured warning's text ends in a line break of its own)
        return visible(super().formatMessage(record).rstrip("\n"), lines=False)

    def format(self, record: logging.LogRecord) -> str:
        # A traceback made before this formatter saw the record (the web's
        # token-redacting filter fills ``exc_text`` itself) gets the same escapes.
        saved = record.exc_text
        if saved:
            record.exc_text = visible(saved)
        try:
            line = super().format(record)
        finally:
            if saved:
                record.exc_text = saved
        address = record.__dict__.get("email")
        return f"{line} <{address}>" if self.include_address and address else line

    def formatException(self, ei: Any) -> str:  # noqa: N802 - logging's
        """The traceback on its own lines, its text (an exception quoting a feed or a
        server's answer) with the same escapes."""
        return visible(super().formatException(ei))

    def formatStack(self, stack_info: str) -> str:  # noqa: N802 - logging's
        return visible(super().formatStack(stack_info))


def configure_logging(config: LogConfig, fmt: str | None = None,
                      stream: TextIO | None = None) -> logging.Handler:
    """Send every log record at ``[log] level`` and above to stderr, as text or JSON
    (``fmt`` overrides ``[log] format``). Replaces handlers set before, so a command
    never prints a line twice."""
    fmt = fmt or config.format
    if fmt not in ("text", "json"):
        from newsletter.errors import InputError

        raise InputError(f"--log-format: expected text or json, got {fmt!r}")
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter(config.include_address) if fmt == "json"
                         else TextFormatter(config.include_address))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(config.level.upper())
    # Alembic says "Context impl SQLiteImpl" on every start: noise unless debugging.
    logging.getLogger("alembic").setLevel(
        logging.DEBUG if config.level == "debug" else logging.WARNING)
    logging.captureWarnings(True)  # library warnings become log lines too, not raw text
    return handler
