"""The characters that text from outside may carry and that no output passes on as they
are, defined once for every place that cleans, refuses or shows such text.

Text from outside: papers' fields and ids from feeds and files, what people write in
the sign-up and preferences forms, CLI arguments and imported CSV. The characters:

* C0 and C1 control characters and DEL. A terminal runs the escape sequences they
  start (ESC ``[2J`` clears the operator's screen, ``]0;`` retitles the window, ``]52;``
  writes the clipboard), and a line break in a log message forges a log line;
* the invisible marks that reorder or hide text: bidi embeddings, overrides and
  isolates (U+202A-U+202E, U+2066-U+2069: ``gnp.exe`` shown as ``exe.png``), the
  zero-width space and the byte-order mark;
* lone surrogates, which stand for bytes that were not UTF-8 and which no UTF-8
  output can write (a strict stdout raised on a Latin-1 file name).

Papers' fields lose them at ingest (``ingest.papers.clean_text``), header text and
profiles lose them (``addresses.clean_header_text``, ``store.subscribers.check_keywords``:
a profile stored before, sent back by a form or an export, is taken as it is cleaned,
never refused), and what the CLI prints and the logs write shows them as escapes
(``visible``, ``json_text``), so a row stored before any of that cannot reach a
terminal either.
"""

from __future__ import annotations

import re

_C0 = "\x00-\x1f"
_C0_BUT_LINES = "\x00-\x08\x0b-\x1f"  # all but tab and line feed
_DEL_C1 = "\x7f-\x9f"
_MARKS = "\u200b\u202a-\u202e\u2066-\u2069\ufeff"
# Lone surrogates: how Python keeps bytes that are not UTF-8 (a Latin-1 file name, a
# JSON "\\udce9"); no database, terminal or file in UTF-8 takes them
_SURROGATES = "\ud800-\udfff"


def _any_of(*ranges: str) -> re.Pattern[str]:
    return re.compile(f"[{''.join(ranges)}]")


# every such character, tab and line breaks included (one-line text: headers, log lines)
CONTROLS = _any_of(_C0, _DEL_C1, _MARKS)
# every such character but tab and line feed, and lone surrogates: what a text that may
# run over several lines cannot write (a feed's are dropped at ingest; a CLI value's are
# refused where it is stored, ``cli.undecodable_argument``, never silently dropped)
UNWRITABLE = _any_of(_C0_BUT_LINES, _DEL_C1, _MARKS, _SURROGATES)
_UNWRITABLE_LINE = _any_of(_C0, _DEL_C1, _MARKS, _SURROGATES)
# what JSON's own escaping leaves as it is: DEL, C1 controls, the marks, surrogates
_JSON_RAW = _any_of(_DEL_C1, _MARKS, _SURROGATES)


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def visible(text: str, *, lines: bool = True) -> str:
    """``text`` with each such character (and each lone surrogate) written out as an
    escape (ESC as ``\\x1b``, U+202E as ``\\u202e``): shown, never run. With
    ``lines`` tabs and line ends (LF, and CR LF as a form sends them) stay line ends;
    without, they are escaped too (one line)."""
    if lines:
        return UNWRITABLE.sub(_escape, text.replace("\r\n", "\n"))
    return _UNWRITABLE_LINE.sub(_escape, text)


def cleaned(text: str, keep: str = "") -> str:
    """``text`` with each such character but those in ``keep`` replaced by a space."""
    return CONTROLS.sub(lambda m: m.group() if m.group() in keep else " ", text)


def json_text(text: str) -> str:
    """JSON text (``json.dumps(..., ensure_ascii=False)``) with the characters JSON
    writes as they are (it escapes only C0) as ``\\uXXXX`` escapes: the same JSON
    value, and a CSI (U+009B) or a bidi override no longer reaches the terminal or the
    log collector raw."""
    return _JSON_RAW.sub(lambda m: f"\\u{ord(m.group()):04x}", text)
