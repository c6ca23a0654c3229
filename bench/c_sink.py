"""Postfix's C ``smtp-sink`` as a benchmark sink: accepts every message and discards it.

    python bench/c_sink.py [--port N]     # prints the port, runs until Ctrl-C, then the count

Where the aiosmtpd sink spends about 1.75 ms of CPU a message on the same two cores as the
sender, ``smtp-sink`` (from Debian's ``postfix`` package) spends almost nothing, so a
measurement against it shows the sender's own cost. The start and stop logic lives here
once: the benchmarks and the tests' ``smtp_sink_c`` fixture both use :func:`start`.

The sink runs as ``nobody`` when started by root (it refuses to keep root), listens on
127.0.0.1 only, and writes its running counters (``sess=… quit=… mesg=…``) to a file, not a
pipe: a pipe nobody reads would fill after a few thousand messages and stall the sink.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

PATHS = ("/usr/sbin/smtp-sink", "/usr/lib/postfix/sbin/smtp-sink")
HOST = "127.0.0.1"


class SinkError(RuntimeError):
    """The sink could not be started (binary missing, or it exited; the message says why)."""


def find() -> str | None:
    """The ``smtp-sink`` binary, or None when the ``postfix`` package is not installed."""
    for path in PATHS:
        if os.access(path, os.X_OK):
            return path
    return shutil.which("smtp-sink")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


class CSink:
    """A running ``smtp-sink``; ``received()`` is the number of messages it has taken."""

    def __init__(self, proc: subprocess.Popen[bytes], port: int, workdir: Path) -> None:
        self.proc, self.host, self.port, self.workdir = proc, HOST, port, workdir
        self.counters = workdir / "counters"

    def received(self) -> int:
        """Messages completed so far (the last ``mesg=N`` the sink printed)."""
        found = re.findall(rb"mesg=(\d+)", self.counters.read_bytes()[-200:])
        return int(found[-1]) if found else 0

    def stop(self) -> int:
        """Stop the sink (SIGTERM, then SIGKILL after 10 s); returns the message count."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        count = self.received() if self.counters.exists() else 0
        shutil.rmtree(self.workdir, ignore_errors=True)
        return count

    def __enter__(self) -> CSink:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def _wait_ready(proc: subprocess.Popen[bytes], port: int, timeout: float) -> bool:
    """True once the sink greets on ``port``; False if it exited first (port taken)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with socket.create_connection((HOST, port), timeout=1) as s:
                if s.recv(4).startswith(b"220"):
                    return True
        except OSError:
            time.sleep(0.02)
    return False


def start(port: int = 0, *, backlog: int = 1024, max_sessions: int = 512,
          hostname: str = "sink.test", timeout: float = 10.0) -> CSink:
    """Start ``smtp-sink`` on 127.0.0.1:``port`` (0: a free one, retried if taken meanwhile).

    ``max_sessions`` bounds simultaneous connections (``-m``); ``backlog`` is the listen
    queue. Raises :class:`SinkError` with the sink's own words when it cannot start.
    """
    binary = find()
    if binary is None:
        raise SinkError("smtp-sink not found (Debian package postfix): " + ", ".join(PATHS))
    as_root = os.geteuid() == 0
    last_error = ""
    for _ in range(3 if port == 0 else 1):
        chosen = port or _free_port()
        workdir = Path(tempfile.mkdtemp(prefix="nl-c-sink-"))
        argv = [binary, "-4", "-c", "-h", hostname, "-m", str(max_sessions),
                f"{HOST}:{chosen}", str(backlog)]
        with open(workdir / "counters", "wb") as out, open(workdir / "stderr", "wb") as err:
            proc = subprocess.Popen(argv, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                    user="nobody" if as_root else None,
                                    group="nogroup" if as_root else None)
        if _wait_ready(proc, chosen, timeout):
            return CSink(proc, chosen, workdir)
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        last_error = (workdir / "stderr").read_text(errors="replace").strip()
        shutil.rmtree(workdir, ignore_errors=True)
    raise SinkError(f"smtp-sink did not start on {HOST}: {last_error or 'no answer'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    sink = start(args.port)
    print(f"smtp-sink on {sink.host}:{sink.port}", flush=True)
    try:
        signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        print(f"received {sink.stop()}", flush=True)


if __name__ == "__main__":
    main()
