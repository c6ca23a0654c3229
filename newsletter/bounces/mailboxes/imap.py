"""An IMAP folder: ``imaps://user:pass@host[:993]/Folder`` (TLS from the first
byte) or ``imap://…[:143]/Folder`` (STARTTLS; plain text only to a server on
this machine that offers no STARTTLS).

Unprocessed mail is found with one search and fetched ``BATCH`` messages per
round trip (``UID FETCH 1,2,3 (BODY.PEEK[])``: peeking leaves ``\\Seen`` as a person
left it). ``done`` marks with a keyword of our own (``flag``), moves to
``[bounces] move_to`` (``move``), or deletes and expunges (``delete``).
"""

from __future__ import annotations

import contextlib
import imaplib
import ipaddress
import re
from collections.abc import Iterator

from newsletter.bounces.mailboxes.base import (
    AFTER,
    BATCH,
    MailboxError,
    Where,
    tls_context,
)

DONE = "$NewsletterDone"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class ImapBox:
    def __init__(self, where: Where, *, after: str = "flag", move_to: str = "",
                 cafile: str | None = None, timeout: float = 30,
                 readonly: bool = False) -> None:
        """``readonly``: the folder examined, not selected, and left without CLOSE,
        which expunges every message marked deleted (`newsletter check` looks, and
        must change nothing)."""
        self.readonly = readonly
        if after not in AFTER:
            raise MailboxError(f"[bounces] after: expected one of {', '.join(AFTER)}, "
                               f"got {after!r}")
        if after == "move" and not move_to:
            raise MailboxError("[bounces] move_to: name the folder to move processed mail to")
        self.where, self.after, self.move_to = where, after, move_to
        self.conn = self._connect(cafile, timeout)

    def _connect(self, cafile: str | None, timeout: float) -> imaplib.IMAP4:
        w = self.where
        try:
            if w.scheme == "imaps":
                conn: imaplib.IMAP4 = imaplib.IMAP4_SSL(
                    w.host, w.port or 993, ssl_context=tls_context(cafile), timeout=timeout)
            else:
                conn = imaplib.IMAP4(w.host, w.port or 143, timeout=timeout)
                if "STARTTLS" in conn.capabilities:
                    conn.starttls(tls_context(cafile))
                elif not is_loopback(w.host):
                    raise MailboxError(f"[bounces] mailbox: {w.shown()} offers no STARTTLS; "
                                       "use imaps:// (the password must not cross the network "
                                       "in clear)")
            conn.login(w.user, w.password)
            typ, data = conn.select(_quote(w.path), readonly=self.readonly)
            if typ != "OK":
                raise MailboxError(f"[bounces] mailbox: {w.shown()}: no folder {w.path!r}")
            return conn
        except MailboxError:
            raise
        except imaplib.IMAP4.error as exc:
            raise MailboxError(f"[bounces] mailbox: {w.shown()}: {_text(exc)}") from None
        except UnicodeEncodeError:  # imaplib's LOGIN sends ASCII only
            raise MailboxError(f"[bounces] mailbox: {w.shown()}: the user name or password "
                               "has characters IMAP's LOGIN cannot send (ASCII only): "
                               "use an ASCII password for this mailbox") from None
        except OSError as exc:  # TimeoutError included
            raise MailboxError(f"[bounces] mailbox: cannot reach {w.shown()}: "
                               f"{exc.strerror or exc}") from None

    def _uid(self, *args: str) -> list[object]:
        typ, data = self.conn.uid(*args)
        if typ != "OK":
            raise MailboxError(f"[bounces] mailbox: {self.where.shown()}: {args[0]} failed: "
                               f"{_text(data)}")
        return list(data)

    def batches(self, size: int = BATCH) -> Iterator[list[tuple[str, bytes]]]:
        found = self._uid("SEARCH", "UNKEYWORD", DONE, "UNDELETED")
        first = found[0] if found else b""
        uids = [u.decode() for u in first.split()] if isinstance(first, bytes) else []
        for start in range(0, len(uids), size):
            chunk = uids[start:start + size]
            data = self._uid("FETCH", ",".join(chunk), "(UID BODY.PEEK[])")
            batch: list[tuple[str, bytes]] = []
            for item in data:
                if isinstance(item, tuple) and len(item) == 2:
                    m = re.search(rb"UID (\d+)", item[0])
                    if m:
                        batch.append((m.group(1).decode(), bytes(item[1])))
            yield batch

    def done(self, keys: list[str]) -> None:
        if not keys:
            return
        uids = ",".join(keys)
        if self.after == "flag":
            self._uid("STORE", uids, "+FLAGS.SILENT", f"({DONE} \\Seen)")
        elif self.after == "move":
            target = _quote(self.move_to)
            self.conn.create(target)  # fails harmlessly when it exists
            if "MOVE" in self.conn.capabilities:
                self._uid("MOVE", uids, target)
            else:
                self._uid("COPY", uids, target)
                self._delete(uids)
        else:
            self._delete(uids)

    def _delete(self, uids: str) -> None:
        self._uid("STORE", uids, "+FLAGS.SILENT", "(\\Deleted)")
        if "UIDPLUS" in self.conn.capabilities:
            self._uid("EXPUNGE", uids)
        else:
            self.conn.expunge()

    def close(self) -> None:
        with contextlib.suppress(imaplib.IMAP4.error, OSError):
            if not self.readonly:
                self.conn.close()
            self.conn.logout()


def _quote(folder: str) -> str:
    return '"' + folder.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _text(value: object) -> str:
    if isinstance(value, imaplib.IMAP4.error) and value.args:  # the server's words, not
        value = value.args[0]  # the repr of its bytes (b'[AUTHENTICATIONFAILED] ...')
    if isinstance(value, list | tuple):
        value = b" ".join(v if isinstance(v, bytes) else str(v).encode() for v in value)
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return " ".join(str(value).split())[:200]
