"""The bounce parser on recorded mail from real MTAs (tests/bounces_data/README.md says
where each came from), complaint reports, auto-replies and mailto unsubscribes; and the
VERP return path that names a delivery."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from newsletter.bounces.parse import Kind, read
from newsletter.bounces.verp import Verp

DATA = Path(__file__).parent / "bounces_data"

# (file, kind, recipients): the recipients flufl.bounce's own tests expect of these
# recordings; the kind from the report's Action/Status or the detector's verdict.
RECORDED = [
    ("postfix_01.txt", Kind.HARD, {"xxxxx@local.ie"}),
    ("postfix_02.txt", Kind.HARD, {"yyyyy@digicool.com"}),
    ("postfix_03.txt", Kind.HARD, {"ttttt@ggggg.com"}),
    ("postfix_04.txt", Kind.HARD, {"userx@mail1.example.com"}),
    ("postfix_05.txt", Kind.HARD, {"userx@example.net"}),
    ("exim_01.txt", Kind.HARD, {"userx@its.example.nl"}),
    ("sendmail_01.txt", Kind.HARD, {"zzzzz@shaft.coal.nl", "zzzzz@nfg.nl"}),
    ("simple_17.txt", Kind.HARD, {"userx@example.com"}),  # Google Mail
    ("microsoft_01.txt", Kind.HARD, {"userx@example.com"}),  # Exchange
    ("microsoft_02.txt", Kind.HARD, {"userx@example.com"}),
    ("microsoft_04.txt", Kind.HARD, {"userx@example.com"}),  # SMTPSVC
    ("qmail_01.txt", Kind.HARD, {"userx@example.de"}),
    ("qmail_02.txt", Kind.HARD, {"userx@example.com"}),
    ("qmail_03.txt", Kind.HARD, {"userx@example.jp"}),
    ("qmail_04.txt", Kind.HARD, {"userx@example.au"}),
    ("qmail_05.txt", Kind.HARD, {"userx@example.com"}),
    ("qmail_06.txt", Kind.HARD, {"ntl@xxx.com"}),
    ("qmail_07.txt", Kind.HARD, {"user@example.net"}),
    ("smtp32_01.txt", Kind.HARD, {"userx@example.ph"}),
    ("groupwise_01.txt", Kind.HARD, {"userx@example.edu"}),
    ("simple_16.txt", Kind.HARD, {"userx@example.com"}),
    ("simple_38.txt", Kind.HARD, {"userx@example.com"}),
    ("simple_41.txt", Kind.HARD, {"userx@example.com"}),
    ("simple_45.txt", Kind.HARD, {"subscriber@earthlink.net"}),
    ("simple_03.txt", Kind.SOFT, {"userx@example.za"}),  # a delay warning
    ("simple_21.txt", Kind.SOFT, {"userx@example.com"}),
    ("simple_28.txt", Kind.SOFT, {"userx@example.com"}),  # Google Mail, delayed
    ("simple_35.txt", Kind.SOFT, {"calvin@example.com"}),
    *[(f"dsn_{n:02d}.txt", Kind.HARD, {r}) for n, r in [
        (1, "userx@example.com"), (3, "userx@example.be"),
        (4, "userx@example.ch"), (9, "userx@example.com"), (10, "anne.person@dom.ain"),
        (11, "joem@example.com"), (12, "userx@example.jp"), (13, "userx@example.com"),
        (14, "userx@example.com.dk"), (15, "userx@example.com"), (16, "userx@example.com"),
        (18, "email@replaced.net")]],
    # "failed" with 4.4.7: the relay gave up after its retries, the address was never
    # refused: soft (flufl.bounce counts the message as failed, not the address as dead).
    ("dsn_02.txt", Kind.SOFT, {"zzzzz@example.uk"}),
    # "delayed": the server is still trying, and says how it ends in a report of its
    # own; a warning is not a bounce (counted as one, a mailbox that was full for a day
    # made an address bounced after two editions)
    *[(f"dsn_{n:02d}.txt", Kind.NOTICE, {r}) for n, r in [
        (5, "userx@example.cz"), (6, "userx@example.com"), (7, "userx@example.nz"),
        (8, "userx@example.de"), (17, "userx@example.fi")]],
]


@pytest.mark.parametrize(("name", "kind", "recipients"), RECORDED, ids=[r[0] for r in RECORDED])
def test_recorded_bounces(name: str, kind: Kind, recipients: set[str]) -> None:
    report = read((DATA / "flufl" / name).read_bytes())
    assert report.kind == kind, report
    assert set(report.recipients) == recipients


def test_a_dsn_names_status_diagnostic_and_the_original_message() -> None:
    report = read((DATA / "flufl" / "dsn_11.txt").read_bytes())
    assert report.status == "5.1.1"
    assert report.recipients == ("joem@example.com",)  # five blocks, one address


def test_not_a_bounce_is_unknown_and_kept() -> None:
    assert read((DATA / "flufl" / "dumbass_01.txt").read_bytes()).kind == Kind.UNKNOWN


def test_complaint_report() -> None:
    report = read((DATA / "other" / "arf_rfc5965.eml").read_bytes())
    assert report.kind == Kind.COMPLAINT
    assert report.recipients == ("reader@example.net",)
    assert report.message_ids == ("<8787KJKJ3K4J3K4J3K4J3.mail@digest.example.org>",)
    assert report.extra["feedback_type"] == "abuse"


@pytest.mark.parametrize("name", ["autoreply_exchange.eml", "autoreply_vacation.eml"])
def test_auto_replies_are_ignored_even_when_they_name_an_address(name: str) -> None:
    report = read((DATA / "other" / name).read_bytes())
    assert report.kind == Kind.AUTO_REPLY
    assert report.recipients == ()


def test_mailto_unsubscribe_carries_its_token() -> None:
    report = read((DATA / "other" / "unsubscribe_mailto.eml").read_bytes())
    assert report.kind == Kind.UNSUBSCRIBE
    assert report.token == "1f.UxhyPabcdefghijklmnopq"
    assert report.recipients == ("ada@example.org",)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=3000))
def test_any_bytes_give_a_report_never_an_exception(raw: bytes) -> None:
    assert read(raw).kind in set(Kind)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from([p for p in sorted((DATA / "flufl").glob("*.txt"))]),
       st.integers(0, 4000), st.binary(max_size=40))
def test_damaged_recordings_never_raise(path: Path, at: int, junk: bytes) -> None:
    raw = path.read_bytes()
    read(raw[:at] + junk + raw[at + len(junk):])


# ---- VERP ----------------------------------------------------------------------

VERP = Verp("bounces+{token}@digest.example.org", ("new key", "old key"))


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 2**40), st.integers(0, 2**40))
def test_verp_round_trip_and_case_insensitive(delivery: int, subscriber: int) -> None:
    address = VERP.address(delivery, subscriber)
    assert address.startswith("bounces+") and address.endswith("@digest.example.org")
    assert VERP.read(address) == (delivery, subscriber)
    assert VERP.read(address.upper()) == (delivery, subscriber)  # servers that fold case
    assert VERP.read(f"<{address}>") == (delivery, subscriber)


def test_verp_refuses_forged_and_foreign_addresses() -> None:
    good = VERP.address(12, 34)
    body, _, rest = good.partition("@")
    forged = body[:-1] + ("a" if body[-1] != "a" else "b") + "@" + rest
    assert VERP.read(forged) is None
    assert VERP.read(VERP.address(13, 34).replace(VERP.address(13, 34)[8:10], "c-")) is None
    assert VERP.read("bounces@digest.example.org") is None
    assert VERP.read(good.replace("digest.example.org", "other.example")) is None
    other_key = Verp("bounces+{token}@digest.example.org", ("someone else's",))
    assert other_key.read(good) is None


def test_verp_verifies_with_an_older_key_after_rotation() -> None:
    old = Verp("bounces+{token}@digest.example.org", ("old key",)).address(5, 6)
    assert VERP.read(old) == (5, 6)


@pytest.mark.parametrize("template", ["bounces@example.org", "{token}{token}@x.org",
                                      "bounces+{token}"])
def test_verp_template_must_hold_one_token_and_a_domain(template: str) -> None:
    with pytest.raises(ValueError, match="return_path"):
        Verp(template, ("k",))
