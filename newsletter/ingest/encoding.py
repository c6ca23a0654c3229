"""Bytes to text the way feed readers do it: BOM, then HTTP charset, then the XML prolog.

Real feeds arrive in UTF-16 and UTF-32 (with a byte order mark, or recognisable
from the ``<?xml`` pattern of zero bytes, XML 1.0 appendix F), and in legacy
encodings declared in the XML prolog (``<?xml version="1.0" encoding="euc-kr"?>``).
Refusing those as "binary" or "invalid UTF-8" loses feeds that every reader
shows. What is left after honouring every declaration must still decode
cleanly: junk is refused with the line it starts on, never guessed at.

The decoded text keeps no stale declaration: ``xml_as_utf8`` rewrites the
prolog so an XML parser handed the ``str`` does not re-decode it as UTF-16.
"""

from __future__ import annotations

import codecs
import re

from newsletter.errors import SourceError

# Longest first: the UTF-32-LE BOM starts with the UTF-16-LE one.
_BOMS: tuple[tuple[bytes, str], ...] = (
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
)
# Zero-byte patterns of an ASCII first character ("<", "{", "[", whitespace) in
# each wide encoding: how XML (appendix F) and JSON (RFC 4627) are told apart without a BOM.
_WIDE = re.compile(
    rb"^(?:(?P<u32be>\x00\x00\x00[\x09\x0a\x0d\x20<{\[])"
    rb"|(?P<u32le>[\x09\x0a\x0d\x20<{\[]\x00\x00\x00)"
    rb"|(?P<u16be>\x00[\x09\x0a\x0d\x20<{\[]\x00[\x00-\x7f])"
    rb"|(?P<u16le>[\x09\x0a\x0d\x20<{\[]\x00[\x00-\x7f]\x00))"
)
_WIDE_NAMES = {"u32be": "utf-32-be", "u32le": "utf-32-le", "u16be": "utf-16-be",
               "u16le": "utf-16-le"}
_DECL = re.compile(rb"""^\s*<\?xml[^>]*?\bencoding\s*=\s*["']([A-Za-z][\w.:-]*)["']""")
_DECL_TEXT = re.compile(r"""^(\s*<\?xml[^>]*?\bencoding\s*=\s*["'])([^"']*)(["'])""")
_PROLOG = re.compile(r"^\s*<\?xml(\s[^>]*?)?\s*\?>")
_CHARSET = re.compile(r"""charset\s*=\s*["']?([\w.:-]+)""", re.IGNORECASE)


def _codec(name: str) -> str | None:
    """Python's name for an encoding label, or None when Python has no such codec."""
    try:
        return codecs.lookup(name).name
    except LookupError:
        return None


def sniff_encoding(data: bytes, content_type: str = "") -> tuple[str, str, int]:
    """(codec, why, bytes to skip): what ``data`` says about its own encoding.

    Precedence: a byte order mark (it cannot lie about the bytes that follow),
    the wide-encoding pattern of the first character, the HTTP ``charset``, the
    XML prolog, then UTF-8.
    """
    for bom, name in _BOMS:
        if data.startswith(bom):
            return name, "byte order mark", len(bom)
    m = _WIDE.match(data[:4])
    if m and m.lastgroup:
        return _WIDE_NAMES[m.lastgroup], "zero-byte pattern of the first character", 0
    found = _CHARSET.search(content_type or "")
    if found and _codec(found.group(1)):
        return _codec(found.group(1)) or "utf-8", f"HTTP charset {found.group(1)}", 0
    decl = _DECL.match(data[:1024])
    if decl:
        label = decl.group(1).decode("ascii")
        codec = _codec(label)
        # A prolog naming a wide encoding without wide bytes is a mislabelled
        # single-byte file; a label Python does not know falls back to UTF-8.
        if codec and not codec.startswith(("utf-16", "utf-32")):
            return codec, f"XML declaration encoding={label!r}", 0
    return "utf-8", "default", 0


def decode(data: bytes, origin: str, content_type: str = "") -> str:
    """``data`` as text, honouring its BOM / HTTP charset / XML prolog; else strict UTF-8."""
    if not data.strip() or not data.strip(b"\x00\xfe\xff\xef\xbb\xbf \t\r\n"):
        raise SourceError(origin, "empty file: expected papers (JSON, JSONL, RSS/Atom, page dump)")
    codec, why, skip = sniff_encoding(data, content_type)
    if why == "default" and b"\x00" in data[:8192]:
        raise SourceError(origin, "binary data: expected a text format (JSON, RSS/Atom, page dump)")
    try:
        text = data[skip:].decode(codec)
    except UnicodeDecodeError as exc:
        start = skip + exc.start
        line = data[skip:start].decode(codec, errors="replace").count("\n") + 1
        label = codec.upper() if codec.startswith("utf") else codec
        expected = "UTF-8 text" if why == "default" else f"{label} text ({why})"
        raise SourceError(
            f"{origin}:{line}", f"invalid {label} (byte {start}): expected {expected}"
        ) from None
    if "\x00" in text[:8192]:
        raise SourceError(origin, "binary data: expected a text format (JSON, RSS/Atom, page dump)")
    return text.lstrip("\ufeff")


def xml_as_utf8(text: str) -> str:
    """``text`` with an XML prolog saying UTF-8, the encoding an XML parser will now see.

    A missing prolog is added: without one a parser guesses, and a guess can turn
    valid UTF-8 such as "Â¡" into something else.
    """
    if _DECL_TEXT.match(text):
        return _DECL_TEXT.sub(r"\g<1>utf-8\g<3>", text, count=1)
    m = _PROLOG.match(text)
    if m:  # a prolog without an encoding pseudo-attribute
        return f'<?xml{m.group(1)} encoding="utf-8"?>' + text[m.end():]
    return '<?xml version="1.0" encoding="utf-8"?>\n' + text.lstrip()


def repair_double_utf8(text: str) -> str:
    """UTF-8 that was decoded as Latin-1 and encoded again ("RamÃ­rez"), put back.

    feedparser applies exactly this rule to the text fields it parses (titles,
    summaries) but not to author names; applying it to names too keeps every
    field of one entry consistent. Text with any character beyond Latin-1, or
    whose Latin-1 bytes are not valid UTF-8, is left alone. What remains
    ambiguous is text that is both, like a literal "Â¡": it cannot be told from
    mojibake, and is repaired, as feed readers do.
    """
    try:
        return text.encode("iso-8859-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return text
