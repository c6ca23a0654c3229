"""SMTP through aiosmtplib: a pool of connections, each reused for many messages.

STARTTLS or implicit TLS, AUTH when a username is set, per-command timeouts,
PIPELINING when the server offers it (``transports/pipelining.py``: MAIL, RCPT and
DATA in one write; aiosmtplib itself waits for each reply).
Replies map to the pipeline's retry rules: 4xx and dropped connections are
transient; 5xx is permanent for that recipient; "no such user" (550 / 5.1.1)
is a hard bounce that suppresses the subscriber.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import ssl

import aiosmtplib

from newsletter.addresses import needs_smtputf8
from newsletter.config import SmtpConfig
from newsletter.errors import TransportError
from newsletter.render.mime import Message, dot_line
from newsletter.transports.base import Transport
from newsletter.transports.pipelining import Unanswered, can_pipeline, send_pipelined

_NO_SUCH_USER = re.compile(r"\b5\.1\.[0-3]\b|user unknown|no such user|does not exist|"
                           r"mailbox unavailable|unknown recipient", re.I)


# Replies that describe our own client's state, not the recipient: "bad sequence of
# commands" (503, e.g. "nested MAIL command" after a transaction left half-done) and
# 5.5.x protocol errors. Retried on a fresh connection; never a permanent failure.
_CLIENT_STATE = re.compile(r"\b5\.5\.[0-9]\b|bad sequence|nested mail|send hello first", re.I)


def client_state_error(code: int, text: str) -> bool:
    return code == 503 or (500 <= code < 600 and code != 550 and
                           bool(_CLIENT_STATE.search(text)))


def classify(code: int, text: str) -> TransportError:
    message = f"SMTP {code} {text}".strip()
    if client_state_error(code, text):
        return TransportError(f"{message} (our connection's state; retried on a new one)")
    if 500 <= code < 600:
        bounce = "5.1.1" in text or (code in (550, 551, 553) and bool(_NO_SUCH_USER.search(text)))
        return TransportError(message, permanent=True, bounce=bounce)
    return TransportError(message)


class _Busy(TransportError):
    """A new connection refused with 421 (the greeting or its EHLO): the server closing,
    or over its connections from this client ("421 4.7.0 too many connections", Postfix's
    smtpd_client_connection_count_limit). With another connection of the pool open, its
    slot is retired for the run (``SmtpTransport.send``); a timeout, a refused connect
    or a TLS failure is not this, and keeps the slot."""


def _too_large(code: int, text: str) -> bool:
    """A refusal for the message's size: 552 (RFC 5321's "exceeded storage allocation",
    how RFC 1870 servers refuse a ``SIZE=`` over their limit) or 5.3.4 ("message too
    big for system", RFC 3463)."""
    return code == 552 or "5.3.4" in text


def refused_recipient(code: int, text: str) -> TransportError:
    """A reply to RCPT TO: a 4xx other than 421 (the server closing) is this
    recipient's server saying "not now", deferred without retrying in the run."""
    error = classify(code, text)
    error.later = 400 <= code < 500 and code != 421 and not client_state_error(code, text)
    return error


# A plain address, local@domain with a dot-atom on each side (RFC 5322's atext; a domain
# of letters, digits and hyphens): what ``email.utils.parseaddr`` gives back unchanged,
# with nothing in it aiosmtplib would refuse. Every address this code writes (the VERP
# sender, the From) and nearly every subscriber's is one.
_ATEXT = "A-Za-z0-9!#$%&'*+/=?^_`{|}~-"
DOT_ATOM = re.compile(rf"[{_ATEXT}]+(?:\.[{_ATEXT}]+)*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*")

FAST_PATH_VERSIONS = ((3, 0), (6, 0))  # [low, high): the range the tests cover


def fast_paths_supported() -> bool:
    from aiosmtplib import protocol as proto
    from aiosmtplib import smtp as smtp_mod

    try:
        version = tuple(int(p) for p in aiosmtplib.__version__.split(".")[:2])
    except ValueError:
        return False
    low, high = FAST_PATH_VERSIONS
    return (low <= version < high
            and callable(getattr(proto, "normalize_message_line_endings", None))
            and callable(getattr(smtp_mod, "normalize_message_line_endings", None))
            and hasattr(getattr(proto, "PERIOD_REGEX", None), "sub")
            and callable(getattr(smtp_mod, "parse_address", None))
            and callable(getattr(smtp_mod, "quote_address", None)))


# Messages being sent that were built with CRLF line ends only (``Message.crlf``), by
# id, holding the object (so no other takes its id while it is here).
_CRLF: dict[int, bytes] = {}


def _install_fast_paths() -> None:
    """Skip aiosmtplib's per-message regex passes when they would change nothing.

    aiosmtplib rewrites every line ending (twice per message: once to measure the
    SIZE, once to send) and dot-stuffs with a regex. Our messages are built with
    CRLF line ends and no line starting with ".", so for them both passes are
    identity operations costing about 0.4 ms of CPU per 40 KB message. The
    replacements check that in C (``bytes.count`` / ``in``) and fall back to the
    original functions for anything else, so the bytes on the wire are the same. A
    message whose builder made it with CRLF line ends only (``Message.crlf``) skips
    even the line-end check (three passes over 40 KB, about 70 µs).

    Measured on a 39 KB digest (aiosmtplib 5.1): 1.30 ms of CPU per message in the
    library's passes, 0.12 ms with these, at a sending ceiling of about 1.7 ms per
    message. Because it reaches into private names, it is installed only for the
    aiosmtplib versions in ``FAST_PATH_VERSIONS`` (tested by
    ``tests/test_smtp_delivery.py``) and when those names look as expected;
    anything else keeps the library's own code.
    """
    from aiosmtplib import protocol as proto
    from aiosmtplib import smtp as smtp_mod

    if getattr(proto, "_newsletter_fast", False) or not fast_paths_supported():
        return
    original = proto.normalize_message_line_endings
    period = proto.PERIOD_REGEX

    # (not b"": the empty message is one object, which must still get its CRLF)
    last: list[bytes | None] = [None]

    def normalize(message: bytes) -> bytes:
        if message is last[0]:  # the same message again (SIZE, then DATA): already checked
            return message
        if _CRLF.get(id(message)) is message:  # built with CRLF line ends (Message.crlf)
            return message
        crlf = message.count(b"\r\n")
        if crlf == message.count(b"\n") == message.count(b"\r") and message.endswith(b"\r\n"):
            last[0] = message
            return message
        return original(message)

    class _Period:
        def sub(self, repl: bytes, message: bytes) -> bytes:
            if not dot_line(message):
                return message
            return period.sub(repl, message)

    # ``sendmail`` parses the sender and the recipient to check them, then ``mail`` and
    # ``rcpt`` parse them again to quote them: ``email.utils.parseaddr`` in Python,
    # 6-40 µs each. A plain address is its own answer (``DOT_ATOM``); for any other the
    # answer for the same string is the same, so the second parse is a lookup; a bad
    # address raises as before and is not kept.
    original_parse = smtp_mod.parse_address
    parsed: dict[str, str] = {}

    def parse_address(address: str) -> str:
        if DOT_ATOM.fullmatch(address):  # its own parse, checked in C (the VERP sender
            return address               # is new every message: 10 µs of parsing each)
        hit = parsed.get(address)
        if hit is None:
            hit = original_parse(address)
            if len(parsed) >= 1024:  # bounded: only the messages in flight are needed
                parsed.clear()
            parsed[address] = hit
        return hit

    def quote_address(address: str) -> str:
        return f"<{parse_address(address)}>"

    smtp_mod.parse_address = parse_address
    smtp_mod.quote_address = quote_address
    proto.normalize_message_line_endings = normalize
    smtp_mod.normalize_message_line_endings = normalize
    proto.PERIOD_REGEX = _Period()  # type: ignore[assignment]
    proto._newsletter_fast = True  # type: ignore[attr-defined]
    proto._newsletter_originals = (original, period)  # type: ignore[attr-defined]


_install_fast_paths()


class _Conn:
    def __init__(self, client: aiosmtplib.SMTP) -> None:
        self.client = client
        self.used = 0


# One mechanism, one attempt: aiosmtplib's login() tries every mechanism offered in
# turn, so a wrong password cost two or three refusals per connection, and servers
# count refusals toward locking the account or the address out.
MECHANISMS = ("plain", "login", "cram-md5")


async def login(client: aiosmtplib.SMTP, username: str, password: str) -> None:
    """One AUTH with the first of ``MECHANISMS`` the server offers (see above): what
    ``send`` and ``newsletter check`` both do."""
    if not client.supports_extension("auth"):
        raise aiosmtplib.SMTPException("the server offers no AUTH (set [smtp] security, "
                                       "or no username)")
    offered = client.supported_auth_methods
    mechanism = next((m for m in MECHANISMS if m in offered), None)
    if mechanism is None:
        raise aiosmtplib.SMTPException("the server offers none of the AUTH mechanisms "
                                       "PLAIN, LOGIN, CRAM-MD5")
    await getattr(client, f"auth_{mechanism.replace('-', '')}")(username, password)


async def _close(client: aiosmtplib.SMTP) -> None:
    with contextlib.suppress(Exception):
        client.close()


class SmtpTransport(Transport):
    name = "smtp"
    config_section = "smtp"

    @classmethod
    def from_config(cls, cfg: SmtpConfig) -> SmtpTransport:
        return cls(cfg)

    def __init__(self, cfg: SmtpConfig) -> None:
        self.cfg = cfg
        # The pipelined transaction uses the same library internals as the fast paths.
        self.pipelining = cfg.pipelining and fast_paths_supported()
        self._pool: asyncio.Queue[_Conn | None] = asyncio.Queue()
        for _ in range(cfg.connections):
            self._pool.put_nowait(None)  # a slot; connected on first use
        self._made: list[_Conn] = []  # the connections made, open or not (``_open_other``)

    async def _connect(self) -> _Conn:
        c = self.cfg
        client = aiosmtplib.SMTP(
            hostname=c.host, port=c.port, timeout=c.timeout,
            use_tls=c.security == "tls", start_tls=c.security == "starttls",
            validate_certs=True, cert_bundle=c.ca_file or None,
        )
        try:
            await client.connect()
            # Greet now, not lazily inside the first sendmail: the SMTPUTF8 check below reads
            # the server's extensions before the first message on this connection.
            if client.is_ehlo_or_helo_needed:
                try:
                    await client.ehlo()
                except aiosmtplib.SMTPHeloError:
                    await client.helo()
            if c.username:
                await login(client, c.username, c.password or "")
        except aiosmtplib.SMTPAuthenticationError as exc:
            await _close(client)
            raise TransportError(f"SMTP login refused: {exc.code} {exc.message}",
                                 permanent=True, sender=True) from None
        except (aiosmtplib.SMTPException, OSError) as exc:
            await _close(client)
            if _certificate_refused(exc):  # trying again cannot change the certificate
                raise TransportError(f"SMTP {c.host}:{c.port}: the server's TLS certificate "
                                     f"was not accepted: {exc} (set [smtp] ca_file to the "
                                     "CA that signed it)", permanent=True, sender=True) from None
            busy = isinstance(exc, aiosmtplib.SMTPResponseException) and exc.code == 421
            raise (_Busy if busy else TransportError)(
                f"cannot connect to SMTP {c.host}:{c.port}: {exc}", sender=True) from None
        conn = _Conn(client)
        self._made = [m for m in self._made if m.client.is_connected]
        self._made.append(conn)
        return conn

    def _open_other(self) -> bool:
        """Whether a connection of this pool is open (asked while the caller holds none)."""
        return any(m.client.is_connected for m in self._made)

    async def open(self) -> None:
        """Connect (and log in) once before the first message: a refused login, an
        untrusted certificate or a dead server is proven here by one connection,
        before any message is taken from the ledger; the other connections open as
        they are needed. The pool is made here, in the loop of this run."""
        self._pool = asyncio.Queue()
        self._made = []
        first = await self._connect()
        self._pool.put_nowait(first)
        for _ in range(self.cfg.connections - 1):
            self._pool.put_nowait(None)

    async def send(self, message: Message) -> str:
        conn = await self._pool.get()
        try:
            while conn is None or not conn.client.is_connected or \
                    conn.used >= self.cfg.messages_per_connection:
                if conn is not None:
                    await _quit(conn)
                conn = None
                try:
                    conn = await self._connect()
                except _Busy:
                    if not self._open_other():
                        raise
                    # Refused one more connection while another is open: a server's limit
                    # per client ("421 4.7.0 too many connections from ...", Postfix's
                    # smtpd_client_connection_count_limit) below [smtp] connections. The
                    # slot is retired for this run and the message waits for an open
                    # connection; tried on the slot again, the message was deferred
                    # after max_attempts refusals that said nothing about its reader.
                    conn = await self._pool.get()
            options: list[str] = []
            if needs_smtputf8(message.sender, message.to):
                if not conn.client.supports_extension("smtputf8"):
                    # Refused before any command: the connection stays clean.
                    raise TransportError(
                        f"SMTP server {self.cfg.host} does not offer SMTPUTF8, needed for "
                        f"the non-ASCII address {message.to!r}", permanent=True)
                options = ["SMTPUTF8"]
            conn.used += 1
            if message.crlf:
                _CRLF[id(message.data)] = message.data
            try:
                if self.pipelining and can_pipeline(conn.client):
                    await send_pipelined(conn.client, message.sender, message.to,
                                         message.data, options, self.cfg.timeout,
                                         self.cfg.data_timeout)
                else:
                    await _one_at_a_time(conn.client, message, options, self.cfg.timeout,
                                         self.cfg.data_timeout)
            except aiosmtplib.SMTPRecipientsRefused as exc:
                await _reset(conn)
                refused = exc.recipients[0]
                raise refused_recipient(refused.code, refused.message) from None
            except aiosmtplib.SMTPResponseException as exc:
                if 500 <= exc.code < 600 and not client_state_error(exc.code, exc.message):
                    await _reset(conn)
                else:  # 4xx, or a reply about our own state: start over on a new connection
                    await _quit(conn)
                    conn = None
                error = classify(exc.code, exc.message)
                if isinstance(exc, aiosmtplib.SMTPSenderRefused):  # MAIL FROM: ours
                    error.sender, error.bounce = True, False
                    if error.permanent and _too_large(exc.code, exc.message):
                        error.sender, error.content = False, True  # the SIZE= we gave
                elif isinstance(exc, aiosmtplib.SMTPDataError):  # DATA, or the message's end
                    error.content = error.permanent and not error.bounce
                raise error from None
            except Unanswered as exc:
                await _quit(conn)
                conn = None
                raise TransportError(f"SMTP {exc}: the server may have it",
                                     unanswered=True) from None
            except (TimeoutError, aiosmtplib.SMTPException, OSError) as exc:
                await _quit(conn)
                conn = None
                raise TransportError(f"SMTP connection lost: {type(exc).__name__}: {exc}") \
                    from None
            except Exception as exc:  # e.g. an encoding error half-way through a transaction
                await _quit(conn)
                conn = None
                raise TransportError(f"SMTP client error: {type(exc).__name__}: {exc}") \
                    from None
            return message.message_id
        finally:
            _CRLF.pop(id(message.data), None)
            self._pool.put_nowait(conn)

    async def close(self) -> None:
        while not self._pool.empty():
            conn = self._pool.get_nowait()
            if conn is not None:
                await _quit(conn)
        self._pool = asyncio.Queue()  # usable again (a later run opens it afresh)
        self._made = []
        for _ in range(self.cfg.connections):
            self._pool.put_nowait(None)


async def _one_at_a_time(client: aiosmtplib.SMTP, message: Message, options: list[str],
                         timeout: float, data_timeout: float) -> None:
    """MAIL, RCPT and DATA one command at a time (a server without PIPELINING), as
    aiosmtplib's ``sendmail`` sends them for one recipient, but with the answer to the
    message's end given ``data_timeout``, and ``Unanswered`` raised when it does not
    come: the body is out, the server may have it. (Where the library's internals are
    not the known ones, its ``data`` is used as it is: one timeout, no such answer.)"""
    encoding = "utf-8" if "SMTPUTF8" in options else "ascii"
    fast = fast_paths_supported()
    if client.supports_extension("size") and fast:
        size = len(aiosmtplib.smtp.normalize_message_line_endings(message.data))
        options = [f"size={size}", *options]
    # (a refusal is reset or the connection dropped by the caller, ``SmtpTransport.send``)
    await client.mail(message.sender, options=options, encoding=encoding)
    try:
        await client.rcpt(message.to, encoding=encoding)
    except aiosmtplib.SMTPRecipientRefused as exc:
        raise aiosmtplib.SMTPRecipientsRefused([exc]) from None
    if not fast:
        await client.data(message.data)
        return
    await _data(client, message.data, timeout, data_timeout)


async def _data(client: aiosmtplib.SMTP, data: bytes, timeout: float,
                data_timeout: float) -> None:
    """DATA, its 354 within ``timeout``, the body, and its answer within
    ``data_timeout`` (aiosmtplib's ``execute_data_command``, with the two waits apart):
    a timeout or a lost connection before the body is written is an ordinary
    transient error; after it, ``Unanswered``."""
    from aiosmtplib import protocol as proto

    protocol = client.protocol
    lock = getattr(protocol, "_command_lock", None)
    if protocol is None or lock is None:
        raise aiosmtplib.SMTPServerDisconnected("Server not connected")
    body = proto.PERIOD_REGEX.sub(b"..", proto.normalize_message_line_endings(data)) + b".\r\n"
    async with lock:
        protocol._response_pending = True
        protocol.write(b"DATA\r\n")
        try:
            start = await protocol.read_response(timeout=timeout)
        except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPTimeoutError):
            client.close()
            raise
        if start.code != 354:
            raise aiosmtplib.SMTPDataError(start.code, start.message)
        protocol._response_pending = True
        protocol.write(body)
        try:
            done = await protocol.read_response(timeout=data_timeout)
        except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPTimeoutError) as exc:
            client.close()
            raise Unanswered(f"no answer to the end of the message ({type(exc).__name__})") \
                from None
    if done.code != 250:
        raise aiosmtplib.SMTPDataError(done.code, done.message)


def _certificate_refused(exc: BaseException) -> bool:
    """Whether a failed connect was our client refusing the server's certificate."""
    seen: BaseException | None = exc
    for _ in range(5):  # aiosmtplib wraps the ssl error; follow the chain a little way
        if seen is None:
            break
        if isinstance(seen, ssl.SSLCertVerificationError):
            return True
        seen = seen.__cause__ or seen.__context__
    return "CERTIFICATE_VERIFY_FAILED" in str(exc)


async def _reset(conn: _Conn) -> None:
    with contextlib.suppress(aiosmtplib.SMTPException, OSError):
        await conn.client.rset()


async def _quit(conn: _Conn | None) -> None:
    if conn is None:
        return
    try:
        if conn.client.is_connected:
            await conn.client.quit()
    except (TimeoutError, aiosmtplib.SMTPException, OSError):
        conn.client.close()
