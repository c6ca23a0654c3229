"""Shared JSON helpers: strict parsing with line numbers, lenient field access."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from newsletter.errors import SourceError
from newsletter.ingest.authors import split_author_list
from newsletter.ingest.papers import MAX_COUNT


def load_json(text: str, origin: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise SourceError(
            f"{origin}:{exc.lineno}", f"invalid JSON at column {exc.colno}: {exc.msg}"
        ) from None
    except RecursionError:  # arrays or objects nested thousands deep: no feed is
        raise SourceError(origin, "invalid JSON: nested too deeply") from None


def load_jsonl(text: str, origin: str) -> list[tuple[int, Any]]:
    """(line number, value) for each non-blank line."""
    out: list[tuple[int, Any]] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            out.append((lineno, json.loads(line)))
        except json.JSONDecodeError as exc:
            raise SourceError(
                f"{origin}:{lineno}", f"invalid JSON at column {exc.colno}: {exc.msg}"
            ) from None
        except RecursionError:
            raise SourceError(f"{origin}:{lineno}", "invalid JSON: nested too deeply") from None
    return out


def first(obj: dict[str, Any], *keys: str) -> Any:
    """The first present, non-empty value among ``keys``."""
    for k in keys:
        v = obj.get(k)
        if v not in (None, "", [], {}):
            return v
    return None


def parse_date(value: Any, where: str, field: str) -> dt.date | None:
    """ISO dates and datetimes (``2025-08-18``, ``2025-08-18T13:00:00.000Z``)."""
    if value in (None, ""):
        return None
    if not isinstance(value, str):
        raise SourceError(where, f"field {field!r}: expected a date string, got {value!r}")
    v = value.strip()
    try:
        if len(v) == 10:
            return dt.date.fromisoformat(v)
        return dt.datetime.fromisoformat(v.replace("Z", "+00:00")).date()
    except ValueError:
        raise SourceError(
            where, f"field {field!r}: expected an ISO date like 2025-08-18, got {value!r}"
        ) from None


def as_int(value: Any, where: str, field: str) -> int | None:
    if value in (None, ""):
        return None
    if isinstance(value, bool):
        raise SourceError(where, f"field {field!r}: expected a number, got {value!r}")
    try:
        number = int(value)
    except (TypeError, ValueError, OverflowError):  # (1e999 is infinite)
        raise SourceError(where, f"field {field!r}: expected a number, "
                                 f"got {str(value)[:40]!r}") from None
    if abs(number) > MAX_COUNT:
        raise SourceError(where, f"field {field!r}: {str(value)[:40]} is out of range "
                                 f"(at most {MAX_COUNT:,})")
    return number


def as_str(value: Any, where: str, field: str, *, numbers: bool = False) -> str:
    """Text, strictly: ``{"title": 5}`` is an error naming the field and the record,
    not a paper titled "5". ``numbers`` admits a number where one is a fair spelling
    (an arXiv id written as 2401.12345)."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if numbers and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    raise SourceError(where, f"field {field!r}: expected text, got "
                             f"{type(value).__name__} {json.dumps(value)[:40]}")


def as_names(value: Any, where: str, field: str) -> list[str]:
    """Authors as strings, objects with ``name``, or one comma-separated string."""
    if value in (None, ""):
        return []
    if isinstance(value, str):  # "A (Univ. X, Lab Y), B": split outside brackets only
        return split_author_list(value)
    if not isinstance(value, list):
        raise SourceError(where, f"field {field!r}: expected a list, got {type(value).__name__}")
    names = []
    for item in value:
        if isinstance(item, dict):
            item = item.get("name") or item.get("user", {}).get("fullname")
        if isinstance(item, str) and item.strip():
            names.append(item)
    return names
