"""Each ingest format, parsed from recorded payloads and the real page dumps."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from newsletter.errors import SourceError
from newsletter.ingest.formats.pagedump import PageDumpSource
from newsletter.ingest.papers import parse_arxiv_id, title_id
from newsletter.ingest.run import decode, parse_text

from .conftest import PAYLOADS, SEEDS


def load(name: str) -> str:
    return (PAYLOADS / name).read_text(encoding="utf-8")


def test_dailypapers_fields_from_paper_and_top_level() -> None:
    papers = parse_text(load("dailypapers.json"), "dp.json")
    assert [p.id for p in papers[:2]] == ["2508.13426", "2508.11111"]
    first = papers[0]
    assert first.title == "Mamba Meets Vision: Selective State Space Models for Dense Prediction"
    assert "\n" not in first.abstract and first.abstract.startswith("We study selective")
    assert first.authors == ["Lin Chen", "Maria Rossi"]
    assert first.published == dt.date(2025, 8, 18)
    assert first.upvotes == 42
    assert first.code_url == "https://github.com/example/mamba-vision"
    assert first.project_url == "https://example.org/mamba-vision"
    assert first.keywords == ["state space models", "semantic segmentation", "Mamba"]
    assert first.url == "https://arxiv.org/abs/2508.13426"
    second = papers[1]
    assert second.version == 2  # "2508.11111v2"
    assert second.abstract.startswith("A top-level summary only")  # summary from top level
    assert second.published == dt.date(2025, 8, 17)
    third = papers[2]
    assert third.id == title_id("A Paper With Only Top-Level Fields")
    assert third.upvotes is None


def test_arxiv_atom_api() -> None:
    papers = parse_text(load("arxiv_api.atom"), "api.atom")
    assert [(p.id, p.version) for p in papers] == [("2508.13426", 2), ("hep-th/9901001", 1)]
    assert papers[0].title.endswith("Selective State Space Models for Dense Prediction")
    assert papers[0].authors == ["Lin Chen", "Maria Rossi"]
    assert papers[0].published == dt.date(2025, 8, 18)
    assert papers[1].abstract == "Strings, branes & dualities."


def test_arxiv_listing_rss_strips_prefix_and_reads_announce_type() -> None:
    papers = parse_text(load("arxiv_listing.rss"), "cs.LG.rss")
    assert [p.id for p in papers] == ["2508.14001", "2508.14002", "2508.13426"]
    assert papers[0].abstract.startswith("Large language models (LLMs) are expensive")
    assert "Announce Type" not in papers[1].abstract
    assert papers[0].authors == ["Wei Zhang", "John Smith", "Priya Patel"]
    assert papers[2].version == 3  # a replacement is a newer version of the same id


@pytest.mark.parametrize("name", ["blog.atom", "blog.rss"])
def test_generic_feeds(name: str) -> None:
    papers = parse_text(load(name), name)
    assert papers and all(p.title and p.url for p in papers)
    if name == "blog.atom":
        # An Atom title without type="html" is text: its "<b>" is two words of it,
        # not markup (issue 15); the summary says type="html", so it is converted.
        assert papers[0].title == "Why <b>retrieval</b> still matters"
        assert papers[0].abstract == "Dense retrieval with BM25 baselines."
        assert papers[1].id == "2508.14001"  # an arXiv link gives the paper its real id


def test_page_dump_with_metadata_lines() -> None:
    text = (SEEDS / "000_06afaf73bafe2b64.txt").read_text()
    papers = PageDumpSource(today=dt.date(2026, 11, 25)).parse(text, "seed0")
    assert len(papers) == 34
    assert all(p.title and p.abstract for p in papers)
    dimat = papers[0]
    assert dimat.title.startswith("DIMAT: Decentralized Iterative")
    assert dimat.published == dt.date(2024, 4, 11)
    by_date = {p.published for p in papers}
    # "Aug 5" has no year: it belongs to the page's year, one after the latest printed.
    assert dt.date(2025, 8, 5) in by_date
    # "Jun 12, 2024 1": the trailing number is the upvote count.
    assert any(p.upvotes for p in papers)


def test_page_dump_without_metadata_lines() -> None:
    text = (SEEDS / "003_caa546795c174b6c.txt").read_text()
    papers = parse_text(text, "seed3")
    assert len(papers) == 69
    assert papers[0].title.startswith("YOLO9tr")
    assert papers[0].abstract.startswith("Maintaining road pavement integrity")
    assert all(p.published is None and p.upvotes is None for p in papers)


def test_page_dump_upvotes_after_date() -> None:
    text = "Dec 26\n\nA Title\n\nAn abstract that is long enough. " * 1 + (
        "\n\n  • 3 authors\n·\nAug 5 12\n\nSecond Title\n\nSecond abstract.\n\n"
        "openbmb OpenBMB\n·\nSep 4, 2024 2\n"
    )
    papers = PageDumpSource(today=dt.date(2026, 1, 1)).parse(text, "x")
    assert [(p.title, p.published, p.upvotes) for p in papers] == [
        ("A Title", dt.date(2025, 8, 5), 12),
        ("Second Title", dt.date(2024, 9, 4), 2),
    ]
    assert papers[1].authors == ["openbmb OpenBMB"]


def test_every_seed_file_is_detected_and_parsed() -> None:
    total = 0
    for path in sorted(SEEDS.glob("*.txt")):
        papers = parse_text(path.read_text(), str(path))
        assert papers, path
        total += len(papers)
    assert total == 308


@pytest.mark.parametrize(
    "value, expected",
    [
        ("oai:arXiv.org:2508.13426v1", ("2508.13426", 1)),
        ("arXiv:2401.00001v3", ("2401.00001", 3)),
        ("2508.13426", ("2508.13426", 0)),
        ("math.GT/0309136v2", ("math.GT/0309136", 2)),
        ("not an id", None),
    ],
)
def test_arxiv_ids(value: str, expected: tuple[str, int] | None) -> None:
    assert parse_arxiv_id(value) == expected


# ---- bad input: one line naming where, never a traceback ------------------------------


@pytest.mark.parametrize(
    "data, fragment",
    [
        (b'[{"paper": {"id": "2508.1", "title": "x"', "invalid JSON"),
        (b"<!DOCTYPE html><html><body>Not here</body></html>", "HTML page, not a feed"),
        (b"", "empty file"),
        (b"   \n\n", "empty file"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "binary data"),
        (b"Dec 26\n\nTitle \xff\xfe broken\n", "invalid UTF-8"),
        (b"<?xml version='1.0'?><rss><channel><item><title>x</ti", "feed"),
        (b"just some words\n", "unrecognised format"),
        (b'{"title": "x", "colour": "blue"}', "unknown field 'colour'"),
        (b'[{"title": "x", "published": "yesterday"}]', "field 'published'"),
    ],
)
def test_bad_input_is_one_clear_line(data: bytes, fragment: str) -> None:
    with pytest.raises(SourceError) as info:
        parse_text(decode(data, "in.dat"), "in.dat")
    message = str(info.value)
    assert message.startswith("in.dat")
    assert fragment in message
    assert "\n" not in message


def test_invalid_utf8_names_the_line() -> None:
    with pytest.raises(SourceError, match=r"^in.txt:3: invalid UTF-8"):
        decode(b"line one\nline two\nbad \xc3\x28 here\n", "in.txt")


def test_jsonl_error_names_the_line() -> None:
    text = '{"title": "a"}\n{"title": "b"}\n{"title": oops}\n'
    with pytest.raises(SourceError, match=r"^f.jsonl:3: invalid JSON"):
        parse_text(text, "f.jsonl")


def test_control_characters_and_long_titles_are_kept_clean() -> None:
    from newsletter.ingest.papers import MAX_TITLE

    title = "A" * MAX_TITLE  # the longest stored: intact, not truncated
    text = f'[{{"title": "{title}", "abstract": "bell\\u0007 and\\u0000nul\\n\\n wrapped"}}]'
    [paper] = parse_text(text, "x.json")
    assert paper.title == title
    assert paper.abstract == "bell and nul wrapped"
    [longer] = parse_text(text.replace(title, title * 10), "x.json")
    assert longer.title == "A" * (MAX_TITLE - 1) + "…"  # no space: cut at the limit


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400))
def test_arbitrary_bytes_never_crash(data: bytes) -> None:
    try:
        parse_text(decode(data, "fuzz"), "fuzz")
    except SourceError as exc:
        assert str(exc).startswith("fuzz")


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=300))
def test_arbitrary_text_never_crashes(text: str) -> None:
    try:
        parse_text(text, "fuzz")
    except SourceError as exc:
        assert "\n" not in str(exc)


def test_samples_shipped_with_the_package_parse() -> None:
    path = Path(__file__).resolve().parent.parent / "newsletter" / "data" / "sample_papers.json"
    papers = parse_text(path.read_text(), str(path))
    assert len(papers) > 250


_OLD_XML_START = __import__("re").compile(  # the expression ``starts_a_feed`` replaced
    r"^\s*(?:(?:<\?xml[^>]*>|<!--.*?-->|<!DOCTYPE[^>\[]*(?:\[.*?\])?\s*>)\s*)*"
    r"<(rss|feed|rdf:RDF)\b", __import__("re").S | __import__("re").I)


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from(["<?xml version='1.0'?>", "<!-- c -->", "<!---->", " ",
                                 "\n", "<!DOCTYPE rss>", "<!DOCTYPE x [<!ENTITY a 'b'>]>",
                                 "<!-- <rss> -->", "<!-- ]> -->"]), max_size=6),
       st.sampled_from(["<rss version='2.0'>", "<feed xmlns='x'>", "<RDF:rdf>", "<rss>",
                        "<html>", "<rs>", "<feeds>", "", "text"]))
def test_a_feed_is_recognised_as_the_expression_recognised_it(prolog: list[str],
                                                               root: str) -> None:
    """``starts_a_feed`` (a scan) answers as the expression it replaced did, on any
    well-formed prolog before any root."""
    from newsletter.ingest.formats.feed import starts_a_feed

    head = "".join(prolog) + root
    assert starts_a_feed(head) == bool(_OLD_XML_START.match(head)), head
    # a comment or declaration never closed is no prolog (the expression could read an
    # internal subset on through it)
    assert not starts_a_feed("".join(prolog) + "<!--" + root)
    assert not starts_a_feed("".join(prolog) + "<?xml " + root.replace(">", ""))


def test_many_comments_before_an_unknown_root_are_no_feed_at_once(tmp_path: Path) -> None:
    """300 bytes of comments before a root no format knows: the one expression took
    minutes (its time doubled with each comment); scanned, the answer is at once. Run
    in a process of its own with a bound, so a regression fails instead of hanging."""
    import subprocess
    import sys

    code = ("from newsletter.ingest.run import parse_text\n"
            "from newsletter.errors import SourceError\n"
            "try:\n    parse_text('<!---->' * 40 + '<html></html>', 'x.xml')\n"
            "except SourceError as exc:\n    print(exc)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=True)
    assert done.stdout.startswith("x.xml"), done.stdout


def _split_and_as_before(piece: str) -> list[str]:
    """The recursive ``_split_and`` the one-pass version replaced (the reference)."""
    from newsletter.ingest.authors import _AND, _CLOSE, _OPEN

    cut = None
    for m in _AND.finditer(piece):
        before = piece[: m.start()]
        if sum(before.count(c) for c in _OPEN) == sum(before.count(c) for c in _CLOSE):
            cut = m
    if cut is None:
        return [piece]
    left, right = piece[: cut.start()], piece[cut.end():]
    if len(left.split()) < 2 or len(right.split()) < 2:
        return [piece]
    return [*_split_and_as_before(left), right]


@settings(max_examples=1500, deadline=None)
@given(st.lists(st.sampled_from(["A", "B.", "Smith", "and", "&", "AND", "(", ")", "[", "]",
                                 "x", " ", "\t", "\u00a0", "and\u2003"]), max_size=14),
       st.booleans())
def test_and_splits_authors_as_before(words: list[str], tight: bool) -> None:
    """The one-pass split of "A. Smith and B. Jones" gives the names the recursive one
    gave, brackets, "&" and odd spaces included."""
    from newsletter.ingest.authors import _split_and

    piece = ("" if tight else " ").join(words)
    assert _split_and(piece) == _split_and_as_before(piece), piece


def test_thousands_of_authors_joined_by_and_are_split() -> None:
    """A collaboration's author list, 1,200 names joined by "and": every name (it
    exceeded the recursion limit, after seconds of counting brackets)."""
    from newsletter.ingest.authors import split_author_list

    names = [f"Author Number{i}" for i in range(1200)]
    assert split_author_list(" and ".join(names)) == names
