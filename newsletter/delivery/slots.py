"""Who is due in an hourly send slot: catch-up by each subscriber's local day.

A slot run at moment M (the top of a UTC hour) takes every subscriber whose local
send time has already passed on their local day at M, and who has not had that
day's edition. "A day" is the subscriber's local date. So:

* a send hour that does not exist on a day (clocks go forward: 01:00 in London on
  the last Sunday of March) is taken as the wall-clock hour read with the offset
  before the change, i.e. the first moment after the gap; nobody is skipped;
* an hour that occurs twice (clocks go back) is the first occurrence; the second
  finds the day's row already there and sends nothing;
* a daemon that was down for some slots sends late, at its first slot back, to
  everyone whose hour passed meanwhile on their local day (late, never lost);
* that includes an outage across a subscriber's local midnight: a slot run also
  takes the previous local day of anyone whose send time on it lies within the
  look-back window (``[schedule] catch_up_hours``) and who had the day before it,
  so a 23:00 subscriber whose slot fell in the outage gets that day's edition late
  instead of skipping to the next day.

Pure functions over explicit times, so tests drive them without sleeping.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable
from zoneinfo import ZoneInfo


def slot_moment(day: dt.date, utc_hour: int) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, utc_hour, tzinfo=dt.UTC)


def local_send_time(day: dt.date, hour: int, tz: str) -> dt.datetime:
    """When ``hour`` o'clock on local ``day`` in ``tz`` happens, in UTC (fold=0: a
    nonexistent hour is read with the offset before the gap, so it lands just after
    it; a repeated hour is its first occurrence)."""
    local = dt.datetime(day.year, day.month, day.day, hour, tzinfo=ZoneInfo(tz))
    return local.astimezone(dt.UTC)


def late_by_day(moment: dt.datetime, pairs: Iterable[tuple[str, int]],
                lookback: dt.timedelta) -> dict[dt.date, list[tuple[str, int]]]:
    """(time zone, send hour) pairs whose send time on their *previous* local day lies
    within ``lookback`` before ``moment``, grouped by that day. Only subscribers who
    had the day before it are owed it late (see ``runs``): a first start or a resumed
    subscription does not send a day that was never theirs."""
    moment = moment.astimezone(dt.UTC)
    out: dict[dt.date, list[tuple[str, int]]] = defaultdict(list)
    if lookback <= dt.timedelta(0):
        return {}
    for tz, hour in pairs:
        day = moment.astimezone(ZoneInfo(tz)).date() - dt.timedelta(days=1)
        if moment - lookback < local_send_time(day, hour, tz) <= moment:
            out[day].append((tz, hour))
    return dict(out)


def due_by_day(moment: dt.datetime, pairs: Iterable[tuple[str, int]]
               ) -> dict[dt.date, list[tuple[str, int]]]:
    """(time zone, send hour) pairs due at ``moment``, grouped by the local day whose
    edition they are due."""
    moment = moment.astimezone(dt.UTC)
    out: dict[dt.date, list[tuple[str, int]]] = defaultdict(list)
    for tz, hour in pairs:
        local_day = moment.astimezone(ZoneInfo(tz)).date()
        if local_send_time(local_day, hour, tz) <= moment:
            out[local_day].append((tz, hour))
    return dict(out)
