"""One SMTP transaction with PIPELINING (RFC 2920): MAIL, RCPT and DATA in one write.

aiosmtplib sends each command and waits for its reply: four round trips a message
(MAIL, RCPT, DATA, the body). A server that offers PIPELINING takes the first three
at once, so a message costs two round trips, and each side wakes up half as often.
Against a relay a few milliseconds away that is most of the time a connection spends
per message; on one machine it is about a tenth of the sender's CPU per message.

aiosmtplib's protocol keeps one reply at a time and drops what else arrives, so while
a pipelined transaction runs, its connection's transport is handed to ``_Replies``,
which keeps every reply in order, and handed back when the transaction ends. A lost
connection or an end of file also reaches aiosmtplib's protocol, so the client knows
its connection is gone as it would have otherwise. Connecting, TLS, EHLO, AUTH, RSET
and QUIT stay aiosmtplib's.

The replies are read in full before any is judged, and they raise the exceptions
aiosmtplib's ``sendmail`` raises for the same replies (``SMTPSenderRefused``,
``SMTPRecipientsRefused``, ``SMTPDataError``), so the transport maps them to the
same retry rules either way. The bytes on the wire are the ones ``sendmail`` writes:
the same SIZE option, line ends and dot-stuffing.
"""

from __future__ import annotations

import asyncio
import collections
from typing import Any, cast

import aiosmtplib
from aiosmtplib import protocol as proto_mod
from aiosmtplib import smtp as smtp_mod

_MAX_LINE = 8192  # a reply line longer than this is not SMTP (aiosmtplib's bound too)
_MAX_LINES = 1000  # lines of one multi-line reply


class _Replies(asyncio.Protocol):
    """Every reply of the transaction, in order (multi-line replies joined as
    aiosmtplib joins them)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner  # aiosmtplib's protocol, told of a lost connection
        self.buffer = bytearray()
        self.lines: list[bytes] = []
        self.replies: collections.deque[aiosmtplib.SMTPResponse] = collections.deque()
        self.error: BaseException | None = None
        self.waiter: asyncio.Future[None] | None = None

    def _wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    def data_received(self, data: bytes) -> None:
        self.buffer.extend(data)
        while (end := self.buffer.find(b"\n")) >= 0:
            line = bytes(self.buffer[:end + 1])
            del self.buffer[:end + 1]
            try:
                if len(line) > _MAX_LINE:
                    raise ValueError
                code = int(line[:3])
            except ValueError:
                self.error = aiosmtplib.SMTPResponseException(
                    -1, f"Malformed SMTP response line: {line[:80]!r}")
                break
            self.lines.append(line[4:].strip(b" \t\r\n"))
            if line[3:4] != b"-":
                text = b"\n".join(self.lines).decode("utf-8", "surrogateescape")
                self.replies.append(aiosmtplib.SMTPResponse(code, text))
                self.lines = []
        if len(self.buffer) > _MAX_LINE or len(self.lines) > _MAX_LINES:
            # a line that never ends, or a reply that never does: not SMTP
            self.error = self.error or aiosmtplib.SMTPResponseException(
                -1, "Response too long")
            self.buffer.clear()
            self.lines = []
        self._wake()

    def eof_received(self) -> bool | None:
        self.error = self.error or aiosmtplib.SMTPServerDisconnected(
            "Unexpected EOF received")
        self._wake()
        return self.inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self.error = self.error or aiosmtplib.SMTPServerDisconnected("Connection lost")
        self._wake()
        self.inner.connection_lost(exc)

    async def take(self, n: int) -> list[aiosmtplib.SMTPResponse]:
        """The next ``n`` replies; fewer when the connection failed before they came."""
        while len(self.replies) < n and self.error is None:
            self.waiter = asyncio.get_running_loop().create_future()
            await self.waiter
        return [self.replies.popleft() for _ in range(min(n, len(self.replies)))]


async def _take(replies: _Replies, n: int, timeout: float | None
                ) -> list[aiosmtplib.SMTPResponse]:
    try:  # n replies owed: the time aiosmtplib gives n commands sent one at a time
        async with asyncio.timeout(None if timeout is None else timeout * n):
            return await replies.take(n)
    except TimeoutError:
        raise aiosmtplib.SMTPReadTimeoutError("Timed out waiting for server response") \
            from None


def _command(verb: bytes, address: str, options: list[str], encoding: str) -> bytes:
    arg = verb + smtp_mod.quote_address(address).encode(encoding)
    parts = [arg, *(o.encode("ascii") for o in options)]
    if any(proto_mod.COMMAND_INJECTION_REGEX.search(p) for p in parts):
        raise ValueError("Command arg contains a prohibited control character")
    return b" ".join(parts) + b"\r\n"


def can_pipeline(client: aiosmtplib.SMTP) -> bool:
    """Whether this connection's server offers PIPELINING (and is not mid-command)."""
    p = client.protocol
    return (client.supports_extension("pipelining") and p is not None
            and p.transport is not None and not p.transport.is_closing())


class Unanswered(aiosmtplib.SMTPException):
    """The message's end went out and its answer did not come (``end_timeout`` passed,
    or the connection was lost): the server may have taken the message."""


async def send_pipelined(client: aiosmtplib.SMTP, sender: str, recipient: str,
                         data: bytes, options: list[str], timeout: float | None,
                         end_timeout: float | None = None) -> None:
    """MAIL, RCPT and DATA in one write, then the body: one recipient, as the transport
    sends. Raises aiosmtplib's exceptions for the replies ``sendmail`` would raise for,
    and ``Unanswered`` when the body's answer does not come within ``end_timeout``
    (``timeout`` when None)."""
    encoding = "utf-8" if any(o.lower() == "smtputf8" for o in options) else "ascii"
    smtp_mod.parse_address(sender)  # a bad address raises before anything is written
    smtp_mod.parse_address(recipient)
    message = proto_mod.normalize_message_line_endings(data)
    if client.supports_extension("size"):
        options = [f"size={len(message)}", *options]
    envelope = (_command(b"MAIL FROM:", sender, options, encoding)
                + _command(b"RCPT TO:", recipient, [], encoding) + b"DATA\r\n")
    inner = client.protocol
    if inner is None or inner.transport is None:
        raise aiosmtplib.SMTPServerDisconnected("Server not connected")
    transport = cast(asyncio.WriteTransport, inner.transport)
    replies = _Replies(inner)
    transport.set_protocol(replies)
    try:
        transport.write(envelope)
        got = await _take(replies, 3, timeout)
        sender_refused = bool(got) and got[0].code != 250
        recipient_refused = len(got) > 1 and got[1].code not in (250, 251)
        if (sender_refused or recipient_refused) and len(got) > 2 and got[2].code == 354:
            # a server that starts DATA after refusing the envelope: end the empty
            # message, or our RSET would be read as its text
            transport.write(b".\r\n")
            await _take(replies, 1, timeout)
        if sender_refused:
            raise aiosmtplib.SMTPSenderRefused(got[0].code, got[0].message, sender)
        if recipient_refused:
            raise aiosmtplib.SMTPRecipientsRefused([aiosmtplib.SMTPRecipientRefused(
                got[1].code, got[1].message, recipient)])
        if len(got) < 3:
            raise replies.error or aiosmtplib.SMTPServerDisconnected("Connection lost")
        if got[2].code != 354:
            raise aiosmtplib.SMTPDataError(got[2].code, got[2].message)
        # the body and its end in one write: a separate write of the three bytes was a
        # send of its own (a segment, and a wake-up of the server) for every message
        transport.write(proto_mod.PERIOD_REGEX.sub(b"..", message) + b".\r\n")
        try:
            done = await _take(replies, 1, timeout if end_timeout is None else end_timeout)
        except aiosmtplib.SMTPTimeoutError:
            client.close()  # its answer is still owed
            raise Unanswered("no answer to the end of the message") from None
        if not done:
            raise Unanswered(f"connection lost before the answer to the end of the "
                             f"message ({replies.error or 'closed'})")
        if done[0].code != 250:
            raise aiosmtplib.SMTPDataError(done[0].code, done[0].message)
    except (aiosmtplib.SMTPTimeoutError, asyncio.CancelledError):
        # Replies are still owed: closed here (as aiosmtplib closes on a read timeout),
        # never paired with the RSET or QUIT that would follow on this connection.
        client.close()
        raise
    finally:
        if replies.error is not None:  # lost, or answered with what is not SMTP
            client.close()
        if transport.get_protocol() is replies:
            transport.set_protocol(inner)
