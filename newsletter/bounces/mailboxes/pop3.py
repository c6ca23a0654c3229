"""A POP3 mailbox: ``pop3s://user:pass@host[:995]`` or ``pop3://…[:110]`` (STLS;
plain text only to a server on this machine that offers no STLS).

POP3 has no flags and no batch fetch: each message is one RETR, and processed
mail is deleted (DELE, committed at QUIT), whatever ``[bounces] after`` says.
Mail that could not be read is left on the server; the caller's record of
message digests keeps it from being counted twice.
"""

from __future__ import annotations

import contextlib
import poplib
from collections.abc import Iterator

from newsletter.bounces.mailboxes.base import BATCH, MailboxError, Where, tls_context
from newsletter.bounces.mailboxes.imap import is_loopback


class Pop3Box:
    def __init__(self, where: Where, *, cafile: str | None = None,
                 timeout: float = 30) -> None:
        self.where = where
        self.numbers: dict[str, int] = {}
        self.conn = self._connect(cafile, timeout)

    def _connect(self, cafile: str | None, timeout: float) -> poplib.POP3:
        w = self.where
        try:
            if w.scheme == "pop3s":
                conn: poplib.POP3 = poplib.POP3_SSL(w.host, w.port or 995, timeout=timeout,
                                                   context=tls_context(cafile))
            else:
                conn = poplib.POP3(w.host, w.port or 110, timeout=timeout)
                if "STLS" in conn.capa():
                    conn.stls(tls_context(cafile))
                elif not is_loopback(w.host):
                    raise MailboxError(f"[bounces] mailbox: {w.shown()} offers no STLS; use "
                                       "pop3s:// (the password must not cross the network "
                                       "in clear)")
            conn.user(w.user)
            conn.pass_(w.password)
            return conn
        except MailboxError:
            raise
        except poplib.error_proto as exc:
            raise MailboxError(f"[bounces] mailbox: {w.shown()}: {_text(exc)}") from None
        except OSError as exc:  # TimeoutError included
            raise MailboxError(f"[bounces] mailbox: cannot reach {w.shown()}: "
                               f"{exc.strerror or exc}") from None

    def batches(self, size: int = BATCH) -> Iterator[list[tuple[str, bytes]]]:
        _, listing, _ = self.conn.uidl()
        for line in listing:
            number, _, uid = line.decode("ascii", "replace").partition(" ")
            self.numbers[uid] = int(number)
        uids = list(self.numbers)
        for start in range(0, len(uids), size):
            batch = []
            for uid in uids[start:start + size]:
                _, lines, _ = self.conn.retr(self.numbers[uid])
                batch.append((uid, b"\r\n".join(lines) + b"\r\n"))
            yield batch

    def done(self, keys: list[str]) -> None:
        for uid in keys:
            if uid in self.numbers:
                self.conn.dele(self.numbers[uid])

    def close(self) -> None:
        with contextlib.suppress(poplib.error_proto, OSError):
            self.conn.quit()  # commits the deletions


def _text(exc: Exception) -> str:
    value = exc.args[0] if exc.args else exc
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return " ".join(str(value).split())[:200]
