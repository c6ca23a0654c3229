"""Rendering: standards-correct MIME, escaping, size, DKIM, template errors, the cache."""

from __future__ import annotations

import binascii
import datetime as dt
import email
import email.policy
import html as htmllib
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace

import pytest
from hypothesis import given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st

from newsletter.config import Settings
from newsletter.errors import TemplateError
from newsletter.ranking.engine import Corpus, Explanation, Feature, RankEntry, Ranker
from newsletter.ranking.text import Acronyms
from newsletter.render.compile import BUNDLED, compile_templates
from newsletter.render.digest import PaperInfo, cap
from newsletter.render.highlight import Highlighter
from newsletter.render.links import Signer, base36
from newsletter.render.mime import (
    LineQP,
    MimeBuilder,
    _from_line,
    lines_within,
    qp,
    seven_bit,
    seven_bit_text,
)
from newsletter.render.renderer import GMAIL_CLIP_BYTES, Recipient, Renderer

DAY = dt.date(2025, 12, 26)
NASTY = [
    "<script>alert('x')</script> Attention",
    'Quotes "double" and \'single\' & ampersands',
    "Templates {{ config }} and {% raw %} braces",
    r"LaTeX $\mathcal{O}(n \log n)$ bounds \emph{tight}",
    "Emoji 🚀🧠 and combining é",
    "RTL: تعلم الآلة العميق and עברית",
    "Long " + "x" * 10_000,
]


def paper(i: int, title: str, abstract: str = "An abstract about attention.") -> SimpleNamespace:
    return SimpleNamespace(id=f"2501.{i:05d}", title=title, abstract=abstract,
                           authors=[f"Author {n}" for n in range(5)], published=DAY,
                           upvotes=i, url=f"https://arxiv.org/abs/2501.{i:05d}",
                           code_url="https://github.com/x/y" if i % 2 else "",
                           project_url="", keywords=[])


def renderer(rows: list[SimpleNamespace], settings: Settings | None = None) -> tuple[
        Renderer, Ranker]:
    settings = settings or Settings().replace(
        sender={"reply_to": "editor@example.org", "from_address": "digest@example.org",
                "from_name": "Papers Dïgest"},
        web={"base_url": "https://digest.example.org"})
    acronyms = Acronyms.load()
    entries = [RankEntry.of(r) for r in rows]
    ranker = Ranker(Corpus(entries, acronyms, settings.ranking, DAY), settings.ranking)
    papers = [PaperInfo.of(r, "") for r in rows]
    return Renderer(settings.render, settings.sender, settings.web, keys=["k1"], day=DAY,
                    edition_id=7, papers=papers, acronyms=acronyms), ranker


def render_for(rows: list[SimpleNamespace], profile: str = "attention", **kw: object):  # type: ignore[no-untyped-def]
    r, ranker = renderer(rows, **kw)  # type: ignore[arg-type]
    picks = list(range(len(rows)))
    return r.render(Recipient(3, "reader@example.org", "Rëader", profile), picks,
                    list(ranker.explain_many(profile, picks)), False)


class TextAndLinks(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.text: list[str] = []
        self.links: list[str] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        if tag == "a":
            self.links.append(dict(attrs).get("href") or "")

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse_strict(data: bytes) -> email.message.EmailMessage:
    msg = email.message_from_bytes(data, policy=email.policy.strict)
    assert isinstance(msg, email.message.EmailMessage)
    for part in msg.walk():
        assert not part.defects, part.defects
    return msg


@pytest.mark.parametrize("name", ["Lab <x@evil.example>", "Dr. Who's Lab", 'Say "hi"',
                                  "Papers Dïgest", "Plain Name"])
def test_the_list_id_names_the_sender_as_a_phrase(name: str) -> None:
    """List-Id's phrase is the sender's name written as From: writes it: a name with
    an address-like part is quoted (it read as ``Lab <x@evil.example> <list.id>``, two
    angle-bracketed parts, which filters keyed on the list took the wrong one of)."""
    import email.utils

    settings = Settings().replace(
        sender={"from_address": "digest@example.org", "from_name": name,
                "list_id": "digest.example.org"},
        web={"base_url": "https://digest.example.org"})
    out = render_for([paper(0, "Attention")], settings=settings)
    msg = parse_strict(out.message.data)
    phrase, list_id = email.utils.parseaddr(str(msg["List-Id"]))
    assert list_id == "digest.example.org" and phrase == name, str(msg["List-Id"])
    api = dict(out.message.headers)["List-Id"]  # what an email API is given
    assert email.utils.parseaddr(api) == (name, "digest.example.org") or not name.isascii()


def test_message_is_standards_correct() -> None:
    out = render_for([paper(i, f"Attention paper {i}") for i in range(10)])
    data = out.message.data
    assert b"\r\n" in data and b"\n" not in data.replace(b"\r\n", b"")  # CRLF only
    assert max(len(line) for line in data.split(b"\r\n")) <= 998
    msg = parse_strict(data)
    assert msg.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in msg.iter_parts()] == ["text/plain", "text/html"]
    for name in ("Message-ID", "Date", "From", "Reply-To", "List-Id", "List-Unsubscribe",
                 "List-Unsubscribe-Post", "Subject", "To"):
        assert msg[name], name
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    unsub = msg["List-Unsubscribe"]
    assert re.search(r"<https://digest\.example\.org/unsubscribe/[\w.-]+>", unsub)
    assert "mailto:" not in unsub  # no mailbox reads mailto: requests
    assert str(msg["From"]) == "Papers Dïgest <digest@example.org>"  # RFC 2047 round trip
    assert msg["Reply-To"] == "editor@example.org"
    assert str(msg["To"]) == "Rëader <reader@example.org>"
    html = msg.get_body(("html",)).get_content()  # type: ignore[union-attr]
    text = msg.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    def lf(s: str) -> str:
        return s.replace("\r\n", "\n")

    # The HTML part goes as 7-bit text: the same HTML, its non-ASCII characters (the
    # subscriber's name here) written as character references.
    assert msg.get_body(("html",))["Content-Transfer-Encoding"] == "7bit"  # type: ignore[index]
    assert html.isascii() and "R&#235;ader" in html
    assert lf(html) == lf(out.html).encode("ascii", "xmlcharrefreplace").decode()
    assert lf(text) == lf(out.text)
    for part in msg.iter_parts():
        assert part.get_content_charset() == "utf-8"


@hyp_settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(0, 1100), min_size=1, max_size=12), st.integers(1, 1000))
def test_lines_within_agrees_with_splitting(lengths: list[int], limit: int) -> None:
    data = b"\n".join(b"x" * n for n in lengths)
    assert lines_within(data, limit) == (max(lengths) <= limit)


@pytest.mark.parametrize("bad", ["a" * 999, "x\ry", "x\x00y", "<p>\nFrom here</p>",
                                 "&#233;" * 200 + "é" * 120])
def test_html_that_cannot_go_7bit_goes_base64(bad: str) -> None:
    """A line over 998 bytes (counted after non-ASCII became references), a CR, a NUL,
    a line starting "From ": the HTML part is base64 instead, and decodes to the HTML."""
    assert seven_bit(bad) is None
    msg = MimeBuilder(Settings().sender).build(
        to="r@example.org", to_name="", subject="s", text="t", html=bad, message_id="<m@x>",
        list_unsubscribe="<https://x.org/u>", html_7bit=True)
    part = parse_strict(msg.data).get_body(("html",))
    assert part is not None and part["Content-Transfer-Encoding"] == "base64"
    assert part.get_content().replace("\r\n", "\n") == bad.replace("\r\n", "\n")


@hyp_settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(
    st.text(st.sampled_from("ab c.=\t\u00e9\x00\r-"), max_size=60),
    st.sampled_from(["From here", ".dot first", "x" * 999, "y" * 998, "ok line", ""])),
    min_size=1, max_size=8))
def test_text_part_goes_7bit_only_when_it_can(lines: list[str]) -> None:
    """The text part has no encoding (7-bit) exactly when it is ASCII, has no CR or NUL,
    no line over 998 bytes and none starting "From " or "." (so it never needs
    dot-stuffing); else it is quoted-printable. Either way it decodes to the text."""
    text = "\n".join(lines)
    ok = (text.isascii() and "\r" not in text and "\x00" not in text
          and all(len(line) <= 998 and not line.startswith(("From ", ".")) for line in lines))
    assert (seven_bit_text(text) is not None) == ok
    msg = MimeBuilder(Settings().sender).build(
        to="r@example.org", to_name="", subject="s", text=text, html="<p>h</p>",
        message_id="<m@x>", list_unsubscribe="<https://x.org/u>", html_7bit=True)
    part = parse_strict(msg.data).get_body(("plain",))
    assert part is not None
    assert part["Content-Transfer-Encoding"] == ("7bit" if ok else "quoted-printable")
    if "\r" not in text:  # (a stray CR is quoted-printable's own matter, tested above)
        assert part.get_payload(decode=True).decode().replace("\r\n", "\n") == text


_QP_TEXT = st.text(st.sampled_from("ab c.=\t\u00e9\u2026\x01\x7f-/:"), max_size=200)


@hyp_settings(max_examples=500, deadline=None)
@given(st.lists(st.one_of(_QP_TEXT, st.text(st.sampled_from("abc d."), max_size=320)),
                min_size=1, max_size=6), st.booleans())
def test_line_by_line_quoted_printable_is_the_whole_text_way(lines: list[str],
                                                             last_lf: bool) -> None:
    """The text part encoded a line at a time (lines cached per edition) decodes to
    the same text as ``b2a_qp`` over the whole text, keeps every line within RFC 2045's
    76 characters, and is the same bytes but where a line ends in a space or tab
    (there the whole-text way writes "=20" past the 76th character, this one breaks
    the line first) or a soft break would start a line with "." (this one breaks
    earlier)."""
    text = "\n".join(lines) + ("\n" if last_lf else "")
    encode = LineQP()
    got = encode(text)
    assert encode(text) == got  # from the cache the second time
    whole = qp(text)
    assert binascii.a2b_qp(got) == binascii.a2b_qp(whole) == text.encode().replace(
        b"\n", b"\r\n")
    assert all(len(line) <= 76 for line in got.split(b"\r\n"))
    if not any(line.endswith((" ", "\t")) for line in text.split("\n")) and (
            b"\n." not in whole and not whole.startswith(b".")):
        assert got == whole  # (a break before a dot comes earlier here)


def _old_feature_spans(h: Highlighter, feat: Feature) -> list[tuple[int, int]]:
    """``Highlighter.feature_spans`` as it was written first (one comparison a word)."""
    found: list[tuple[int, int]] = []
    if feat.kind != "author":
        topic = feat.kind == "topic"
        seq, index, key = ((h.content, h.by_stem, 2) if topic else (h.tokens, h.by_raw, 3))
        for variant in feat.variants:
            n = len(variant)
            for i in index.get(variant[0], ()):
                if i + n <= len(seq) and all(seq[i + j][key] == variant[j]
                                             for j in range(1, n)):
                    found.append((seq[i][0], seq[i + n - 1][1]))
        if topic and feat.parts and not found:
            for part in feat.parts:
                for i in h.by_stem.get(part, ()):
                    found.append((h.content[i][0], h.content[i][1]))
    return found


@pytest.mark.parametrize("terms", [
    "state space models, GNN, attention", "graph neural networks, diffusion models",
    "vision transformer, large language models, model", "\"mixture of experts\", LLM, RL",
    "author:Vaswani, neural, networks networks"])
def test_highlights_are_found_as_before(terms: str) -> None:
    from newsletter.profile import parse_profile
    from newsletter.render.samples import sample_papers

    texts = [p.abstract or "" for p in sample_papers()[:120]] + [
        "Selective State-Space Models beat GNNs; state space state space models.",
        "Graph neural networks networks and graph neural"]
    acronyms = Acronyms.load()
    rows = [paper(i, "t", a) for i, a in enumerate(texts)]
    ranker = Ranker(Corpus([RankEntry.of(r) for r in rows], acronyms, Settings().ranking, DAY),
                    Settings().ranking)
    feats = [ranker.analyzer.feature(t) for t in parse_profile(terms).terms]
    analyzed: dict[str, list[tuple[str, str]]] = {}  # one edition's words, shared
    for text in texts:
        h = Highlighter(text, acronyms)
        shared = Highlighter(text, acronyms, analyzed)
        assert shared.tokens == h.tokens
        for f in feats:
            assert h.feature_spans(f) == _old_feature_spans(h, f)


def test_an_exact_phrase_is_found_in_the_words_as_written() -> None:
    """A quoted phrase matches the words as written, in order (case folded, hyphens as
    spaces), never their stems: "state space models" is not "state space model".
    Fixed spans, where the comparison above reads the highlighter's own index."""
    text = "The State-Space Model of a state space models paper; the state-space model."
    h = Highlighter(text, Acronyms())
    phrase = Feature("exact", (("state", "space", "model"),))
    assert [text[a:b] for a, b in h.feature_spans(phrase)] == [
        "State-Space Model", "state-space model"]
    assert h.joined((phrase,)) == [(4, 21), (57, 74)]


_WORDS = ["graph", "neural", "network", "state", "space", "model", "attention", "the"]


@hyp_settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(_WORDS),
                          st.sampled_from([" ", "-", " / ", ", ", ". ", " \u2013 ", "--"])),
                min_size=1, max_size=25),
       st.lists(st.lists(st.tuples(st.sampled_from(["exact", "topic"]),
                                   st.lists(st.sampled_from(_WORDS), min_size=1, max_size=2)),
                         min_size=1, max_size=4), min_size=1, max_size=6))
def test_joined_spans_are_those_of_all_the_features_joined(
        pieces: list[tuple[str, str]], sets: list[list[tuple[str, list[str]]]]) -> None:
    """What an excerpt highlights: each feature's joined spans are kept, and a set of
    features joins the union of theirs. The same as joining all their spans at once,
    for texts where one feature's spans sit in the gaps of another's (hyphens, slashes,
    dashes, commas between the words)."""
    from newsletter.ranking.text import stem
    from newsletter.render.highlight import join_spans

    text = "".join(w + sep for w, sep in pieces)
    h = Highlighter(text, Acronyms())
    made: dict[tuple[str, tuple[str, ...]], Feature] = {}
    for group in sets:
        feats = tuple(made.setdefault((kind, tuple(ws)), Feature(kind, (
            tuple(stem(w) for w in ws) if kind == "topic" else tuple(ws),)))
            for kind, ws in group)
        assert h.joined(feats) == join_spans(text, h.spans(feats))


@hyp_settings(max_examples=300, deadline=None)
@given(st.text(st.sampled_from("ab <>&\"'é"), max_size=30),
       st.lists(st.tuples(st.integers(0, 30), st.integers(1, 5)), max_size=4),
       st.integers(0, 10), st.integers(0, 30))
def test_marked_escapes_every_piece(text: str, raw: list[tuple[int, int]], start: int,
                                    end: int) -> None:
    from markupsafe import escape

    from newsletter.render.digest import HL_STYLE, marked

    spans = sorted({(a, a + n) for a, n in raw})
    merged: list[tuple[int, int]] = []
    for a, b in spans:
        if not merged or a >= merged[-1][1]:
            merged.append((a, b))
    start, end = min(start, len(text)), max(min(end, len(text)), min(start, len(text)))
    expected, pos = [], start
    for a, b in merged:
        if b <= start or a >= end:
            continue
        a, b = max(a, start), min(b, end)
        expected.append(str(escape(text[pos:a])))
        expected.append(f'<strong class="hl"\nstyle="{HL_STYLE}">{escape(text[a:b])}</strong>')
        pos = b
    expected.append(str(escape(text[pos:end])))
    assert marked(text, merged, start, end) == "".join(expected)


_HOSTILE = st.text(st.sampled_from("ab .\r\n\t\x00é=<>&\u2028"), max_size=60)


@hyp_settings(max_examples=300, deadline=None)
@given(_HOSTILE, _HOSTILE, _HOSTILE, _HOSTILE, st.booleans())
def test_a_message_said_to_have_crlf_line_ends_has_them(name: str, subject: str, text: str,
                                                        html: str, html_7bit: bool) -> None:
    """``Message.crlf`` lets the SMTP transport skip its line-end check: it must hold
    whatever the names, subject and bodies held (and be said of the usual message)."""
    from aiosmtplib.protocol import LINE_ENDINGS_REGEX

    msg = MimeBuilder(Settings().sender).build(
        to="r@example.org", to_name=name, subject=subject, text=text, html=html,
        message_id="<m@x>", list_unsubscribe="<https://x.org/u>", html_7bit=html_7bit,
        extra_headers={"X-Test": subject})
    if msg.crlf:
        assert LINE_ENDINGS_REGEX.sub(b"\r\n", msg.data) == msg.data
        assert msg.data.endswith(b"\r\n")
    if "\r" not in text:
        assert msg.crlf


def test_no_line_starts_with_a_dot() -> None:
    """SMTP clients double a dot that starts a line (aiosmtplib with a regex over the
    whole message): the template has none, nor do the links' line breaks in the text."""
    compiled = compile_templates(BUNDLED)
    assert not any(line.startswith(".") for line in compiled.html_source.split("\n"))
    assert "\n .mj-outlook-group-fix" in compiled.html_source
    out = render_for([paper(i, f"Attention paper {i}") for i in range(3)])
    assert out.message.crlf and b"\n." not in out.message.data
    encode = LineQP()
    for line in ("x" * 74 + ".." + "y" * 100, "\u2026" + "x" * 64 + ". Then" + "y" * 90,
                 "x=" * 37 + "." + "y" * 80, ". A line with a dot first", "."):
        got = encode(line)
        assert not got.startswith(b".") and b"\n." not in got, got
        assert binascii.a2b_qp(got) == line.encode()
        assert all(len(x) <= 76 for x in got.split(b"\r\n"))


@pytest.mark.parametrize("data, found", [
    (b"From x", True), (b"a\nFrom x", True), (b"aFrom x", False), (b"a\nFromx", False),
    (b"F" * 100 + b"\nFrom x", True), (b"F" * 100 + b"From x", False), (b"", False)])
def test_from_lines_are_found(data: bytes, found: bool) -> None:
    assert _from_line(data) is found


@hyp_settings(max_examples=200, deadline=None)
@given(st.text(min_size=1, max_size=40), st.integers(0, 2**40), st.none() | st.integers(0, 2**40))
def test_tokens_from_kept_hash_states_are_hmac_tokens(paper: str, sid: int,
                                                      nonce: int | None) -> None:
    """Signing from the kept SHA-256 states gives the HMAC-SHA256 tokens ``hmac.digest``
    gives, so links made before and after verify alike, and with an older key too."""
    signer = Signer(["new", "old"])
    body = Signer.body(sid, nonce=nonce)
    for purpose in (f"vote:{paper}", "unsubscribe", "view"):
        assert signer._sign(purpose, body) == signer._mac(signer._keys[0], purpose, body)
    assert signer.verify_paper("vote", signer.paper_token("vote", sid, paper, nonce), paper) == sid
    old = Signer(["old"]).token("unsubscribe", sid, nonce=nonce)
    assert signer.claims("unsubscribe", old).ids == [sid]
    assert body.startswith(base36(sid))


def test_7bit_html_is_the_same_page() -> None:
    html = "<p class=\"a\"\nstyle=\"x\">Rëader · 🚀 &amp; é</p>\n" * 3
    data = seven_bit(html)
    assert data is not None and data.isascii() and b"\n" not in data.replace(b"\r\n", b"")
    assert htmllib.unescape(data.decode()) == htmllib.unescape(html).replace("\n", "\r\n")


def test_picks_no_written_keyword_matched_are_not_said_to_match() -> None:
    """Papers in one group with no profile term (the "because you liked" fills, or
    related matches alone) are "for you", never "matched your interests"."""
    out = render_for([paper(i, f"Attention paper {i}") for i in range(3)], profile="zebra")
    p = TextAndLinks()
    p.feed(out.html)
    text = " ".join(p.text)
    assert "3 papers for you" in text and "matched your interests" not in text
    assert "3 papers for you" in out.text and "matched your interests" not in out.text


def test_content_has_every_part() -> None:
    out = render_for([paper(i, f"Attention paper {i}") for i in range(3)])
    p = TextAndLinks()
    p.feed(out.html)
    text = " ".join(p.text)
    assert "3 papers matched your interests" in text
    assert "Author 0, Author 1, Author 2 et al." in text
    assert "Dec 26, 2025" in text and "▲ 2" in text
    assert "matched: attention" in text
    assert "Research Digest, 1 Example Street, Springfield" in text  # postal address
    assert any(u.startswith("https://digest.example.org/unsubscribe/") for u in p.links)
    assert any(u.startswith("https://digest.example.org/preferences/") for u in p.links)
    assert any(u.startswith("https://digest.example.org/view/") for u in p.links)
    assert "https://github.com/x/y" in p.links and "https://arxiv.org/abs/2501.00001" in p.links
    assert '<strong class="hl"' in out.html  # the matched term is highlighted
    # The plain-text part carries the same content and links.
    for needle in ["Attention paper 1", "https://arxiv.org/abs/2501.00001", "matched: attention",
                   "Unsubscribe: https://digest.example.org/unsubscribe/", "Code: https://"]:
        assert needle in out.text, needle


@pytest.mark.parametrize("title", NASTY)
def test_hostile_titles_are_escaped_and_intact(title: str) -> None:
    out = render_for([paper(1, title, abstract=title + " attention"), paper(2, "Attention")])
    p = TextAndLinks()
    p.feed(out.html)
    assert "script" not in p.tags
    shown = cap(title)  # intact, as text (a title over 300 characters is cut, with "…")
    assert shown in "".join(p.text)
    assert shown in out.text
    parse_strict(out.message.data)


def test_twenty_papers_stay_under_gmail_clip() -> None:
    rows = [paper(i, f"Attention in paper {i} " + "with a long title " * 5,
                  abstract="attention " * 300) for i in range(20)]
    out = render_for(rows)
    assert out.papers == 20
    assert len(out.html.encode()) < GMAIL_CLIP_BYTES


def test_dkim_signature_covers_list_unsubscribe(tmp_path: Path) -> None:
    import dkim
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    (tmp_path / "dkim.pem").write_bytes(pem)
    settings = Settings().replace(
        sender={"from_address": "digest@example.org"},
        render={"dkim_selector": "s1", "dkim_domain": "example.org",
                "dkim_private_key": str(tmp_path / "dkim.pem")})
    out = render_for([paper(1, "Attention")], settings=settings)
    data = out.message.data
    assert data.startswith(b"DKIM-Signature:")
    signed = re.search(rb"h=([^;]+);", data.replace(b"\r\n ", b"").replace(b"\r\n\t", b""))
    assert signed is not None
    names = [h.strip().lower() for h in signed.group(1).split(b":")]
    assert b"list-unsubscribe" in names and b"list-unsubscribe-post" in names
    public = key.public_key().public_bytes(serialization.Encoding.DER,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    import base64

    record = b"v=DKIM1; k=rsa; p=" + base64.b64encode(public)
    assert dkim.verify(data, dnsfunc=lambda name, timeout=5: record)
    parse_strict(data)


def copy_templates(tmp_path: Path) -> Path:
    target = tmp_path / "tpl"
    shutil.copytree(BUNDLED, target)
    return target


@pytest.mark.parametrize("file, old, new, fragment", [
    ("partials/paper.html", "{% if p.why %}", "{% if p.why %", r"partials/paper\.html:\d+"),
    ("digest.mjml", "</mj-column>", "</mj-colunm>", r"digest\.mjml:\d+: unknown MJML tag"),
    ("digest.mjml", "</mj-text>", "", r"digest\.mjml:\d+: </mj-column> closes <mj-text>"),
    ("digest.txt", "{% endfor %}", "{% endfo %}", r"digest\.txt"),
])
def test_broken_templates_name_file_and_line(tmp_path: Path, file: str, old: str, new: str,
                                             fragment: str) -> None:
    directory = copy_templates(tmp_path)
    path = directory / file
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))
    with pytest.raises(TemplateError, match=fragment):
        compile_templates(str(directory))


def test_runtime_template_error_names_template(tmp_path: Path) -> None:
    directory = copy_templates(tmp_path)
    (directory / "subject.txt").write_text("{{ papers[0].nope.deeper }}")
    settings = Settings().replace(render={"templates": str(directory)})
    with pytest.raises(TemplateError, match="subject.txt"):
        render_for([paper(1, "Attention")], settings=settings)


def test_compile_cache_is_keyed_by_content(tmp_path: Path) -> None:
    directory = copy_templates(tmp_path)
    first = compile_templates(str(directory))
    assert compile_templates(str(directory)) is first
    (directory / "partials" / "header.mjml").write_text(
        (directory / "partials" / "header.mjml").read_text().replace("View in browser",
                                                                    "Read online"))
    second = compile_templates(str(directory))
    assert second.version != first.version and "Read online" in second.html_source


def test_trending_section_is_labelled() -> None:
    r, _ = renderer([paper(1, "Popular"), paper(2, "Also popular")])
    out = r.render(Recipient(1, "a@example.org"), [0, 1], [None, None], True)
    assert "Trending today (not matched to your keywords)" in out.html
    assert "No new paper matched your interests today" in out.html
    assert out.papers == 0 and out.trending == 2
    assert out.subject.startswith("Trending today")
    # a weekly email says "this week" throughout, not only in its subject and summary
    week = r.render(Recipient(1, "a@example.org"), [0, 1], [None, None], True, weekly=True)
    assert week.subject.startswith("Trending this week")
    for part in (week.html, week.text):
        assert "Trending this week (not matched to your keywords)" in part
        assert "No new paper matched your interests this week" in part
        assert "today" not in part.lower()


def test_the_period_words_leave_the_readers_terms_alone() -> None:
    """The opening line says the email's period ("since Friday" on a weekdays reader's
    Monday) without rewriting a reader's term that holds "today" or "for you"."""
    from newsletter.render.digest import summary_line

    r, _ = renderer([paper(1, "Popular"), paper(2, "Also popular")])
    views = [r.digest.paper(i, None) for i in (0, 1)]
    groups = [("today show transcripts", views[:1]), ("papers for you", views[1:])]
    for weekly, period, head in ((False, "since Friday", "2 new papers for you"),
                                 (True, "this week", "2 papers for you this week"),
                                 (False, "today", "2 new papers for you")):
        line = summary_line(views, [], weekly, groups, period=period)
        assert line == f"{head}: today show transcripts (1), papers for you (1)", line
    assert summary_line([], views, period="since Friday") == (
        "Nothing matched your keywords since Friday; 2 papers trending instead")
    assert summary_line([], [], True) == "Nothing new matched your keywords this week"


def test_explanation_why_line() -> None:
    ex = Explanation([("GNN", 3.0), ("diffusion", 1.0)], 4.0, 0.1, 0.1)
    assert ex.why == "matched: GNN, diffusion"


@hyp_settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(["Attention.", "is", "all", "you", "need!", "Really?", "x"]),
                min_size=1, max_size=120), st.integers(0, 10_000))
def test_excerpt_window_from_sentence_starts_made_once(words: list[str], pick: int) -> None:
    """The window found by bisecting sentence starts made once per paper is the one a
    scan of the text before the highlight finds."""
    from newsletter.render import digest

    text = " ".join(words)
    starts = [m.start() for m in re.finditer(r"\w+", text)]
    first = starts[pick % len(starts)]
    spans = [(first, first + 1)]
    scanned = 0
    for m in digest._SENTENCE.finditer(text, 0, first):
        scanned = m.end()
    expect_start = scanned if len(text) > digest.EXCERPT_CHARS else 0
    a, _ = digest.excerpt_window(text, spans, ends=digest.sentence_ends(text))
    if len(text) > digest.EXCERPT_CHARS and first - scanned > digest.EXCERPT_CHARS // 2:
        expect_start = text.rfind(" ", 0, first - 40) + 1
    assert a == expect_start


@hyp_settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.sampled_from(
    ["attention", "state space models", "GNN", "diffusion", "graph", "neural networks",
     "transformer", "language models", "reinforcement learning", "model", "benchmark",
     "vision", "training"]), min_size=1, max_size=4), min_size=1, max_size=12),
)
def test_excerpts_kept_by_window_are_the_ones_made_directly(profiles: list[list[str]]) -> None:
    """An excerpt is kept per paper, window and the highlights inside it, and shared by
    every set of terms that shows the same: each one is what marking all of that set's
    highlights in its window gives, the window opening on the strongest term's first
    place (the first of the explanation's features) where it has one."""
    from newsletter.render.digest import _marked_excerpt, excerpt_window, sentence_ends
    from newsletter.render.highlight import join_spans
    from newsletter.render.samples import sample_papers

    rows = [paper(i, p.title, p.abstract or "") for i, p in enumerate(sample_papers()[:40])]
    r, ranker = renderer(rows)
    builder = r.digest
    acronyms = builder.acronyms
    for terms in profiles:
        profile = ", ".join(terms)
        picks = list(range(len(rows)))
        for i, ex in zip(picks, ranker.explain_many(profile, picks), strict=True):
            (html, text), _, _ = builder._excerpt(i, tuple(ex.features))
            abstract = rows[i].abstract
            hl = Highlighter(abstract, acronyms)
            spans = join_spans(abstract, hl.spans(ex.features)) if ex.features else []
            lead = join_spans(abstract, hl.spans(ex.features[:1])) if ex.features else []
            a, b = excerpt_window(abstract, lead or spans, ends=sentence_ends(abstract))
            assert html == _marked_excerpt(abstract, spans, a, b)
            assert text == ("..." if a else "") + abstract[a:b] + (
                "..." if b < len(abstract) else "")


def test_the_excerpt_opens_on_the_strongest_term() -> None:
    """A paper matched strongly by one term late in its abstract, and weakly by another
    term's words early on: the excerpt shows the strong match highlighted (the window
    opened on the first highlight of any term, which showed only the weak one)."""
    filler = "We describe the data, the training schedule and the evaluation. " * 6
    abstract = ("Most state of the art models search a large space of designs. " + filler
                + "We add a sparse mixture of experts layer to every block.")
    rows = [paper(0, "Scaling with experts", abstract)] + [
        paper(i, f"Another paper {i}", f"About {w} and nothing more.")
        for i, w in enumerate(["state space models", "attention", "graphs"], start=1)]
    r, ranker = renderer(rows)
    profile = 'state space models, "mixture of experts"'
    [ex] = ranker.explain_many(profile, [0])
    assert [t for t, _ in ex.matched] == [
        "mixture of experts", "state space models (via state, space, models)"], ex.matched
    view = r.digest.paper(0, ex)
    assert '">mixture of experts</strong>' in view.excerpt, view.excerpt
    assert view.excerpt_text.startswith("...") and "mixture of experts" in view.excerpt_text


def test_a_digest_in_ascii_has_a_7bit_text_part() -> None:
    """The bundled text template writes ASCII punctuation, so an edition whose papers are
    ASCII sends its text part with no encoding; an accent anywhere makes it
    quoted-printable again, and both read the same."""
    settings = Settings().replace(sender={"from_address": "digest@example.org",
                                          "from_name": "Papers Digest"},
                                  web={"base_url": "https://digest.example.org"})
    long_abstract = "Attention is what we study here. " * 20
    for rows, encoding in (
            ([paper(i, f"Attention paper {i}", long_abstract) for i in range(3)], "7bit"),
            ([paper(1, "Attention à la carte", long_abstract)], "quoted-printable")):
        r, ranker = renderer(rows, settings)
        picks = list(range(len(rows)))
        out = r.render(Recipient(3, "reader@example.org", "Reader", "attention"), picks,
                       list(ranker.explain_many("attention", picks)), False)
        assert "..." in out.text and " - " in out.text  # an excerpt cut; the date line
        part = parse_strict(out.message.data).get_body(("plain",))
        assert part is not None and part["Content-Transfer-Encoding"] == encoding
        assert part.get_payload(decode=True).decode().replace("\r\n", "\n") == out.text


# The bundled samples rendered in a process of their own; "cached": Jinja may not compile
# anything (every template must come from the bytecode cache the first run filled).
_SAMPLES = """
import hashlib, sys
import jinja2
if sys.argv[1] == "cached":
    def refuse(*args, **kwargs):
        raise AssertionError("compiled a template the cache should have had")
    jinja2.Environment.compile = refuse
from newsletter.render.samples import sample_digests
digests = sample_digests()
print(hashlib.sha256("".join(r.subject + r.html + r.text
                             for r in digests.values()).encode()).hexdigest())
"""


def test_templates_compiled_once_come_from_jinjas_bytecode_cache(tmp_path: Path) -> None:
    """A second run on the machine loads the compiled templates instead of compiling them
    again (~60 ms of every send), and renders the same emails; without a usable cache
    directory, templates are compiled as before."""
    import os
    import subprocess
    import sys

    def run(mode: str, tmpdir: Path) -> str:
        env = {**os.environ, "TMPDIR": str(tmpdir)}
        done = subprocess.run([sys.executable, "-c", _SAMPLES, mode], env=env,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    first = run("compile", tmp_path)
    cached = [p for p in tmp_path.rglob("*.cache")]
    assert cached and all(p.stat().st_mode & 0o077 == 0 for p in cached)  # this user's own
    assert run("cached", tmp_path) == first
    # a cache "directory" that is not one (Jinja refuses it): compiled as before
    unusable = tmp_path / "unusable"
    unusable.mkdir()
    (unusable / f"_jinja2-cache-{os.getuid()}").write_text("not a directory")
    assert run("compile", unusable) == first
    assert list(unusable.iterdir()) == [unusable / f"_jinja2-cache-{os.getuid()}"]


def test_a_damaged_cache_entry_is_compiled_again_and_written_over(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import jinja2
    from jinja2.bccache import FileSystemBytecodeCache, bc_magic

    from newsletter.render import bytecode

    monkeypatch.setattr(bytecode, "_cache", lambda: FileSystemBytecodeCache(str(tmp_path)))
    env = jinja2.Environment(autoescape=True)
    assert bytecode.from_source(env, "<p>{{ x }}</p>").render(x="&") == "<p>&amp;</p>"
    (entry,) = tmp_path.iterdir()
    entry.write_bytes(bc_magic + b"\x80\x04")  # the checksum's pickle cut short
    assert bytecode.from_source(env, "<p>{{ x }}</p>").render(x="<") == "<p>&lt;</p>"

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("compiled again: the damaged entry was not written over")

    monkeypatch.setattr(jinja2.Environment, "compile", refuse)
    assert bytecode.from_source(env, "<p>{{ x }}</p>").render(x="1") == "<p>1</p>"


def test_a_cached_template_is_never_one_of_other_settings_or_source() -> None:
    """The same source under autoescaping and without it, or two sources, are entries
    of their own (the generated code differs)."""
    import jinja2

    from newsletter.render.bytecode import _key, from_source

    html = jinja2.Environment(autoescape=True, keep_trailing_newline=True)
    text = jinja2.Environment(autoescape=False, keep_trailing_newline=True)
    source = "{{ title }}\n"
    assert _key(html, source) != _key(text, source) != _key(text, source + " ")
    assert from_source(html, source).render(title="<b>") == "&lt;b&gt;\n"
    assert from_source(text, source).render(title="<b>") == "<b>\n"
    assert from_source(text, source + " ").render(title="<b>") == "<b>\n "
