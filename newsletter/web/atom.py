"""A subscriber's personal Atom feed: the papers their editions carried, newest
first, for people who read in a feed reader. Built by hand (a few elements), with
every text escaped, and checked by feedparser in the tests."""

from __future__ import annotations

import datetime as dt
from typing import Any
from xml.sax.saxutils import escape as xml_escape
from xml.sax.saxutils import quoteattr

from newsletter.plaintext import CONTROLS
from newsletter.service.emails import sent_papers

MAX_ITEMS = 200


def escape(text: str) -> str:
    """Text for an element: escaped, and without the control characters XML 1.0 has
    no place for (one in a profile stored before they were refused, quoted by the
    summary's "matched: ...", made the whole feed unreadable: ``plaintext``)."""
    return xml_escape(CONTROLS.sub(" ", text))


def _time(value: dt.datetime | dt.date) -> str:
    if not isinstance(value, dt.datetime):
        value = dt.datetime(value.year, value.month, value.day)
    return value.replace(microsecond=0).isoformat() + "Z"


def _summary(why: str, abstract: str) -> str:
    """The abstract, led by what the email said of the paper ("matched: ...")."""
    return f"{why}. {abstract}" if why else abstract


def build_feed(web: Any, sub_id: int, self_url: str) -> bytes | None:
    links = web.links
    sub, picked = sent_papers(web.app.engine, sub_id, editions=60, most=MAX_ITEMS)
    if sub is None:
        return None
    name = web.settings.sender.from_name
    updated = _time(picked[0].when) if picked else _time(sub.created_at)
    out = ['<?xml version="1.0" encoding="utf-8"?>',
           '<feed xmlns="http://www.w3.org/2005/Atom">',
           f"<title>{escape(name)}: your papers</title>",
           f"<id>{escape(links.home('/feed/'))}{sub_id}</id>",
           f"<updated>{updated}</updated>",
           f"<link rel=\"self\" href={quoteattr(self_url)}/>",
           f"<link rel=\"alternate\" href={quoteattr(links.home('/'))}/>",
           f"<author><name>{escape(name)}</name></author>"]
    for paper in picked:
        e, when = paper.entry, paper.when
        if e is None:
            continue
        out += ["<entry>",
                f"<title>{escape(e.title)}</title>",
                f"<id>{escape(links.paper(e.id))}</id>",
                f"<link href={quoteattr(links.paper(e.id))}/>",
                f"<updated>{_time(when)}</updated>",
                f"<summary>{escape(_summary(paper.why, e.abstract or ''))}</summary>"]
        out += [f"<author><name>{escape(str(a))}</name></author>" for a in (e.authors or [])[:5]]
        out.append("</entry>")
    out.append("</feed>")
    return "\n".join(out).encode()
