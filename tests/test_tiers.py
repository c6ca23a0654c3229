"""The fast tier (``-m "not slow"``) leaves out every test that needs a server, a
browser, an outside checker or the feed corpus, and keeps the rest: checked on a
made-up suite (fixtures that do not exist yet included) and on the real one."""

from __future__ import annotations

import subprocess
import sys

import pytest

from .conftest import ROOT

pytest_plugins = ["pytester"]

CONFTEST = '''
import pytest

from tests.conftest import pytest_collection_modifyitems  # noqa: F401 - the hook under test


@pytest.fixture
def pg_url():
    return "postgresql://"


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request):
    return request.param


@pytest.fixture
def through_pg(pg_url):
    return pg_url


@pytest.fixture
def postfix():
    return None


@pytest.fixture
def dovecot():
    return None


@pytest.fixture
def browser():
    return None
'''

SUITE = '''
import pytest


def test_plain():
    pass


def test_db(db_url):
    pass


def test_pg(pg_url):
    pass


def test_through_a_fixture(through_pg):
    pass


def test_mail_servers(postfix, dovecot):
    pass


def test_chromium(browser):
    pass


@pytest.mark.browser
def test_marked_browser():
    pass


@pytest.mark.postgres
def test_marked_postgres():
    pass


@pytest.mark.slow
def test_marked_slow():
    pass
'''


def collected(pytester: pytest.Pytester, *args: str) -> set[str]:
    result = pytester.runpytest("--collect-only", "-q", "-p", "no:cacheprovider", *args)
    return {line.split("::", 1)[1] for line in result.outlines if "::" in line}


def test_the_hook_marks_by_fixture_param_and_marker(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nmarkers =\n    slow\n    browser\n    postgres\n")
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_suite=SUITE)
    fast = collected(pytester, "-m", "not slow")
    slow = collected(pytester, "-m", "slow")
    assert fast == {"test_plain", "test_db[sqlite]"}
    assert slow == {"test_db[postgresql]", "test_pg", "test_through_a_fixture",
                    "test_mail_servers", "test_chromium", "test_marked_browser",
                    "test_marked_postgres", "test_marked_slow"}


REPORT = """
import sys

import pytest


class Report:
    @pytest.hookimpl(trylast=True)  # after the marking, as -m reads the marks
    def pytest_collection_modifyitems(self, items):
        for item in items:
            print("slow" if item.get_closest_marker("slow") else "fast", item.nodeid)


sys.exit(pytest.main(["--collect-only", "-q", "-p", "no:cacheprovider", *sys.argv[1:]],
                     plugins=[Report()]))
"""


def test_the_real_suite_fast_tier_has_no_service_browser_checker_or_corpus() -> None:
    """On files that hold each kind of slow test beside fast ones, collected once."""
    files = ["tests/test_storage.py", "tests/test_scale.py", "tests/test_browser.py",
             "tests/test_mail.py", "tests/test_deploy.py", "tests/test_real_feeds.py"]
    done = subprocess.run([sys.executable, "-c", REPORT, *files], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    tier: dict[str, set[str]] = {"fast": set(), "slow": set()}
    for line in done.stdout.splitlines():
        word, _, nodeid = line.partition(" tests/")
        if word in tier:
            tier[word].add(nodeid)
    fast, slow = tier["fast"], tier["slow"]
    # PostgreSQL: the db_url param and pg_url (test_scale's broker tests also need it)
    assert fast and not [t for t in fast if "postgresql" in t]
    assert "test_storage.py::test_migrations_create_every_table[sqlite]" in fast
    assert "test_storage.py::test_migrations_create_every_table[postgresql]" in slow
    assert "test_scale.py::test_workers_share_an_edition_without_duplicates[redis]" in slow
    assert "test_scale.py::test_scheduler_registers_its_jobs" in fast
    # chromium, outside checkers, the corpus
    assert not [t for t in fast if t.startswith(("test_browser.py", "test_real_feeds.py"))]
    assert len([t for t in slow if t.startswith("test_real_feeds.py")]) >= 200
    for name in ("test_browser.py::test_dark_mode_has_readable_contrast",
                 "test_mail.py::test_spamassassin_scores_nothing",
                 "test_mail.py::test_html_validate",
                 "test_mail.py::test_axe_catches_low_contrast",
                 "test_deploy.py::test_systemd_analyze_verifies_the_units"):
        assert name in slow
    assert "test_mail.py::test_headers_fold_and_verify" in fast  # dkimpy: Python
    assert "test_deploy.py::test_compose_file_matches_the_compose_specification" in fast
