"""What `newsletter send` does with the answers a real Postfix gives, read back from
both sides: the ledger (`newsletter status --json`) and Postfix's own log and Maildir.

The fixture's rules listener (``postfix.refusing``: submission with STARTTLS and AUTH)
answers as each test sets it: per-recipient refusals at RCPT, DATA and the end of the
data from regexp access maps, a message size limit, a connection limit per client, a
hard error limit that drops the connection in the middle of a pipelined transaction.

* A reader refused for good (550/554, at RCPT or after DATA) is failed with the
  server's words (after DATA, once others were accepted: ``refused_content``, which a
  `send` of the day tries again, and sends once the server takes it); one refused for
  now (450/451/452) is deferred with them and sent once when due; nobody gets two
  copies across reruns.
* A message over the server's size limit (552 to MAIL FROM ... SIZE=), or refused for
  its content (5xx to DATA or its end), is not judged until the server accepts a
  message of the edition: when every message is refused the run stops with every row
  pending (the sender's to fix); when one reader's alone is (a larger digest), it is
  failed (``refused_content``), not bounced, and the others are sent; once the server
  takes it, a `send` of the day sends it.
* More ``[smtp] connections`` than the server allows from one client (421 at connect):
  the message waits for an open connection; no reader is deferred for it.
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from .test_bounces_real import operator_config, seed
from .test_deferral_real import said, states

pytestmark = pytest.mark.slow
DAY = "2025-12-26"
RETRY_SECONDS = 3.0

RCPT = r"""/^ada\+perm1@/ 550 5.1.1 no such user here
/^ada\+perm2@/ 554 5.7.1 refused by policy
/^ada\+later1@/ 450 4.2.1 mailbox busy
/^ada\+later2@/ 451 4.3.0 local trouble
/^ada\+later3@/ 452 4.2.2 mailbox full
"""
DATA = r"""/^ada\+dataperm@/ 554 5.7.1 data refused
/^ada\+datalater@/ 451 4.7.1 data later
"""
END = r"""/^ada\+endperm@/ 550 5.7.1 content refused
/^ada\+endlater@/ 452 4.3.1 insufficient storage
"""
# Everything but RCPT's refusals, and the connection dropped at the third error (a
# refused RCPT, and every RSET past the first counts as one): Postfix answers the
# pipelined DATA with "421 4.7.0 Error: too many errors" and hangs up.
RULES = {"smtpd_recipient_restrictions": "check_recipient_access regexp:{maps}/rcpt",
         "smtpd_data_restrictions": "check_recipient_access regexp:{maps}/data",
         "smtpd_end_of_data_restrictions": "check_recipient_access regexp:{maps}/end",
         "smtpd_hard_error_limit": "3", "smtpd_soft_error_limit": "1",
         "smtpd_junk_command_limit": "1"}


def config_for(tmp_path: Path, postfix, connections: int = 1) -> str:  # type: ignore[no-untyped-def]
    return str(operator_config(
        tmp_path, postfix, port=postfix.rules_port, transport="max_attempts = 3",
        smtp=f"connections = {connections}\ntimeout = 10",
        more=f"[delivery]\nretry_first_minutes = {RETRY_SECONDS / 60}"))


def send(cli, config: str) -> Any:  # type: ignore[no-untyped-def]
    return cli("--config", config, "send", "--date", DAY, "--yes", "--force")


def status(cli, config: str) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    result = cli("--config", config, "status", "--json")
    assert result.code == 0, result.stderr
    return dict(json.loads(result.stdout))


def copies(postfix) -> Counter[str]:  # type: ignore[no-untyped-def]
    """Messages delivered per recipient, from Postfix's log (virtual's status=sent)."""
    return Counter(re.findall(r"virtual\[\d+\]: \w+: to=<([^>]+)>.*status=sent", postfix.log()))


def settle(postfix, n: int) -> Counter[str]:  # type: ignore[no-untyped-def]
    """Postfix's deliveries once ``n`` are in the Maildir (and a moment for more)."""
    postfix.wait_for("ada", n)
    time.sleep(0.5)
    assert len(postfix.messages("ada")) == n
    return copies(postfix)


def test_each_refusal_is_failed_or_deferred_with_the_servers_words_never_sent_twice(
        cli, postfix, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    postfix.refusing({"rcpt": RCPT, "data": DATA, "end": END}, **RULES)
    names = ["ok1", "perm1", "later1", "dataperm", "ok2", "perm2", "later2", "endperm",
             "ok3", "later3", "datalater", "endlater", "ok4"]
    people = {n: f"ada+{n}@{postfix.domain}" for n in names}
    config = config_for(tmp_path, postfix)
    engine = seed(cli, config, tmp_path, list(people.values()))
    before = copies(postfix)

    first = send(cli, config)
    assert first.code == 3, first.stderr  # a delivery failed
    lines = said(first.stderr)
    assert any(line.startswith("sent 4, failed 4 ") for line in lines), lines
    assert any(line.startswith("deferred 5 (refused for now)") for line in lines), lines
    failed = {n: f"  failed: {people[n]}: SMTP {w}" for n, w in [
        ("perm1", "550 5.1.1"), ("perm2", "554 5.7.1"), ("dataperm", "554 5.7.1"),
        ("endperm", "550 5.7.1")]}
    for name, start in failed.items():
        assert any(line.startswith(start) for line in lines), (name, lines)
    ok, deferred = ["ok1", "ok2", "ok3", "ok4"], ["later1", "later2", "later3", "datalater",
                                                  "endlater"]
    assert states(engine) == {people[n]: ("sent" if n in ok else "deferred" if n in deferred
                                          else "failed") for n in names}
    shown = status(cli, config)
    words = {d["email"]: d["error"] for d in shown["deferred"]}
    for name, answer in [("later1", "450 4.2.1"), ("later2", "451 4.3.0"),
                         ("later3", "452 4.2.2"), ("datalater", "451 4.7.1"),
                         ("endlater", "452 4.3.1")]:
        assert answer in words[people[name]], words
    # refused at DATA or its end once others were accepted: for their content, which a
    # requeue (this `send` again, the console's retry) tries again; at RCPT: for good
    content = ["dataperm", "endperm"]
    assert {e["email"]: e["reason"] for e in shown["last_errors"]} == {
        people[n]: "refused_content" if n in content else "permanent" for n in failed}
    assert shown["subscribers"]["bounced"] == 1  # 550 5.1.1 only
    assert "too many errors" in postfix.log()  # dropped mid-session, and it did not matter
    assert settle(postfix, 4) - before == Counter(people[n] for n in ok)

    # Again at once: nothing is due; those refused for their content are tried again
    # and refused again; nothing is sent twice.
    again = send(cli, config)
    assert again.code == 3, again.stderr
    assert any(line.startswith("sent 0, failed 2 ") for line in said(again.stderr))
    assert settle(postfix, 4) - before == Counter(people[n] for n in ok)

    # The server takes everyone now; once the deferred rows are due, each goes once,
    # and so do those refused for their content.
    postfix.refusing()
    time.sleep(RETRY_SECONDS + 0.5)
    due = send(cli, config)
    assert due.code == 0, due.stderr
    assert "retried 5 deferred deliveries whose next try was due" in due.stderr, due.stderr
    went = Counter(people[n] for n in ok + deferred + content)
    assert settle(postfix, 11) - before == went
    assert set(states(engine).values()) == {"sent", "failed"}
    assert send(cli, config).code == 0
    assert settle(postfix, 11) - before == went


def test_a_message_over_the_size_limit_stops_the_run_with_every_row_pending(
        cli, postfix, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    postfix.refusing(message_size_limit="5000")
    people = [f"ada+{n}@{postfix.domain}" for n in range(4)]
    config = config_for(tmp_path, postfix)
    engine = seed(cli, config, tmp_path, people)
    result = send(cli, config)
    assert result.code == 1
    [line] = said(result.stderr)
    assert line.startswith("error: sending stopped: SMTP 552 5.3.4 Message size exceeds"), line
    assert set(states(engine).values()) == {"pending"}
    assert "reject: MAIL from" in postfix.log()  # refused at MAIL FROM ... SIZE=, no body sent
    postfix.refusing()
    assert send(cli, config).code == 0
    assert set(states(engine).values()) == {"sent"}


def test_one_readers_digest_over_the_size_limit_fails_alone(
        cli, postfix, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Digests differ in size (picks, explanations): a limit between one reader's and
    the rest's. That reader, first in the queue, was the run's first refusal: it
    stopped every run that reached it (552 was taken for the sender's fault), and the
    readers after it were never sent."""
    from sqlalchemy import update

    from newsletter.store.db import session_scope
    from newsletter.store.models import Subscriber

    big = f"ada+big@{postfix.domain}"
    people = [big, *(f"ada+{n}@{postfix.domain}" for n in range(5))]
    config = config_for(tmp_path, postfix, connections=2)
    engine = seed(cli, config, tmp_path, people)
    many = ", ".join(["diffusion", "transformer", "language models", "reinforcement "
                      "learning", "graph neural networks", "retrieval", "agents",
                      "vision", "speech", "robotics", "benchmark", "reasoning"])
    with session_scope(engine) as s:  # more keywords: more picks explained, a longer email
        s.execute(update(Subscriber).where(Subscriber.email == big).values(keywords=many))
    shown = cli("--config", config, "preview", "--date", DAY, "--out", str(tmp_path / "p"))
    assert shown.code == 0, shown.stderr
    sizes = {f.stem: f.stat().st_size for f in (tmp_path / "p").rglob("*.eml")}
    largest = max(sizes.values())
    rest = sorted(sizes.values())[-2]
    assert largest - rest > 2000, sizes  # room for the headers a send adds
    postfix.refusing(message_size_limit=str((largest + rest) // 2))
    before = copies(postfix)
    result = send(cli, config)
    assert result.code == 3, result.stderr  # a failure, not a stop
    assert set(states(engine).values()) == {"sent", "failed"}
    assert [e for e, st in states(engine).items() if st == "failed"] == [big]
    [failure] = status(cli, config)["last_errors"]
    assert failure["email"] == big and "552 5.3.4" in failure["error"], failure
    assert failure["reason"] == "refused_content", failure  # not "permanent": see below
    with session_scope(engine) as s:  # the address is fine: its reader is not bounced
        assert s.scalar(select(Subscriber.status).where(Subscriber.email == big)) == "active"
    assert settle(postfix, 5) - before == Counter(people[1:])
    shown = cli("--config", config, "status").stdout
    assert "failed by reason: refused_content 1" in shown, shown
    assert f"failed (refused_content): {big}: SMTP 552 5.3.4" in shown, shown
    assert f"`newsletter send --date {DAY}` or the console's retry sends it again" in shown
    again = send(cli, config)  # tried again, refused again; nobody twice
    assert again.code == 3, again.stderr
    assert copies(postfix) - before == Counter(people[1:])
    # The operator raises the limit: a send of the day sends that digest, once.
    postfix.refusing()
    last = send(cli, config)
    assert last.code == 0, last.stderr
    assert set(states(engine).values()) == {"sent"}
    assert settle(postfix, 6) - before == Counter(people)


def test_a_filter_refusing_every_message_stops_the_run_and_fails_nobody(
        cli, postfix, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A content filter answering 554 at the end of every message (the sender's
    template, a link on a blocklist): every row was failed, for good, and the edition
    was lost once the operator had fixed it. Now the run stops, every row pending."""
    postfix.refusing({"end": "/./ 554 5.7.1 message content rejected\n"},
                     smtpd_end_of_data_restrictions="check_recipient_access regexp:{maps}/end")
    people = [f"ada+{n}@{postfix.domain}" for n in range(8)]
    config = config_for(tmp_path, postfix)
    engine = seed(cli, config, tmp_path, people)
    result = send(cli, config)
    assert result.code == 1, result.stderr
    [line] = said(result.stderr)
    assert line.startswith("error: sending stopped: SMTP 554 5.7.1 "), line
    assert "message content rejected" in line and "none of the run's messages accepted" in line
    assert set(states(engine).values()) == {"pending"}
    postfix.refusing()
    before = copies(postfix)
    assert send(cli, config).code == 0
    assert set(states(engine).values()) == {"sent"}
    assert settle(postfix, 8) - before == Counter(people)


def test_more_connections_than_the_server_allows_defers_nobody(
        cli, postfix, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """[smtp] connections = 3 against a server taking one per client: the second and
    third get "421 4.7.0 too many connections" at the greeting. Those slots were tried
    for each message that came to them, and a message refused there max_attempts times
    was deferred, its reader's edition put off for the sender's configuration."""
    postfix.refusing(smtpd_client_connection_count_limit="1",
                     smtpd_client_event_limit_exceptions="")
    people = [f"ada+{n}@{postfix.domain}" for n in range(10)]
    config = config_for(tmp_path, postfix, connections=3)
    engine = seed(cli, config, tmp_path, people)
    before = copies(postfix)
    result = send(cli, config)
    assert result.code == 0, result.stderr
    assert "Connection concurrency limit exceeded" in postfix.log()
    assert set(states(engine).values()) == {"sent"}, status(cli, config)["deferred"]
    assert settle(postfix, 10) - before == Counter(people)
