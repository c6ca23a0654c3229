"""``newsletter feedback --file``: many votes in one process, all or none."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from newsletter.store.db import session_scope
from newsletter.store.models import Vote

ADA = "ada@example.org"


def votes(engine: Any) -> int:
    with session_scope(engine, readonly=True) as s:
        return int(s.scalar(select(func.count()).select_from(Vote)) or 0)


def test_feedback_file_records_all_or_none(cli, world, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    settings, engine = world
    env = {"NEWSLETTER_DATABASE__URL": settings.database.url}
    ranked = json.loads(cli("rank", "--subscriber", ADA, "--all-entries", "--json",
                            env=env).stdout)[0]["picks"]
    mamba = [p["id"] for p in ranked if "Mamba" in p["title"]][:2]
    assert len(mamba) == 2
    other = ranked[-1]["id"]

    bad_vote = tmp_path / "bad.csv"
    bad_vote.write_text(f"email,paper_id,vote\n{ADA},{mamba[0]},up\n{ADA},{mamba[1]},sideways\n")
    r = cli("feedback", "--file", str(bad_vote), env=env)
    assert r.code != 0 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert f"{bad_vote} line 3: vote 'sideways'" in r.stderr
    unknown = tmp_path / "unknown.csv"
    unknown.write_text(f"email,paper_id,vote\n{ADA},{mamba[0]},up\n{ADA},no-such-paper,down\n")
    r = cli("feedback", "--file", str(unknown), env=env)
    assert r.code != 0 and f"{unknown} line 3: no paper 'no-such-paper'" in r.stderr
    header = tmp_path / "header.csv"
    header.write_text(f"who,paper,vote\n{ADA},{mamba[0]},up\n")
    r = cli("feedback", "--file", str(header), env=env)
    assert r.code != 0 and f"{header} line 1: expected the header" in r.stderr
    assert votes(engine) == 0  # nothing half-stored

    good = tmp_path / "votes.csv"
    good.write_text(f"email,paper_id,vote\n{ADA},{mamba[0]},up\n{ADA},{mamba[1]},+1\n"
                    f"\n{ADA},{other},down\n")
    r = cli("feedback", "--file", str(good), env=env)
    assert r.code == 0, r.stderr
    assert "recorded 3 votes (2 up, 1 down; 0 replaced an earlier vote) for" in r.stderr
    assert votes(engine) == 3
    r = cli("feedback", "--file", str(good), env=env)  # the same file again: no new vote
    assert r.code == 0 and ("recorded 3 votes (2 up, 1 down; 0 replaced an earlier vote, "
                            "3 already recorded as they were) for") in r.stderr, r.stderr
    assert votes(engine) == 3
    after = json.loads(cli("rank", "--subscriber", ADA, "--all-entries", "--json",
                           env=env).stdout)[0]["picks"]
    assert any(p["also_like"] for p in after)  # the two up votes taught a term
    assert not {*mamba, other} & {p["id"] for p in after}  # voted papers are hidden


def test_feedback_file_cost_per_vote(cli_process, world, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A file of a few hundred votes in one process: well under 0.5 s a vote (the process start
    and imports are paid once)."""
    settings, engine = world
    env = {"NEWSLETTER_DATABASE__URL": settings.database.url}
    from newsletter.store.models import Entry, Subscriber

    with session_scope(engine, readonly=True) as s:
        people = list(s.scalars(select(Subscriber.email).limit(10)))
        papers = list(s.scalars(select(Entry.id).limit(30)))
    lines = [f"{a},{p},{'up' if i % 3 else 'down'}"
             for i, (a, p) in enumerate((a, p) for a in people for p in papers)]
    path = tmp_path / "many.csv"
    path.write_text("email,paper_id,vote\n" + "\n".join(lines) + "\n")
    start = time.perf_counter()
    r = cli_process("feedback", "--file", str(path), env=env)
    took = time.perf_counter() - start
    assert r.code == 0, r.stderr
    assert votes(engine) == len(lines) >= 200
    assert took / len(lines) < 0.5, took
    print(f"{len(lines)} votes in {took:.2f} s: {1000 * took / len(lines):.1f} ms a vote")


def test_a_votes_file_the_csv_reader_refuses_is_one_line() -> None:
    """A field over the csv module's size limit (or a NUL) names the file and line: it
    was a traceback."""
    import pytest

    from newsletter.errors import InputError
    from newsletter.service.votes import read_votes_csv

    text = f"email,paper_id,vote\n{ADA},2501.00001,up\n{ADA},{'x' * 200_000},up\n"
    with pytest.raises(InputError, match=r"^votes.csv line 3: field larger than"):
        read_votes_csv(text, "votes.csv")
