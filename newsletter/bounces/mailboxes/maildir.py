"""A Maildir on this machine (``maildir:/path``): what the local MTA delivers to.

New mail is read from ``new/``; ``done`` files it in ``cur/`` with the Seen flag
(``flag`` or ``move``: the same thing in a Maildir) or deletes it (``delete``).
A message a person already moved to ``cur/`` has been looked at and is left alone.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from newsletter.bounces.mailboxes.base import AFTER, BATCH, MailboxError, Where


class MaildirBox:
    def __init__(self, where: Where, *, after: str = "flag") -> None:
        if after not in AFTER:
            raise MailboxError(f"[bounces] after: expected one of {', '.join(AFTER)}, "
                               f"got {after!r}")
        self.where, self.after = where, after
        self.root = Path(where.path)
        for sub in ("new", "cur", "tmp"):
            if not (self.root / sub).is_dir():
                raise MailboxError(f"[bounces] mailbox: {where.shown()} is not a Maildir "
                                   f"(no {sub}/ folder)")

    def batches(self, size: int = BATCH) -> Iterator[list[tuple[str, bytes]]]:
        names = sorted(n for n in os.listdir(self.root / "new") if not n.startswith("."))
        for start in range(0, len(names), size):
            batch = []
            for name in names[start:start + size]:
                try:
                    batch.append((name, (self.root / "new" / name).read_bytes()))
                except FileNotFoundError:  # taken by another reader meanwhile
                    continue
            yield batch

    def done(self, keys: list[str]) -> None:
        for name in keys:
            src = self.root / "new" / name
            try:
                if self.after == "delete":
                    src.unlink()
                else:
                    src.rename(self.root / "cur" / f"{name.split(':', 1)[0]}:2,S")
            except FileNotFoundError:
                continue

    def close(self) -> None:
        return None
