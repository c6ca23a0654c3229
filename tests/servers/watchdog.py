"""Stops a test session's servers if the session dies without cleaning up.

    python tests/servers/watchdog.py OWNER_PID FOLDER

Started by tests/real_servers.py beside the servers. While the test process OWNER_PID
lives, it only waits; once that process is gone (killed, or ended by a hard timeout) and
FOLDER still exists, it stops every server listed in FOLDER/pids (lines "PID NAME"; a
process is signalled only if its command line still names NAME, so a reused PID is left
alone), stops the Postfix instance, and removes FOLDER. A normal teardown removes FOLDER
first, and the watchdog then exits by itself.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def named(pid: int, name: str) -> bool:
    try:
        return name.encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def clean(folder: Path) -> None:
    config = folder / "postfix" / "config"
    if (config / "main.cf").exists():
        subprocess.run(["/usr/sbin/postfix", "-c", str(config), "abort"],
                       capture_output=True, check=False, timeout=60)
    pids = folder / "pids"
    lines = pids.read_text().splitlines() if pids.exists() else []
    for line in lines:
        pid, _, name = line.partition(" ")
        if pid.isdigit() and named(int(pid), name):
            os.kill(int(pid), signal.SIGTERM)
    time.sleep(2)
    if os.environ.get("NL_TEST_KEEP_SERVERS") != "1":
        shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    owner, folder = int(sys.argv[1]), Path(sys.argv[2])
    while alive(owner) and folder.exists():
        time.sleep(1)
    if folder.exists():
        clean(folder)


if __name__ == "__main__":
    main()
