"""How the ``newsletter`` process ends (``newsletter.__main__.finish``): it skips the
interpreter's object-by-object teardown, so what that teardown used to do as a side
effect is checked here on a real process: exit codes as ``sys.exit`` gives them,
every byte of output delivered through a pipe, and the SQLite database whole in its
own file (a plain copy of ``subscribers.db`` must have what was just written)."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

from tests.conftest import CliRun


def test_exit_codes_are_those_of_the_command(cli_process: CliRun) -> None:
    assert cli_process("--help").code == 0
    assert cli_process("no-such-command").code == 2  # click's usage error
    bad = cli_process("subscribers", "add", "not-an-address", "--keywords", "graphs")
    assert bad.code != 0 and bad.stderr.startswith("error: ") and "not-an-address" in bad.stderr


def test_a_long_output_arrives_whole_through_a_pipe(cli_process: CliRun,
                                                    tmp_path: Path) -> None:
    """Output is flushed before the process ends: the JSON of many subscribers parses
    and names every one of them."""
    rows = "".join(f"reader{i}@example.org,Reader {i},diffusion\n" for i in range(800))
    (tmp_path / "people.csv").write_text("email,name,keywords\n" + rows)
    assert cli_process("subscribers", "import", "people.csv").code == 0
    listed = cli_process("subscribers", "list", "--json")
    assert listed.code == 0, listed.stderr
    emails = {s["email"] for s in json.loads(listed.stdout)}
    assert len(emails) == 800


def test_a_plain_copy_of_the_database_has_what_the_command_wrote(tmp_path: Path) -> None:
    """The engine is closed before the fast exit, so SQLite folds its write-ahead log
    into the database file: the copy (without any ``-wal`` file) has the subscriber."""
    proc = subprocess.run([sys.executable, "-m", "newsletter", "subscribers", "add",
                           "copied@example.org", "--keywords", "graphs"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    wal = tmp_path / "subscribers.db-wal"
    assert not wal.exists() or wal.stat().st_size == 0
    shutil.copy(tmp_path / "subscribers.db", tmp_path / "copy.db")
    with sqlite3.connect(tmp_path / "copy.db") as db:
        found = db.execute("SELECT email FROM subscribers").fetchall()
    assert found == [("copied@example.org",)]
