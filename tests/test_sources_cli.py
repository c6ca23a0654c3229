"""``sources list`` shows each source once at any terminal width; ``sources forget``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from .conftest import ROOT

LONG_URL = "http://127.0.0.1:9/a/rather/long/path/to/a/feed/that/does/not/answer/listing.rss"


def test_sources_list_once_each_readable_and_forget(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    shutil.copy(ROOT / "newsletter" / "data" / "sample_papers.json", tmp_path / "papers.json")
    assert cli("ingest", "papers.json").code == 0
    assert cli("ingest", "./papers.json").code == 0  # the same file, spelled differently
    assert cli("ingest", str(tmp_path / "papers.json")).code == 0
    assert cli("ingest", LONG_URL).code != 0  # a failure is recorded too
    assert cli("ingest", "papres.json").code != 0  # a typo

    rows = json.loads(cli("sources", "list", "--json").stdout)
    assert sorted(r["where"] for r in rows) == sorted(
        [str(tmp_path / "papers.json"), str(tmp_path / "papres.json"), LONG_URL])

    narrow = cli("sources", "list", env={"COLUMNS": "80"})
    assert narrow.code == 0, narrow.stderr
    lines = narrow.stdout.splitlines()
    assert all(len(line) <= 80 for line in lines) and "…" not in narrow.stdout
    # the URL wraps, whole: its pieces, joined, are the URL
    assert LONG_URL in "".join(line.strip() for line in lines if line.startswith("    "))
    assert sum(1 for line in lines if not line.startswith(" ")) == 3  # each source once
    wide = cli("sources", "list", "--wide", env={"COLUMNS": "80"})
    assert any(LONG_URL in line for line in wide.stdout.splitlines())

    gone = cli("sources", "forget", "papres.json")
    assert gone.code == 0, gone.stderr
    url_gone = cli("sources", "forget", LONG_URL + "/")
    assert url_gone.code == 0, url_gone.stderr
    rows = json.loads(cli("sources", "list", "--json").stdout)
    assert [r["where"] for r in rows] == [str(tmp_path / "papers.json")]

    unknown = cli("sources", "forget", "nowhere.json")
    assert unknown.code != 0
    assert len(unknown.stderr.strip().splitlines()) == 1 and "nowhere.json" in unknown.stderr
