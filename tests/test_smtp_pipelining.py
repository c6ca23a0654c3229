"""PIPELINING (RFC 2920) in the SMTP transport: MAIL, RCPT and DATA in one write when the
server offers it, the same bytes and the same error rules as one command at a time.

The server here is a small SMTP responder on 127.0.0.1 that can tell whether a
client pipelined (RCPT and DATA arrived before it answered MAIL) and can answer what
broken or busy servers answer: a refused recipient followed by a 354 anyway,
multi-line replies, a 421 and a closed connection, silence. aiosmtpd (the conftest
sink, which offers PIPELINING) covers the ordinary replies in the rest of the suite;
Postfix (tests/test_deferral_real.py, test_bounces_real.py) offers it too.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from newsletter.config import SmtpConfig
from newsletter.errors import TransportError
from newsletter.render.mime import Message
from newsletter.transports.smtp import SmtpTransport

from .conftest import SmtpSink


@dataclass
class Transaction:
    mail: bytes = b""
    rcpt: bytes = b""
    pipelined: bool = False  # RCPT and DATA had arrived before MAIL was answered
    body: bytes | None = None  # what came between 354 and the lone "."


@dataclass
class Scripted:
    """Replies by command (a list per command is used in turn, the last one kept);
    ``close_after`` closes the connection after answering that command."""

    port: int = 0
    offer: bool = True
    replies: dict[str, list[bytes]] = field(default_factory=dict)
    close_after: str = ""
    silent_after_body: bool = False
    after_silence: bytes | None = None  # what the client sent while we kept silent
    delay: float = 0.0  # before answering MAIL, and again before RCPT
    transactions: list[Transaction] = field(default_factory=list)
    connections: int = 0

    def reply(self, verb: str, default: bytes) -> bytes:
        queue = self.replies.get(verb)
        if not queue:
            return default
        return queue.pop(0) if len(queue) > 1 else queue[0]

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        writer.write(b"220 scripted ESMTP\r\n")
        try:
            while line := await reader.readline():
                verb = line[:4].upper()
                if verb == b"EHLO":
                    writer.write(b"250-scripted\r\n" + (b"250-PIPELINING\r\n" if self.offer
                                                         else b"") + b"250 SIZE 10000000\r\n")
                elif verb == b"MAIL":
                    await self.transaction(line, reader, writer)
                    if self.close_after in ("MAIL", "RCPT", "DATA"):
                        writer.close()
                        return
                elif verb == b"RSET":
                    writer.write(b"250 reset\r\n")
                elif verb == b"QUIT":
                    writer.write(b"221 bye\r\n")
                    break
                else:
                    writer.write(b"502 what\r\n")
                await writer.drain()
        except ConnectionError:
            pass
        writer.close()

    async def transaction(self, mail: bytes, reader: asyncio.StreamReader,
                          writer: asyncio.StreamWriter) -> None:
        t = Transaction(mail=mail.strip())
        self.transactions.append(t)
        rest: list[bytes] = []
        try:  # what arrives before MAIL is answered: a pipelining client's RCPT and DATA
            while len(rest) < 2:
                rest.append(await asyncio.wait_for(reader.readline(), 0.5))
        except TimeoutError:
            pass
        t.pipelined = len(rest) == 2
        mail_reply = self.reply("MAIL", b"250 ok\r\n")
        await asyncio.sleep(self.delay)
        writer.write(mail_reply)
        if self.close_after == "MAIL":
            return
        rcpt = rest[0] if rest else await reader.readline()
        t.rcpt = rcpt.strip()
        rcpt_reply = self.reply("RCPT", b"250 ok\r\n")
        await asyncio.sleep(self.delay)
        writer.write(rcpt_reply)
        data = rest[1] if len(rest) > 1 else await reader.readline()
        assert data.strip().upper() == b"DATA", data
        accepted = mail_reply.startswith(b"250") and rcpt_reply.startswith(b"25")
        data_reply = self.reply("DATA", b"354 go ahead\r\n" if accepted else
                                b"554 no valid recipients\r\n")
        writer.write(data_reply)
        if not data_reply.startswith(b"354"):
            return
        body = bytearray()
        while (line := await reader.readline()) not in (b".\r\n", b""):
            body += line
        t.body = bytes(body)
        if self.silent_after_body:
            try:  # a QUIT or RSET written into the unanswered transaction, or the close
                self.after_silence = await asyncio.wait_for(reader.read(100), 5)
            except TimeoutError:
                self.after_silence = None
            return
        writer.write(self.reply("END", b"250 queued\r\n"))


@pytest.fixture
def scripted() -> Iterator[Scripted]:
    server = Scripted()
    loop = asyncio.new_event_loop()
    ready = threading.Event()

    async def start() -> asyncio.Server:
        s = await asyncio.start_server(server.serve, "127.0.0.1", 0)
        server.port = s.sockets[0].getsockname()[1]
        return s

    def run() -> None:
        asyncio.set_event_loop(loop)
        srv = loop.run_until_complete(start())
        ready.set()
        loop.run_forever()
        srv.close()
        loop.run_until_complete(srv.wait_closed())

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    ready.wait(5)
    yield server
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)


def message(to: str, body: bytes = b"Hello.\r\n") -> Message:
    data = b"From: digest@example.org\r\nTo: " + to.encode() + b"\r\nSubject: s\r\n\r\n" + body
    return Message(to=to, sender="digest@example.org", message_id=to, data=data)


def send_all(port: int, messages: list[Message], *, pipelining: bool = True,
             timeout: float = 2.0, data_timeout: float | None = None
             ) -> list[str | TransportError]:
    """Each message through one transport (one connection), in order: its id or its
    error. The answer to a message's end gets ``data_timeout`` (``timeout`` unless
    given: the default of ten minutes is not waited out here)."""
    async def go() -> list[str | TransportError]:
        t = SmtpTransport(SmtpConfig(host="127.0.0.1", port=port, connections=1,
                                     timeout=timeout, pipelining=pipelining,
                                     data_timeout=data_timeout or timeout))
        out: list[str | TransportError] = []
        await t.open()
        for m in messages:
            try:
                out.append(await t.send(m))
            except TransportError as exc:
                out.append(exc)
        await t.close()
        return out
    return asyncio.run(go())


def test_offered_pipelining_sends_the_envelope_in_one_write(scripted: Scripted) -> None:
    body = b"First line.\r\n.starts with a dot\r\n..two dots\r\nlast\r\n"
    out = send_all(scripted.port, [message("a@example.org", body), message("b@example.org")])
    assert out == ["a@example.org", "b@example.org"]
    assert [t.pipelined for t in scripted.transactions] == [True, True]
    # the size option and the addresses as aiosmtplib writes them; dot-stuffed body
    first = scripted.transactions[0]
    assert first.mail.startswith(b"MAIL FROM:<digest@example.org> size=")
    assert first.rcpt == b"RCPT TO:<a@example.org>"
    assert first.body is not None and b"\r\n..starts with a dot\r\n...two dots\r\n" in first.body
    assert first.body.endswith(b"\r\nlast\r\n")
    assert scripted.connections == 1


@pytest.mark.parametrize("offer,enabled", [(False, True), (True, False)])
def test_one_command_at_a_time_when_not_offered_or_turned_off(
        scripted: Scripted, offer: bool, enabled: bool) -> None:
    scripted.offer = offer
    body = b".a dot\r\n"
    out = send_all(scripted.port, [message("a@example.org", body)], pipelining=enabled)
    assert out == ["a@example.org"]
    assert [t.pipelined for t in scripted.transactions] == [False]
    assert scripted.transactions[0].body is not None
    assert scripted.transactions[0].body.endswith(b"\r\n\r\n..a dot\r\n")


def test_a_refused_recipient_then_a_354_anyway_ends_the_data_and_keeps_the_connection(
        scripted: Scripted) -> None:
    scripted.replies = {"RCPT": [b"550-5.1.1 <gone@example.org>: no such user\r\n"
                                 b"550 5.1.1 see you\r\n", b"250 ok\r\n"],
                        "DATA": [b"354 send it anyway\r\n"]}
    out = send_all(scripted.port, [message("gone@example.org"), message("b@example.org")])
    error = out[0]
    assert isinstance(error, TransportError)
    assert error.permanent and error.bounce and not error.sender
    assert "no such user" in str(error) and "see you" in str(error)  # both reply lines
    assert scripted.transactions[0].body == b""  # ended with a lone "."
    assert out[1] == "b@example.org" and scripted.connections == 1


def test_greylisting_at_rcpt_is_deferred_not_failed(scripted: Scripted) -> None:
    scripted.replies = {"RCPT": [b"450 4.2.0 <a@example.org>: greylisted, try later\r\n",
                                 b"250 ok\r\n"]}
    out = send_all(scripted.port, [message("a@example.org"), message("b@example.org")])
    error = out[0]
    assert isinstance(error, TransportError)
    assert error.later and not error.permanent and "greylisted" in str(error)
    assert scripted.transactions[0].body is None  # no body after the refusal
    assert out[1] == "b@example.org"


def test_our_sender_refused_is_ours(scripted: Scripted) -> None:
    scripted.replies = {"MAIL": [b"553 5.7.1 sender not allowed\r\n"]}
    error = send_all(scripted.port, [message("a@example.org")])[0]
    assert isinstance(error, TransportError)
    assert error.sender and not error.bounce and "553" in str(error)


def test_a_421_and_a_closed_connection_is_transient_and_the_next_message_reconnects(
        scripted: Scripted) -> None:
    scripted.replies = {"MAIL": [b"421 4.3.2 shutting down\r\n", b"250 ok\r\n"]}
    scripted.close_after = "MAIL"
    out = send_all(scripted.port, [message("a@example.org")])
    error = out[0]
    assert isinstance(error, TransportError)
    assert not error.permanent and "421" in str(error)
    scripted.close_after = ""
    assert send_all(scripted.port, [message("b@example.org")]) == ["b@example.org"]


def test_a_server_silent_after_the_body_times_out_and_the_connection_is_closed(
        scripted: Scripted) -> None:
    """The unanswered transaction's connection is closed, not given a QUIT that its
    late reply would answer (and that would wait out a second timeout); the error says
    the server may have the message (``unanswered``: deferred, not sent again)."""
    scripted.silent_after_body = True
    # only the answer to the end is waited out (0.5 s); every other reply gets 10 s, so
    # a loaded machine slow to answer a greeting or MAIL is not taken for the silence
    out = send_all(scripted.port, [message("a@example.org"), message("b@example.org")],
                   timeout=10, data_timeout=0.5)
    error = out[0]
    assert isinstance(error, TransportError)
    assert not error.permanent and error.unanswered and "no answer" in str(error)
    assert scripted.after_silence == b""  # the close, nothing written after the body
    assert scripted.connections == 2  # the next message on a new connection


def test_a_slow_server_gets_the_time_each_command_would_have(scripted: Scripted) -> None:
    """Three commands in one write wait for three replies: each may take nearly the
    per-command timeout, as it may one command at a time. (MAIL answered after 1 s, RCPT
    1 s later: within 1.9 s each, and past it together, by however much a loaded machine
    adds, where 0.6 s against 1.0 s left a margin of 0.4 s for each reply.)"""
    scripted.delay = 1.0
    assert send_all(scripted.port, [message("a@example.org")], timeout=1.9) == \
        ["a@example.org"]
    assert scripted.transactions[0].pipelined


def test_a_354_after_a_refused_sender_is_ended_too(scripted: Scripted) -> None:
    scripted.replies = {"MAIL": [b"550 5.7.1 sender refused\r\n", b"250 ok\r\n"],
                        "RCPT": [b"503 5.5.1 need MAIL first\r\n", b"250 ok\r\n"],
                        "DATA": [b"354 go ahead anyway\r\n", b"354 go ahead\r\n"]}
    out = send_all(scripted.port, [message("a@example.org"), message("b@example.org")])
    error = out[0]
    assert isinstance(error, TransportError) and error.sender
    assert scripted.transactions[0].body == b""
    assert out[1] == "b@example.org" and scripted.connections == 1


def test_a_reply_that_never_ends_is_an_error_not_a_memory_leak(scripted: Scripted) -> None:
    endless = b"".join(b"250-line %d\r\n" % i for i in range(5000)) + b"250 ok\r\n"
    scripted.replies = {"MAIL": [endless, b"250 ok\r\n"]}
    out = send_all(scripted.port, [message("a@example.org"), message("b@example.org")])
    error = out[0]
    assert isinstance(error, TransportError) and "too long" in str(error)
    assert out[1] == "b@example.org" and scripted.connections == 2


def test_the_conftest_sink_offers_pipelining_and_stores_the_same_bytes(
        smtp_sink: SmtpSink) -> None:
    """aiosmtpd reads pipelined commands as it reads any: what it stores is the same
    with and without pipelining."""
    body = b"x\r\n.dot line\r\nend\r\n"
    stored = []
    for enabled in (True, False):
        smtp_sink.messages.clear()
        assert send_all(smtp_sink.port, [message("a@example.org", body)],
                        pipelining=enabled) == ["a@example.org"]
        stored.append(smtp_sink.messages[0])
    assert stored[0] == stored[1]
    assert stored[0][1].endswith(b"\r\n.dot line\r\nend\r\n")
