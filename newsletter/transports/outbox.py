"""Outbox: one ``.eml`` file per message in a folder. The default backend, so a
fresh install never sends real mail by accident; also what previews write."""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path

from newsletter.config import OutboxConfig
from newsletter.errors import TransportError
from newsletter.render.mime import Message
from newsletter.transports.base import Transport

SAFE_NAME = re.compile(r"[^A-Za-z0-9._@+-]+")


class OutboxTransport(Transport):
    name = "outbox"
    writes_files = True
    sends_mail = False
    config_section = "outbox"

    @classmethod
    def from_config(cls, cfg: OutboxConfig) -> OutboxTransport:
        return cls(cfg.path)

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    async def open(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)

    def file_for(self, message: Message) -> Path:
        stem = SAFE_NAME.sub("_", message.message_id.strip("<>"))
        return self.path / f"{stem}.eml"

    async def send(self, message: Message) -> str:
        """Written to a temporary name, then renamed: a ``.eml`` in the folder is always
        a whole message. A failed write (disk full) removes its temporary file and
        stops the sending (a fault of ours: the rows stay pending, a rerun writes them)."""
        target = self.file_for(message)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        try:
            with open(tmp, "wb") as f:
                f.write(message.data)
            os.replace(tmp, target)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            # This machine's fault (disk full, no permission), not the recipient's.
            raise TransportError(f"outbox: cannot write {target}: {exc.strerror or exc}",
                                 sender=True) from None
        return message.message_id
