"""HTML to plain text for the fields a feed marks as HTML, and nothing else.

Abstracts are full of ``<`` that is not markup: ``$T<T_{RW}$``, ``p<0.05``,
``x<y``. A stripper that deletes from ``<`` to the next ``>`` loses whole
sentences of them. This converter runs the standard library's HTML tokenizer
and keeps as text every "tag" that is not an HTML element, exactly as written,
so math survives even inside real HTML. Character references are decoded once,
by the tokenizer: text that was plain to begin with never comes here (see
``feed.field_text``), so ``&amp;lt;`` stays ``&lt;`` and ``<blink>`` in a
``type="text"`` title stays ``<blink>``.

The tokenizer looks for the end of whatever a ``<`` starts (a tag's ``>``, a
comment's ``-->``) as far as the text goes, and where there is none it keeps that
``<`` as text and looks again from the next one: 30 KB of ``<a <a <a ...`` took
7.6 s, four times as long for twice the text. So ``_neutralised`` first finds where
each construct ends, from where its closing text is (found once), and writes each
``<`` the tokenizer would keep as text as ``&lt;``, which the tokenizer decodes back
to the same ``<``: the text is the same, and the tokenizer is only handed
constructs it finds the end of. (A marked section with a keyword the tokenizer does
not know, ``<![foo ...``, is text too: the tokenizer raised an error for it.)
"""

from __future__ import annotations

import html
import html.parser
import re
from bisect import bisect_left
from collections.abc import Callable
from html.parser import HTMLParser

# Every HTML element name (WHATWG, plus common obsolete ones feeds still use).
HTML_ELEMENTS = frozenset("""
a abbr acronym address applet area article aside audio b base basefont bdi bdo big blink
blockquote body br button canvas caption center cite code col colgroup data datalist dd del
details dfn dialog dir div dl dt em embed fieldset figcaption figure font footer form frame
frameset h1 h2 h3 h4 h5 h6 head header hgroup hr html i iframe img input ins kbd label legend
li link main map mark marquee math menu meta meter nav nobr noframes noscript object ol
optgroup option output p param picture pre progress q rp rt ruby s samp script search
section select slot small source span strike strong style sub summary sup svg table tbody
td template textarea tfoot th thead time title tr track tt u ul var video wbr
""".split())  # noqa: SIM905 - one word per element reads better than 120 quoted strings
# Elements that separate words: text on either side must not run together.
_BREAKS = frozenset("""
address article aside blockquote br dd div dl dt figcaption figure footer h1 h2 h3 h4 h5 h6
header hr li main nav ol p pre section table td th tr ul
""".split())  # noqa: SIM905
# Elements whose content is not text a reader sees.
_HIDDEN = frozenset({"script", "style", "template", "head", "noscript"})

# What ends what a "<" starts (``_neutralised``): a comment "--" and ">" with only space
# between; a marked section (<![CDATA[ ]]>, Word's <![if ...]>) what its keyword calls
# for; the text of a script or style its own end tag.
_COMMENT_END = re.compile(r"--\s*>")
_SECTION_NAME = re.compile(r"[a-zA-Z][-_.a-zA-Z0-9]*\s*")
_SECTION_ENDS = {
    **dict.fromkeys(("temp", "cdata", "ignore", "include", "rcdata"), re.compile(r"]\s*]\s*>")),
    **dict.fromkeys(("if", "else", "endif"), re.compile(r"]\s*>")),
}
_RAW_TEXT_ENDS = {name: re.compile(rf"</\s*{name}\s*>", re.IGNORECASE)
                  for name in ("script", "style")}
# A start tag as the tokenizer reads it: its own pattern for how far a tag goes, and
# then its own rule for whether that is the tag's end (``check_for_whole_start_tag``):
# the same tags end in the same places, whatever their attributes look like. CPython
# releases since mid-2025 (gh-135661) end a start tag at ">" only (``locatetagend``);
# the rule is taken from the tokenizer this process runs. (The text is checked against
# the tokenizer alone on 3.11.7.)
_TAG_NAME = re.compile(r"<([a-zA-Z][^\t\n\r\f />\x00]*)")
_TAG_ENDS_AT_GT = getattr(html.parser, "locatetagend", None)
_TAG_END = getattr(html.parser, "locatestarttagend_tolerant", None)
_TAG_FIND = html.parser.tagfind_tolerant  # type: ignore[attr-defined]
_ATTR_FIND = html.parser.attrfind_tolerant  # type: ignore[attr-defined]


def _start_tag(markup: str, i: int, stop: int) -> tuple[int, int, str] | None:
    """(end, how far it was read, name) of the start tag at ``i`` as the tokenizer
    reads it (end -1: not whole), None when no tag starts there."""
    name = _TAG_NAME.match(markup, i, stop)
    if name is None:
        return None
    if _TAG_ENDS_AT_GT is not None or _TAG_END is None:  # a newer tokenizer's rule
        read = _TAG_ENDS_AT_GT.match(markup, i + 1, stop) if _TAG_ENDS_AT_GT else None
        if read is not None:
            j = read.end()
        else:  # neither pattern: the tag ends at the next ">"
            gt = markup.find(">", i, stop)
            j = gt + 1 if gt != -1 else stop
        return (j if markup[j - 1:j] == ">" else -1), j, name.group(1)
    read = _TAG_END.match(markup, i, stop)
    j = read.end() if read else i + 1
    after = markup[j:j + 1] if j < stop else ""
    if after == ">":
        return j + 1, j, name.group(1)
    if after == "/" and markup.startswith("/>", j) and j + 2 <= stop:
        return j + 2, j, name.group(1)
    if after in ("", "/") or after in _UNFINISHED:
        return -1, j, name.group(1)
    return (j if j > i else i + 1), j, name.group(1)  # ends before a stray character


_UNFINISHED = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ=")


def _raw_text_end(markup: str, i: int, end: int, name: str) -> re.Pattern[str] | None:
    """The end tag whose text the whole start tag ``markup[i:end]`` hides, as the
    tokenizer decides (``parse_starttag``): only a script's or style's, and only when
    the tag, read attribute by attribute, ends in ">" (a "/>" makes it empty; anything
    else there makes the whole tag text)."""
    ends = _RAW_TEXT_ENDS.get(name.lower())
    if ends is None:
        return None
    found = _TAG_FIND.match(markup, i + 1, end)
    k = found.end() if found else end
    while k < end:
        attribute = _ATTR_FIND.match(markup, k, end)
        if not attribute:
            break
        k = attribute.end()
    return ends if markup[k:end].strip() == ">" else None


class _Text(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.hidden = 0

    def handle_data(self, data: str) -> None:
        if not self.hidden:
            self.parts.append(data)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in HTML_ELEMENTS:  # "<T_{RW}$, we find ... At $T>": text, not a tag
            raw = self.get_starttag_text() or ""
            self.handle_data(html.unescape(raw))
            return
        if tag in _HIDDEN:
            self.hidden += 1
        elif tag in _BREAKS:
            self.parts.append(" ")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in HTML_ELEMENTS:
            self.handle_data(html.unescape(self.get_starttag_text() or ""))
        elif tag in _BREAKS:
            self.parts.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag not in HTML_ELEMENTS:
            self.handle_data(f"</{tag}>")
        elif tag in _HIDDEN:
            self.hidden = max(0, self.hidden - 1)
        elif tag in _BREAKS:
            self.parts.append(" ")


def html_to_text(markup: str) -> str:
    """The text a reader sees in ``markup``; non-HTML "tags" are kept verbatim."""
    if "<" not in markup and "&" not in markup:
        return markup
    parser = _Text()
    parser.feed(_neutralised(markup))
    parser.close()
    return "".join(parser.parts)


def _neutralised(markup: str) -> str:
    """``markup`` with each "<" the tokenizer would keep as text written "&lt;".

    One pass from "<" to "<": a construct that ends is skipped whole; one that does not
    is text as far as the tokenizer takes it, to the next ">", or as far as this scan
    read a start tag that is not whole (through quotes, possibly past that ">": the
    tokenizer reading such a tag again from each "<" inside was quadratic too). Inside
    a script or style nothing is taken to end past its end tag, and that end tag is
    never made text, so the tokenizer hides the same text.
    """
    if ">" not in markup:
        return markup.replace("<", "&lt;")
    n = len(markup)
    spans: dict[re.Pattern[str], list[tuple[int, int]]] = {}

    def first(pattern: re.Pattern[str], pos: int) -> tuple[int, int]:
        """The span of the first ``pattern`` from ``pos``, (-1, -1) when there is none."""
        if pattern not in spans:
            spans[pattern] = [m.span() for m in pattern.finditer(markup)]
        found = spans[pattern]
        k = bisect_left(found, pos, key=lambda span: span[0])
        return found[k] if k < len(found) else (-1, -1)

    out: list[str] = []
    done = 0  # markup[:done] is in out
    stop = n  # the end tag of the script or style the scan is in, else the end
    i = markup.find("<")
    while i != -1:
        if i == stop:
            stop = n
        end, is_text, raw_text = _end_of(markup, i, stop, first)
        if is_text:
            out += [markup[done:i], markup[i:end].replace("<", "&lt;")]
            done = end
        elif raw_text and stop == n:
            stop = first(raw_text, end)[0]
            if stop == -1:  # (the tokenizer hides the rest)
                stop = n
        i = markup.find("<", end)
    out.append(markup[done:])
    return "".join(out)


def _end_of(markup: str, i: int, stop: int,
            first: Callable[[re.Pattern[str], int], tuple[int, int]],
            ) -> tuple[int, bool, re.Pattern[str] | None]:
    """Where what the "<" at ``i`` starts ends (by ``stop``), whether the tokenizer keeps
    it as text, and the end tag of the script or style it opens."""
    read = i + 1  # how far a start tag was read
    if markup.startswith("<!--", i):
        end = first(_COMMENT_END, i + 4)[1]
    elif markup.startswith("<![", i):
        name = _SECTION_NAME.match(markup, i + 3, stop)
        close = _SECTION_ENDS.get(name.group().strip().lower()) if name else None
        end = first(close, i + 3)[1] if close and name and name.end() < stop else -1
    elif markup.startswith(("</", "<?", "<!"), i):  # up to the first ">"
        skip = 9 if markup[i:i + 9].lower() == "<!doctype" else 2
        gt = markup.find(">", i + skip, stop)
        end = gt + 1 if gt != -1 else -1
    elif tag := _start_tag(markup, i, stop):
        end, read, tag_name = tag
        if end != -1:
            return end, False, _raw_text_end(markup, i, end, tag_name)
    else:  # "<" before anything else is text as it is
        return i + 1, False, None
    if 0 < end <= stop:
        return end, False, None
    gt = markup.find(">", i + 1, stop)
    return max(gt + 1 if gt != -1 else stop, read), True, None
