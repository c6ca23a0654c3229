"""Subscriber rows: add, bulk import, list, remove, export.

Operator-added subscribers are active at once (the operator vouches for
consent, recorded as ``consent_source``); web sign-ups stay pending until they
confirm. Imports validate every row first and insert in one transaction, so a
bad line 73,412 stores nothing and says which line.
"""

from __future__ import annotations

import csv
import functools
import io
import re
import zoneinfo
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from sqlalchemy import delete, func, insert, select
from sqlalchemy.orm import Session

from newsletter.addresses import clean_header_text, normalize_address
from newsletter.errors import InputError
from newsletter.frequency import check_frequency
from newsletter.plaintext import cleaned
from newsletter.profile import checked_profile
from newsletter.store import lifecycle
from newsletter.store.models import Event, MailReport, Subscriber, SubscriberStatus, utcnow
from newsletter.store.suppressions import refuse_suppressed, suppressed_among

CSV_COLUMNS = ("email", "name", "keywords", "tz", "hour")
IMPORT_COLUMNS = (*CSV_COLUMNS, "status", "frequency")  # an export re-imports as it was
IMPORT_STATUSES = tuple(s.value for s in SubscriberStatus if s != SubscriberStatus.PENDING)


IMPORT_BATCH = 5000  # rows per INSERT while importing
MAX_REPORTED_ROWS = 50  # bad CSV rows listed in one run (all are counted)


def normalize_email(raw: str, *, utf8_local_part: bool = False) -> str:
    """The one address policy (``newsletter.addresses``): punycode domains, a
    non-ASCII local part only where the operator says it can be delivered."""
    return normalize_address(raw, utf8_local_part=utf8_local_part)


def clean_name(name: str) -> str:
    """A display name that cannot break out of its header (no CR/LF or controls)."""
    return clean_header_text(name)[:200]


@functools.cache
def known_zones() -> frozenset[str]:
    """The IANA names this machine knows. A name is looked up in this set, never opened
    as a file: ``ZoneInfo("Europe")`` or a 5,000-character name raises OSError, not the
    errors a caller expects."""
    return frozenset(zoneinfo.available_timezones())


def check_tz(tz: str) -> str:
    tz = tz.strip() or "UTC"
    if tz not in known_zones():
        raise InputError(f"unknown time zone {tz[:64]!r}: expected an IANA name like "
                         "Europe/Paris")
    return tz


def check_hour(hour: str | int | None) -> int:
    """0-23, from an int or from one or two ASCII digits (``int()`` alone would take
    "٣", "+7" or "1_0"; "²" passes ``str.isdigit`` and then fails ``int``)."""
    if hour in (None, ""):
        return 7
    if isinstance(hour, bool) or not isinstance(hour, int | str):
        raise InputError(f"invalid send hour {hour!r}: expected 0-23")
    if isinstance(hour, str):
        text = hour.strip()
        if not (1 <= len(text) <= 2 and text.isascii() and text.isdigit()):
            raise InputError(f"invalid send hour {hour[:10]!r}: expected 0-23")
        hour = int(text)
    if not 0 <= hour <= 23:
        raise InputError(f"invalid send hour {hour!r}: expected 0-23")
    return hour


def clean_keywords(keywords: str) -> str:
    """A profile as stored: control characters and the marks that reorder text
    (``plaintext``) become spaces, line ends and tabs kept."""
    return cleaned(keywords, keep="\t\n\r")


def check_keywords(keywords: str, *, required: bool = True) -> str:
    """A parsed-clean profile. Empty is refused where a person chooses their own
    (add, edit, sign-up, preferences): it would match nothing, ever. Imports may
    carry one (an export of such a subscriber re-imports). Control characters and
    the marks that reorder text (``plaintext``) become spaces, line ends and tabs
    kept: a profile is printed in the operator's terminal, where an ESC sequence from
    a sign-up ran; cleaned, not refused, so a profile stored before (sent back by the
    preferences form, the console's edit or an export) is still taken."""
    keywords = clean_keywords(keywords)
    if required and not keywords.strip():
        raise InputError("empty keyword profile: give at least one term, "
                         "e.g. 'diffusion, \"state space models\"'")
    checked_profile(keywords)  # raises ProfileError naming the problem
    return keywords.strip()


def add(
    session: Session,
    email: str,
    *,
    keywords: str = "",
    name: str = "",
    tz: str = "UTC",
    hour: int | str | None = None,
    status: str = SubscriberStatus.ACTIVE,
    source: str = "cli",
    utf8_local_part: bool = False,
    frequency: str = "daily",
    erased_may_return: bool = False,
) -> Subscriber:
    """One subscriber. An erased address is refused, except (``erased_may_return``)
    the person's own pending sign-up, which lifts the erasure only once confirmed."""
    address = normalize_email(email, utf8_local_part=utf8_local_part)
    if session.scalar(select(Subscriber.id).where(Subscriber.email == address)):
        raise InputError(f"{address} is already subscribed (to change them: "
                         f"newsletter subscribers edit {address})")
    if not erased_may_return:
        refuse_suppressed(session, address)
    now = utcnow()
    sub = Subscriber(
        email=address,
        name=clean_name(name),
        keywords=check_keywords(keywords),
        tz=check_tz(tz),
        send_hour=check_hour(hour),
        frequency=check_frequency(frequency),
        status=status,
        consent_at=now if status == SubscriberStatus.ACTIVE else None,
        consent_source=source,
        created_at=now,
        updated_at=now,
    )
    session.add(sub)
    session.flush()
    session.add(Event(subscriber_id=sub.id, kind="subscribed", detail={"by": source}))
    return sub


@dataclass
class ImportReport:
    added: int = 0
    duplicates: list[tuple[int, str]] = field(default_factory=list)
    suppressed: list[tuple[int, str]] = field(default_factory=list)  # erased: never re-added


def _lines(text: str) -> Iterator[str]:
    """The lines of ``text`` (ends kept, as the csv module wants them), one at a time:
    an ``io.StringIO`` over the file would hold a second copy at 4 bytes a character."""
    start, end = 0, len(text)
    while start < end:
        stop = text.find("\n", start)
        if stop < 0:
            yield text[start:]
            return
        yield text[start : stop + 1]
        start = stop + 1


def _rows(text: str, origin: str) -> Iterator[tuple[int, dict[str, str]]]:
    reader = csv.DictReader(_lines(text))
    header = [h.strip().lower() for h in (reader.fieldnames or [])]
    if "email" not in header:
        raise InputError(f"{origin}:1: header must name an 'email' column "
                         f"(columns: {', '.join(IMPORT_COLUMNS)})")
    unknown = [h for h in header if h not in IMPORT_COLUMNS]
    if unknown:
        raise InputError(f"{origin}:1: unknown column {unknown[0]!r} "
                         f"(columns: {', '.join(IMPORT_COLUMNS)})")
    reader.fieldnames = header
    for row in reader:
        if None in row:
            raise InputError(f"{origin}:{reader.line_num}: more fields than the header has")
        yield reader.line_num, {k: from_spreadsheet(v or "") for k, v in row.items()}


def _row_values(row: dict[str, str], utf8_local_part: bool = False) -> dict[str, object]:
    """One CSV row checked and turned into column values; InputError names the field."""
    values: dict[str, object] = {
        "email": normalize_email(row.get("email", ""), utf8_local_part=utf8_local_part),
        "name": clean_name(row.get("name", "")),
        "keywords": check_keywords(row.get("keywords", ""), required=False),
        "tz": check_tz(row.get("tz", "")),
        "send_hour": check_hour(row.get("hour")),
        "status": row.get("status", "").strip() or "active",
        "frequency": check_frequency(row.get("frequency")),
    }
    if values["status"] not in IMPORT_STATUSES:
        raise InputError(f"invalid status {values['status']!r}: expected one of "
                         f"{', '.join(IMPORT_STATUSES)}")
    return values


def check_csv(data: bytes, origin: str) -> list[str]:
    """Every bad row of an import, one message each naming the line (``import_csv``
    stops at the first); empty when the file would import."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        return [f"{origin}:{line}: invalid UTF-8: expected a UTF-8 CSV file"]
    if not text.strip():
        return [f"{origin}: empty file: expected a header row email,name,keywords,tz,hour"]
    errors = []
    try:
        for line, row in _rows(text, origin):
            try:
                _row_values(row)
            except InputError as exc:
                errors.append(f"{origin}:{line}: {exc.message}")
    except InputError as exc:
        errors.append(exc.message)
    except csv.Error as exc:
        errors.append(f"{origin}: malformed CSV: {exc}")
    return errors


def import_source(origin: str) -> str:
    """``import:<file>`` as the consent source, its end kept within the column's 64
    characters (a long path would otherwise fail the whole import on PostgreSQL)."""
    source = f"import:{origin}"
    return source if len(source) <= 64 else "import:…" + origin[-(64 - len("import:…")):]


def import_csv(session: Session, data: bytes, origin: str, *,
               utf8_local_part: bool = False) -> ImportReport:
    """Validate every row and insert all in one transaction. Every bad row is
    reported in one run (the first ``MAX_REPORTED_ROWS``, and how many in all), and
    then nothing is stored (the caller's transaction is rolled back).

    Rows are written in batches as they are validated, so memory holds one batch,
    not the whole file's rows (a million rows as dicts took 1.9 GB); after the
    first bad row nothing more is written, and the rest is only checked."""
    text = _csv_text(data, origin)
    existing = set(session.scalars(select(Subscriber.email)))
    report = ImportReport()
    now = utcnow()
    batch: list[tuple[int, dict[str, object]]] = []
    seen: set[str] = set()
    bad: list[str] = []
    try:
        parsed: Iterable[tuple[int, dict[str, str]]] = _rows(text, origin)
        for line, row in parsed:
            try:
                values = _row_values(row, utf8_local_part)
            except InputError as exc:
                bad.append(f"{origin}:{line}: {exc.message}")
                continue
            address = str(values["email"])
            if address in existing or address in seen:
                report.duplicates.append((line, address))
                continue
            seen.add(address)
            values.update(consent_at=now, consent_source=import_source(origin),
                          bounce_count=0, created_at=now, updated_at=now)
            batch.append((line, values))
            if len(batch) >= IMPORT_BATCH:
                _insert_batch(session, [] if bad else batch, report)
                batch.clear()
        _insert_batch(session, [] if bad else batch, report)
    except csv.Error as exc:
        raise InputError(f"{origin}: malformed CSV: {exc}") from None
    if bad:
        raise _bad_rows(origin, bad)
    report.suppressed.sort()
    session.add(Event(kind="imported", detail={"file": origin, "added": report.added,
                                               "duplicates": len(report.duplicates)}))
    return report


def _csv_text(data: bytes, origin: str) -> str:
    """The file as text, or one line naming the file (and the line of a bad byte)."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise InputError(f"{origin}:{line}: invalid UTF-8: expected a UTF-8 CSV file") from None
    if not text.strip():
        raise InputError(f"{origin}: empty file: expected a header row email,name,keywords,tz,hour")
    return text


def _insert_batch(session: Session, batch: list[tuple[int, dict[str, object]]],
                  report: ImportReport) -> None:
    """Insert one batch of valid new rows, except addresses erased before (counted in
    ``report.suppressed`` with their line: an import must not bring them back)."""
    if not batch:
        return
    erased = suppressed_among(session, [str(v["email"]) for _, v in batch])
    report.suppressed += [(n, str(v["email"])) for n, v in batch if v["email"] in erased]
    rows = [v for _, v in batch if v["email"] not in erased]
    if rows:
        session.execute(insert(Subscriber), rows)
    report.added += len(rows)


def _bad_rows(origin: str, bad: list[str]) -> InputError:
    """One bad row as one line; several as a count and the first ``MAX_REPORTED_ROWS``."""
    if len(bad) == 1:
        return InputError(bad[0] + " (nothing imported)")
    shown = bad[:MAX_REPORTED_ROWS]
    more = f"\n... and {len(bad) - len(shown)} more" if len(bad) > len(shown) else ""
    return InputError(f"{origin}: {len(bad)} bad rows, nothing imported:\n"
                      + "\n".join(shown) + more)


def remove(session: Session, email: str, *, by: str = "cli") -> str:
    """Delete a subscriber (``by`` names who asked: ``cli``, ``admin:<name>``) and
    their history: their rows go with theirs (the foreign keys cascade), and the bounce
    mailbox's reports about their mail are deleted as an erasure deletes them
    (``lifecycle.about_their_mail``): the keys would only unset their subscriber and
    delivery, leaving the address and their mail server's words behind. The address
    removed."""
    address = normalize_email(email, utf8_local_part=True)  # find, whatever the policy
    sub = session.scalar(select(Subscriber).where(Subscriber.email == address))
    if sub is None:
        raise InputError(f"{address} is not a subscriber")
    session.add(Event(kind="removed", detail={"email": address, "by": by}))
    # (before the subscriber: the reports about their deliveries are found by those)
    session.execute(delete(MailReport).where(lifecycle.about_their_mail(sub.id)))
    session.execute(delete(Subscriber).where(Subscriber.id == sub.id))
    return address


def count(session: Session) -> int:
    return session.scalar(select(func.count(Subscriber.id))) or 0


def as_dict(sub: Subscriber) -> dict[str, object]:
    return {
        "email": sub.email,
        "name": sub.name,
        "keywords": sub.keywords,
        "tz": sub.tz,
        "hour": sub.send_hour,
        "status": sub.status,
        "frequency": sub.frequency,
        "consent_at": sub.consent_at.isoformat() if sub.consent_at else None,
        "consent_source": sub.consent_source,
        "bounce_count": sub.bounce_count,
    }


# A spreadsheet runs a cell that starts with one of these as a formula (OWASP "CSV
# injection"): "=HYPERLINK(...)" in a name, "-video" or "@SUM(1)" in keywords.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


# Where else a spreadsheet may start a cell inside a value: after a semicolon or a tab.
# One set to a locale whose list separator is ";" (or given tab-separated text) splits a
# comma-separated line there, so "Bob;=2+3" became the cells "Bob" and "=2+3".
_CELL_BREAK = re.compile(r"([;\t])")


def _guarded(value: str) -> bool:
    """Whether ``value`` starts with the ``'`` ``spreadsheet_safe`` adds (before a formula
    character, or before a ``'``, so an added one is told from one written)."""
    return value.startswith("'") and value[1:].startswith((*FORMULA_START, "'"))


def _cell_safe(value: str) -> str:
    return "'" + value if value.startswith(FORMULA_START) or _guarded(value) else value


def _cell_unsafe(value: str) -> str:
    return value[1:] if _guarded(value) else value


def _each_cell(value: str, change: Callable[[str], str]) -> str:
    """``change`` at the value's start and at the start of each piece after a ``;`` or
    a tab (where a spreadsheet splitting on those starts a cell). The pieces are apart:
    a ``'`` added or taken at one start moves no separator."""
    pieces = _CELL_BREAK.split(change(value))  # the separators at the odd places
    return pieces[0] + "".join(p if i % 2 else change(p)
                               for i, p in enumerate(pieces[1:], 1))


def spreadsheet_safe(value: str) -> str:
    """A cell a spreadsheet shows as text: a leading ``'`` before a formula character
    (and before a ``'`` that precedes one, so ``from_spreadsheet`` undoes it exactly)
    wherever a spreadsheet may start a cell (``_each_cell``)."""
    return _each_cell(value, _cell_safe)


def from_spreadsheet(value: str) -> str:
    """The value ``spreadsheet_safe`` was given (an import of an export is exact)."""
    return _each_cell(value, _cell_unsafe)


def export_csv(subs: Iterable[Subscriber], out: io.TextIOBase | object) -> None:
    """The import format (plus status), so an export re-imports as it was; cells that
    a spreadsheet would run as formulas are quoted (``spreadsheet_safe``). Names and
    profiles are written as storing them now cleans them (a row stored before that
    keeps its control characters, which an export passed on to a spreadsheet or a
    terminal, and an import cleaned anyway)."""
    writer = csv.writer(out, lineterminator="\n")  # type: ignore[arg-type]
    writer.writerow(IMPORT_COLUMNS)
    for s in subs:
        writer.writerow([spreadsheet_safe(s.email), spreadsheet_safe(clean_header_text(s.name)),
                         spreadsheet_safe(clean_keywords(s.keywords).strip()), s.tz,
                         s.send_hour, s.status, s.frequency])
