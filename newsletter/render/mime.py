"""Building RFC 5322 messages fast, and correctly.

``email.message.EmailMessage.as_bytes()`` costs about 10 ms for a 60 KB digest,
25 times the Jinja render. Every digest of one edition has the same structure,
so the constant parts (From, List-Id, MIME boundaries and part headers) are
built once, and each message only adds its own headers and its two bodies: the
text part as it is (7-bit) when it is ASCII, else quoted-printable (``binascii``, C,
a line at a time, each line once per edition; readable as is), the HTML part as
7-bit text when it can be, its non-ASCII characters written as character
references (``&#8230;``), which every HTML parser decodes to the same page: no
encoding step at all and a third smaller than base64. It can be when the template
allows it (``Compiled.html_7bit``: no non-ASCII in <style>), no line is over 998
bytes (the compiled template breaks its long lines, see ``render/compile.py``) and
there is no CR or NUL; otherwise that message's HTML part is base64. The output
keeps the rules the standard library would: CRLF line ends, no line over 998
bytes, RFC 2047 encoded non-ASCII headers, and a boundary that neither encoding
can produce (``=_``).
Tests parse the result with ``email.policy.strict`` to hold it to that.
"""

from __future__ import annotations

import binascii
import datetime as dt
import email.utils
import hashlib
import itertools
import re
import secrets
import time
from dataclasses import dataclass

from newsletter.addresses import clean_header_text
from newsletter.config import SenderConfig

LINE = 78  # RFC 5322's recommended line length; folded headers keep to it
WORD = 75  # RFC 2047's limit for one encoded word
_CHUNK = 39  # UTF-8 bytes per base64 encoded word: 10 + 52 + 2 = 64 characters, so the
# first fits on the line after "Subject: " (a parser quirk adds a space when it moves)


def _encoded_words(text: str) -> list[str]:
    """``text`` as RFC 2047 base64 encoded words of at most 75 characters each, split
    between characters (never inside a UTF-8 sequence)."""
    words: list[bytes] = []
    chunk = b""
    for ch in text:
        b = ch.encode("utf-8")
        if len(chunk) + len(b) > _CHUNK:
            words.append(chunk)
            chunk = b""
        chunk += b
    if chunk:
        words.append(chunk)
    return ["=?utf-8?b?" + binascii.b2a_base64(w, newline=False).decode() + "?="
            for w in words]


def _atoms(value: str) -> list[str]:
    """Words of an unstructured value; each run of words that cannot go as they are
    (non-ASCII, too long to fold, or looking like an encoded word) becomes encoded
    words, the spaces inside the run encoded with it."""
    out: list[str] = []
    run: list[str] = []
    for word in value.split():
        if word.isascii() and len(word) <= LINE - 2 and "=?" not in word:
            if run:
                out.extend(_encoded_words(" ".join(run)))
                run = []
            out.append(word)
        else:
            run.append(word)
    if run:
        out.extend(_encoded_words(" ".join(run)))
    return out


def fold(name: str, atoms: list[str], sep: str = " ", *, break_first: bool = False) -> str:
    """``Name: atom atom ...`` folded at the separators so lines stay within 78
    characters (an atom longer than a line, such as a long URL, gets a line of its own;
    with ``break_first`` even the first, for lists of URIs)."""
    lines: list[str] = []
    line = f"{name}:"
    first = True
    for atom in atoms:
        piece = (" " if first else sep) + atom
        if len(line) + len(piece) > LINE and (not first or break_first):
            lines.append(line if first else line + sep.rstrip())
            line = " " + atom
        else:
            line += piece
        first = False
    lines.append(line)
    return "\r\n".join(lines)


def header(name: str, value: str) -> str:
    """An unstructured header (Subject, ...): RFC 2047 encoded where needed, folded."""
    return fold(name, _atoms(value.replace("\r", " ").replace("\n", " ")))


def _header_value(value: str) -> str:
    """An unstructured header value, encoded and folded, without its name (for fixed
    headers whose name is written separately). Control characters (CR/LF included)
    never reach the header, whatever the input said."""
    return header("X", clean_header_text(value))[3:]


def _phrase(name: str) -> list[str]:
    """A display name as a header's phrase: words as they are, quoted as a whole when
    it holds characters a phrase cannot (``Lab <x@evil.example>`` quoted, not read as an
    address), encoded words when it is not ASCII; as ``From:``'s name is written."""
    name = " ".join(clean_header_text(name).split())
    if not name:
        return []
    if name.isascii() and "=?" not in name:
        quoted = email.utils.formataddr((name, "x@x"))[: -len(" <x@x>")]
        return [quoted] if quoted != name else name.split()
    return _encoded_words(name)


def _address(name: str, address: str) -> str:
    name, address = clean_header_text(name), clean_header_text(address)
    if not name:
        return address
    name = " ".join(name.split())
    if name.isascii() and "=?" not in name:
        return email.utils.formataddr((name, address))
    return " ".join(_encoded_words(name)) + f" <{address}>"


def b64(text: str) -> bytes:
    """Base64 in 76-character CRLF lines (one C call plus slicing)."""
    raw = binascii.b2a_base64(text.encode("utf-8"), newline=False)
    return b"\r\n".join([raw[i : i + 76] for i in range(0, len(raw), 76)])


MAX_LINE = 998  # RFC 5322's limit for a line, CRLF not counted


def seven_bit(html: str) -> bytes | None:
    """``html`` as 7-bit CRLF lines, non-ASCII characters as character references;
    None when a line would be over 998 bytes, or there is a CR or a NUL, or a line
    starts with "From " (which some mail stores rewrite)."""
    if "\r" in html or "\x00" in html:
        return None
    # pure ASCII (the usual case, see compile.ascii_outside_jinja) is a plain copy
    data = html.encode("ascii") if html.isascii() else html.encode("ascii",
                                                                     "xmlcharrefreplace")
    if not lines_within(data, MAX_LINE) or _from_line(data):
        return None
    return data.replace(b"\n", b"\r\n")


_LINE_DOT = re.compile(rb"\n\.")


def dot_line(data: bytes) -> bool:
    """True when a line of ``data`` starts with "." (what SMTP's dot-stuffing doubles).
    A compiled search finds each LF and looks at the next byte: 12 µs over a 40 KB
    digest, where ``b"\n." in data`` took 31 µs."""
    return data.startswith(b".") or _LINE_DOT.search(data) is not None


def seven_bit_text(text: str) -> bytes | None:
    """The text part as 7-bit CRLF lines, with no encoding at all, when it is ASCII
    already (the bundled text template writes ASCII punctuation, so most digests are);
    None when it is not, or a line would be over 998 bytes, or there is a CR or a NUL, or
    a line starts with "From " or "." (a message of ours never needs dot-stuffing, see
    transports/smtp.py): then it goes quoted-printable (``LineQP``)."""
    if not text.isascii() or "\r" in text or "\x00" in text:
        return None
    data = text.encode("ascii")
    if not lines_within(data, MAX_LINE) or _from_line(data) or dot_line(data):
        return None
    return data.replace(b"\n", b"\r\n")


def _from_line(data: bytes) -> bool:
    """True when a line of ``data`` starts with "From ". Found from the capital Fs
    (a one-byte search is memchr: ten times faster than searching for "\\nFrom ",
    whose first and last bytes are everywhere in HTML); a page with many of them is
    searched the plain way."""
    pos = data.find(b"F")
    for _ in range(64):
        if pos < 0:
            return False
        if data.startswith(b"From ", pos) and (pos == 0 or data[pos - 1] == 10):
            return True
        pos = data.find(b"F", pos + 1)
    return b"\nFrom " in data or data.startswith(b"From ")


def lines_within(data: bytes, limit: int) -> bool:
    """True when no line of ``data`` (LF-separated) is longer than ``limit`` bytes: each
    window of limit + 1 bytes from a line start holds a line end; the next window
    starts after the last one found, so a 30 KB page takes some 40 C calls."""
    pos, size, window = 0, len(data), limit + 1
    while pos + window <= size:
        end = data.rfind(b"\n", pos, pos + window)
        if end < 0:
            return False
        pos = end + 1
    return True


def qp(text: str) -> bytes:
    """``text`` quoted-printable (``binascii.b2a_qp``), CRLF line ends."""
    body = text.replace("\r\n", "\n").encode("utf-8")
    return binascii.b2a_qp(body, quotetabs=False, istext=True, header=False).replace(
        b"\n", b"\r\n")


QP_CACHE = 20_000  # encoded lines kept per builder (each under 1 KB); then cleared
QP_LINE = 76  # RFC 2045's limit for an encoded line


class LineQP:
    """Quoted-printable line by line, each line encoded once per edition: most lines
    of a digest (titles, excerpts, links to papers) are the same in many emails, and
    ``b2a_qp`` over the whole text cost a fifth of rendering. Decodes to what ``qp``
    does, and is its bytes but in two places: ``b2a_qp`` encodes each line on its own
    (what it does to a character depends on the line alone; for text without a CR it
    ends lines with LF, here CRLF), except that over a whole text it writes an
    encoded space at a line's end past the 76th character, where a line alone is
    broken first; and no line here starts with "." (see ``_qp_line``)."""

    def __init__(self) -> None:
        self._lines: dict[str, bytes] = {}

    def __call__(self, text: str) -> bytes:
        if "\r" in text:  # CRLF or a stray CR: the whole-text way decides
            return qp(text)
        get = self._lines.get
        return b"\r\n".join([get(line) or self._miss(line) for line in text.split("\n")])

    def _miss(self, line: str) -> bytes:
        b = _qp_line(line)
        if line:  # (an empty line is b"", which ``get(line) or`` never takes)
            if len(self._lines) >= QP_CACHE:
                self._lines.clear()
            self._lines[line] = b
        return b


def _qp_line(line: str) -> bytes:
    """One line (no LF, no CR) as ``b2a_qp`` encodes it, soft line breaks as CRLF. A
    line of printable ASCII without "=" that does not end in a space (the links that
    differ in every email) needs only its soft breaks: 75 characters and "=" while
    more than 76 are left, as ``b2a_qp`` breaks them; a break that would start the
    next line with "." comes a character or more earlier (SMTP clients double a dot that
    starts a line, aiosmtplib with a regex over the whole message)."""
    if (line.isascii() and line.isprintable() and "=" not in line
            and not line.endswith(" ") and not line.startswith(".")):
        data = line.encode("ascii")
        if len(data) <= QP_LINE:
            return data
        parts = []
        while len(data) > QP_LINE:
            cut = QP_LINE - 1
            while data[cut] == 46 and cut > 1:  # no line may start with "." (see below)
                cut -= 1
            parts.append(data[:cut])
            data = data[cut:]
        parts.append(data)
        return b"=\r\n".join(parts)
    out = binascii.b2a_qp(line.encode("utf-8"), quotetabs=False, istext=True, header=False)
    if out.startswith(b".") or b"\n." in out:
        return _qp_no_dot(line)
    return out.replace(b"\n", b"\r\n")


def _qp_no_dot(line: str) -> bytes:
    """Quoted-printable for a line where ``b2a_qp`` starts a line with ".": its
    encoding, soft breaks taken out and made again, each before a character other than
    "." and never inside an "=XX" (a dot first in the line written "=2E"), so the SMTP
    client has nothing to double. Rare: a long line with non-ASCII or "=" whose break
    falls just before a dot."""
    s = binascii.b2a_qp(line.encode("utf-8"), quotetabs=False, istext=True,
                        header=False).replace(b"=\n", b"")
    if s.startswith(b"."):
        s = b"=2E" + s[1:]
    lines = []
    while len(s) > QP_LINE:
        cut = QP_LINE - 1
        while cut > 3 and (s[cut - 1] == 61 or s[cut - 2] == 61 or s[cut] == 46):
            cut -= 1  # ("=" only starts an "=XX": a cut right after one is inside it)
        lines.append(s[:cut] + b"=")
        s = s[cut:]
    lines.append(s)
    return b"\r\n".join(lines)


@dataclass(frozen=True)
class Message:
    """A finished message: the MIME bytes, plus its parts for JSON-based email APIs."""

    to: str
    sender: str  # the envelope sender (SMTP MAIL FROM): the From address, or a VERP one
    message_id: str
    data: bytes
    subject: str = ""
    html: str = ""
    text: str = ""
    headers: tuple[tuple[str, str], ...] = ()
    from_header: str = ""
    # Known to end every line with CRLF, and to end with one (``MimeBuilder`` checks its
    # headers; its bodies are made so): the SMTP transport then skips its own check,
    # three passes over the message (transports/smtp.py).
    crlf: bool = False


def crlf_only(data: bytes) -> bool:
    """Every CR of ``data`` followed by LF and every LF preceded by CR (for the few
    hundred bytes of a message's headers)."""
    return data.count(b"\r") == data.count(b"\n") == data.count(b"\r\n")


class MimeBuilder:
    def __init__(self, sender: SenderConfig, dkim: DkimSigner | None = None, *,
                 feedback_id: str = "") -> None:
        s = sender
        self.sender = s.from_address
        self.domain = s.from_address.rpartition("@")[2] or "localhost"
        self.boundary = f"=_nl_{secrets.token_hex(12)}"
        self.from_header = _address(s.from_name, s.from_address)
        self.list_id = " ".join([*_phrase(s.from_name), f"<{s.list_id}>"])
        fixed = [fold("From", self.from_header.split(" "))]
        if s.reply_to:
            fixed.append(f"Reply-To: {s.reply_to}")
        if feedback_id:  # Gmail's postmaster tools group complaints by it
            fixed.append(header("Feedback-ID", feedback_id))
        fixed += [
            fold("List-Id", [*_phrase(s.from_name), f"<{s.list_id}>"]),
            "List-Unsubscribe-Post: List-Unsubscribe=One-Click",
            "MIME-Version: 1.0",
            f'Content-Type: multipart/alternative; boundary="{self.boundary}"',
        ]
        self.fixed = ("\r\n".join(fixed) + "\r\n").encode("ascii")
        self._fixed_crlf = crlf_only(self.fixed)
        b = self.boundary.encode()
        self.text_head = (b"\r\n--" + b + b"\r\nContent-Type: text/plain; charset=\"utf-8\"\r\n"
                          b"Content-Transfer-Encoding: quoted-printable\r\n\r\n")
        self.text_head_7bit = (b"\r\n--" + b + b"\r\nContent-Type: text/plain; "
                               b"charset=\"utf-8\"\r\nContent-Transfer-Encoding: 7bit\r\n\r\n")
        self.html_head = (b"\r\n--" + b + b"\r\nContent-Type: text/html; charset=\"utf-8\"\r\n"
                          b"Content-Transfer-Encoding: base64\r\n\r\n")
        self.html_head_7bit = (b"\r\n--" + b + b"\r\nContent-Type: text/html; charset=\"utf-8\"\r\n"
                               b"Content-Transfer-Encoding: 7bit\r\n\r\n")
        self.tail = b"\r\n--" + b + b"--\r\n"
        self.dkim = dkim
        self._id_key = secrets.token_bytes(32)  # this builder's own, never shown
        self._ids = itertools.count(1)  # next() is atomic: threads never share a number
        self._subjects: dict[str, str] = {}  # folded Subject headers: many emails share one
        self.qp = LineQP()
        self._date_second = -1
        self._date = ""

    def message_id(self, tag: str) -> str:
        """``<tag.random@domain>``: the random part is a keyed hash (BLAKE2b, this
        builder's own random key) of the tag and a counter, unique and unguessable
        without reading the system's random source per message. Unguessable matters:
        a bounce or complaint that quotes a Message-ID we sent is acted on for its
        delivery (service/bounces.py), and a prefix and a counter, as these once were,
        let a reader who saw their own IDs name everybody else's."""
        n = next(self._ids)
        mac = hashlib.blake2b(f"{tag}.{n}".encode(), key=self._id_key, digest_size=10)
        return f"<{tag}.{mac.hexdigest()}@{self.domain}>"

    def _now(self) -> str:
        second = int(time.time())
        if second != self._date_second:  # formatting a date costs more than the rest
            self._date_second = second
            # "+0000", not the obsolete "GMT" zone (nor "-0000", "zone unknown")
            self._date = email.utils.format_datetime(
                dt.datetime.fromtimestamp(second, dt.UTC))
        return self._date

    def _subject(self, subject: str) -> str:
        hit = self._subjects.get(subject)
        if hit is None:
            if len(self._subjects) >= 10_000:
                self._subjects.clear()
            hit = self._subjects[subject] = header("Subject", subject)
        return hit

    def build(self, *, to: str, to_name: str, subject: str, text: str, html: str,
              message_id: str, list_unsubscribe: str, extra_headers: dict[str, str] | None = None,
              html_7bit: bool = False) -> Message:
        """The message; ``html_7bit`` when the HTML may go as 7-bit text (see
        ``seven_bit``), else its part is base64."""
        head = [
            fold("To", _address(to_name, to).split(" ")),
            self._subject(subject),
            f"Date: {self._now()}",
            f"Message-ID: {message_id}",
            # one URI a line: "<https://...>,\r\n <mailto:...>"
            fold("List-Unsubscribe", [u.strip() for u in list_unsubscribe.split(",")], ", ",
                 break_first=True),
        ]
        for k, v in (extra_headers or {}).items():
            head.append(header(k, v))
        html_body = seven_bit(html) if html_7bit else None
        text_body = seven_bit_text(text)
        head_bytes = ("\r\n".join(head) + "\r\n").encode("utf-8")
        # the bodies: the text as 7-bit when it is ASCII, else quoted-printable a line at
        # a time (no CR in the text); the HTML as 7-bit (no CR in it either) or base64;
        # each with CRLF line ends
        crlf = self._fixed_crlf and "\r" not in text and crlf_only(head_bytes)
        data = b"".join((
            head_bytes, self.fixed,
            b"\r\nThis is a multipart message in MIME format.\r\n",
            *((self.text_head, self.qp(text)) if text_body is None
              else (self.text_head_7bit, text_body)),
            *((self.html_head, b64(html)) if html_body is None
              else (self.html_head_7bit, html_body)),
            self.tail,
        ))
        if self.dkim is not None:
            unsigned = len(data)
            data = self.dkim.sign(data)
            crlf = crlf and crlf_only(data[:len(data) - unsigned])
        headers = (("List-Unsubscribe", list_unsubscribe),
                   ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"),
                   ("List-Id", self.list_id), ("Message-ID", message_id))
        return Message(to=to, sender=self.sender, message_id=message_id, data=data,
                       subject=subject, html=html, text=text, headers=headers,
                       from_header=self.from_header, crlf=crlf)


class DkimSigner:
    """DKIM (dkimpy) over the headers receivers check, both List-Unsubscribe ones included."""

    HEADERS = (b"from", b"to", b"subject", b"date", b"message-id", b"list-id",
               b"list-unsubscribe", b"list-unsubscribe-post", b"feedback-id", b"mime-version",
               b"content-type")

    def __init__(self, selector: str, domain: str, private_key: bytes) -> None:
        self.selector = selector.encode()
        self.domain = domain.encode()
        self.key = private_key

    def sign(self, data: bytes) -> bytes:
        import dkim

        signature = dkim.sign(data, self.selector, self.domain, self.key,
                              include_headers=list(self.HEADERS), linesep=b"\r\n")
        return bytes(signature) + data
