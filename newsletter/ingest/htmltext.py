"""HTML to plain text for the fields a feed marks as HTML, and nothing else.

Abstracts are full of ``<`` that is not markup: ``$T<T_{RW}$``, ``p<0.05``,
``x<y``. A stripper that deletes from ``<`` to the next ``>`` loses whole
sentences of them. This converter runs the standard library's HTML tokenizer
and keeps as text every "tag" that is not an HTML element, exactly as written,
so math survives even inside real HTML. Character references are decoded once,
by the tokenizer: text that was plain to begin with never comes here (see
``feed.field_text``), so ``&amp;lt;`` stays ``&lt;`` and ``<blink>`` in a
``type="text"`` title stays ``<blink>``.
"""

from __future__ import annotations

import html
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
    parser.feed(markup)
    parser.close()
    return "".join(parser.parts)
