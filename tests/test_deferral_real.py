"""Deferrals and sender-side failures against Debian's Postfix (submission port,
STARTTLS, AUTH through Dovecot's SASL), driven through the `newsletter` commands.

* Greylisting (the fixture's policy service answers 450 4.7.1 for a few seconds):
  the row is deferred, `status` shows its next try, and the daemon's deferred job
  (or a later `newsletter send`) delivers it once the window has passed.
* A wrong password: sending stops at the first refusal with one line and a non-zero
  exit, every row stays pending, Postfix logs one failed login (not one or two per
  message), and the rerun with the right password delivers every message, logging
  in once per connection.
* A client trusting another CA: stops once, every row pending.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from newsletter.app import App
from newsletter.config import load_settings
from newsletter.delivery.scheduler import retry_deferred
from newsletter.store.db import session_scope
from newsletter.store.models import Delivery, Subscriber

from .test_bounces_real import operator_config, seed

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent
GREY_SECONDS = 2.0


def write_config(tmp_path: Path, postfix, *, password: str | None = None,  # type: ignore[no-untyped-def]
                 ca_file: str | None = None, retry_first_minutes: float = 5.0) -> str:
    """An operator sending through their own Postfix: submission, STARTTLS, AUTH."""
    return str(operator_config(tmp_path, postfix, password=password, ca_file=ca_file,
                               transport="max_attempts = 3",
                               smtp="connections = 2\ntimeout = 10",
                               more=f"[delivery]\nretry_first_minutes = {retry_first_minutes}"))


def states(engine: Any) -> dict[str, str]:
    with session_scope(engine) as s:
        return dict(s.execute(select(Subscriber.email, Delivery.status).join(Delivery)).all())


def test_greylisted_is_deferred_then_delivered_by_the_run_tick_and_by_send(
        cli, postfix, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    ada, bob = f"ada@{postfix.domain}", f"bob@{postfix.domain}"
    config = write_config(tmp_path, postfix, retry_first_minutes=GREY_SECONDS / 60)
    engine = seed(cli, config, tmp_path, [ada, bob])
    postfix.greylist(ada, GREY_SECONDS)
    sent = cli("--config", config, "send", "--date", "2025-12-26", "--yes", "--force")
    greylisted_at = time.monotonic()
    assert sent.code == 0, sent.stderr
    assert "deferred 1 (refused for now)" in sent.stderr, sent.stderr
    assert states(engine) == {ada: "deferred", bob: "sent"}
    assert postfix.wait_for("bob", 1)
    # one refusal, deferred at once: trying again within seconds cannot beat greylisting
    [answer] = [a for r, a in postfix.greylister.decisions if r == ada]
    assert answer.startswith("450 4.7.1")

    shown = cli("--config", config, "status")
    assert f"deferred: {ada}: next try 20" in shown.stdout and "450 4.7.1" in shown.stdout
    as_json = json.loads(cli("--config", config, "status", "--json").stdout)
    assert as_json["counts"]["deferred"] == 1 and as_json["deferred"][0]["email"] == ada

    # The greylisting window passes; `newsletter run`'s deferred job sends it, once.
    time.sleep(max(0.0, greylisted_at + GREY_SECONDS + 0.2 - time.monotonic()))
    done = retry_deferred(App(load_settings(config), engine))
    assert done.due == 1 and done.report.counts == {"sent": 1}, done.report.errors
    assert states(engine) == {ada: "sent", bob: "sent"}
    assert len(postfix.wait_for("ada", 1)) == 1

    # The next day: greylisted again; this time a later `newsletter send` sends it.
    cli("--config", config, "ingest", str(ROOT / "tests" / "payloads" / "dailypapers.json"))
    postfix.greylist(ada, GREY_SECONDS)
    again = cli("--config", config, "send", "--date", "2025-12-27", "--yes", "--force")
    greylisted_at = time.monotonic()
    assert again.code == 0 and "deferred 1 " in again.stderr, again.stderr
    time.sleep(max(0.0, greylisted_at + GREY_SECONDS + 0.2 - time.monotonic()))
    rerun = cli("--config", config, "send", "--date", "2025-12-27", "--yes", "--force")
    assert rerun.code == 0, rerun.stderr
    assert "retried 1 deferred delivery whose next try was due" in rerun.stderr, rerun.stderr
    assert set(states(engine).values()) == {"sent"}
    assert len(postfix.wait_for("ada", 2)) == 2  # one per day, never two copies
    time.sleep(0.5)
    assert len(postfix.messages("ada")) == 2


def said(stderr: str) -> list[str]:
    """What a send printed, without the --force warnings (the .test names here)."""
    return [line for line in stderr.splitlines()
            if line.strip() and not line.startswith("warning: sending anyway (--force)")]


def auth_failures(postfix) -> int:  # type: ignore[no-untyped-def]
    return postfix.log().count("authentication failed")


def connections(postfix) -> int:  # type: ignore[no-untyped-def]
    return sum(1 for line in postfix.log().splitlines()
               if "smtpd[" in line and "]: connect from" in line)


def logged(count, postfix, since: int, at_least: int = 1) -> int:  # type: ignore[no-untyped-def]
    """How many more of ``count``'s lines Postfix's log has than ``since``, once it has
    ``at_least`` more (or after 15 s): Postfix writes its log through postlogd, a
    moment after the answer that the sender acted on, and a count read at once could
    miss the line the test is about."""
    deadline = time.monotonic() + 15
    while count(postfix) - since < at_least and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.2)  # and any line after it that was written in the same moment
    return int(count(postfix) - since)


def test_a_wrong_password_stops_once_and_the_rerun_delivers_all(
        cli, postfix, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    people = [f"ada+{i}@{postfix.domain}" for i in range(20)]
    wrong = write_config(tmp_path, postfix, password="wrong")
    engine = seed(cli, wrong, tmp_path, people)
    failures, conns = auth_failures(postfix), connections(postfix)
    started = time.monotonic()
    result = cli("--config", wrong, "send", "--date", "2025-12-26", "--yes", "--force")
    stopped_in = time.monotonic() - started
    assert result.code != 0
    lines = said(result.stderr)
    assert len(lines) == 1 and lines[0].startswith("error: sending stopped: SMTP login "
                                                   "refused: 535"), result.stderr
    assert set(states(engine).values()) == {"pending"}  # nothing failed, nothing lost
    assert logged(auth_failures, postfix, failures) == 1, postfix.log()[-3000:]  # not 20, 40
    assert logged(connections, postfix, conns) == 1
    print(f"wrong password: stopped in {stopped_in:.2f}s, "
          f"{auth_failures(postfix) - failures} failed login at the server")

    right = write_config(tmp_path, postfix)
    conns = connections(postfix)
    fixed = cli("--config", right, "send", "--date", "2025-12-26", "--yes", "--force")
    assert fixed.code == 0, fixed.stderr
    assert set(states(engine).values()) == {"sent"}
    assert len(postfix.wait_for("ada", 20)) == 20
    # Logged in once per connection (two at most), not once per message.
    assert 1 <= logged(connections, postfix, conns) <= 2, postfix.log()[-3000:]
    assert auth_failures(postfix) - failures == 1


def test_a_certificate_from_another_ca_stops_once_with_the_rows_pending(
        cli, postfix, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import certifi

    people = [f"bob+{i}@{postfix.domain}" for i in range(5)]
    config = write_config(tmp_path, postfix, ca_file=certifi.where())
    engine = seed(cli, config, tmp_path, people)
    conns = connections(postfix)
    result = cli("--config", config, "send", "--date", "2025-12-26", "--yes", "--force")
    assert result.code != 0
    lines = said(result.stderr)
    assert len(lines) == 1 and "certificate" in lines[0], result.stderr
    assert set(states(engine).values()) == {"pending"}
    assert logged(connections, postfix, conns) == 1  # one try, not five per message
    assert postfix.messages("bob") == []
    fixed = cli("--config", write_config(tmp_path, postfix), "send", "--date", "2025-12-26",
                "--yes", "--force")
    assert fixed.code == 0, fixed.stderr
    assert len(postfix.wait_for("bob", 5)) == 5
