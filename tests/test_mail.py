"""The email held to tools nobody here wrote: SpamAssassin, axe-core in chromium,
html-validate, dkimpy; plus every text node's contrast in light and dark mode, header
folding, link schemes, highlights, and ``newsletter check`` / ``send``'s gate."""

from __future__ import annotations

import email
import email.policy
import email.utils
import json
import logging
import os
import re
import shutil
import subprocess
from email.header import decode_header, make_header
from html import unescape
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from newsletter.config import Settings, WebConfig
from newsletter.render.renderer import Rendered
from newsletter.render.samples import sample_digests
from newsletter.urls import safe_url

from .axe import blocking
from .conftest import need_service
from .test_web import site  # noqa: F401 - the real web server fixture

HTML_VALIDATE = "html-validate@9.7.1"
NPM_CACHE = Path(os.environ.get("NEWSLETTER_NPM_CACHE",
                                Path.home() / ".cache" / "newsletter-npm"))
# html-validate's recommended rules, less those an email layout needs, and why:
HTML_VALIDATE_OFF = {
    "no-inline-style": "clients strip <style>; inline styles are how an email is styled",
    "no-conditional-comment": "<!--[if mso]> tables are how Outlook on Windows lays out",
    "no-deprecated-attr": "cellpadding/cellspacing/align/width are what Outlook's Word "
                          "engine reads",
    "no-trailing-whitespace": "indentation left by template blocks; invisible",
    "prefer-native-element": 'MJML wraps the body in <div role="article">, the pattern '
                             "for clients that drop <article>",
    "long-title": "the <title> is the subject line, not a search-result title",
}


def private_key(tmp: Path) -> Path:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path = tmp / "dkim.pem"
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    return path


def live_settings(key: Path) -> Settings:
    """A configuration fit to send: what `newsletter check` passes (bar the transport)."""
    return Settings().replace(
        sender={"from_address": "digest@papers-digest.net", "from_name": "Research Digest",
                "list_id": "digest.papers-digest.net",
                "postal_address": "Research Digest, 12 Quay Street, Galway H91 X2YZ, Ireland"},
        web={"base_url": "https://papers-digest.net"},
        render={"dkim_selector": "s1", "dkim_domain": "papers-digest.net",
                "dkim_private_key": str(key)})


def digest_sections(settings: Settings) -> dict[str, Any]:
    """The sections a digest is made from, as ``sample_digests`` and ``SampleSet`` take them."""
    return {"ranking": settings.ranking, "render": settings.render, "sender": settings.sender,
            "web": settings.web}


@pytest.fixture(scope="module")
def key_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return private_key(tmp_path_factory.mktemp("dkim"))


@pytest.fixture(scope="module")
def digests(key_file: Path) -> dict[str, Rendered]:
    return sample_digests(**digest_sections(live_settings(key_file)))


@pytest.fixture(scope="module")
def html_files(digests: dict[str, Rendered], tmp_path_factory: pytest.TempPathFactory,
               ) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("html")
    files = {}
    for name, r in digests.items():
        files[name] = out / f"{name}.html"
        files[name].write_text(r.html, encoding="utf-8")
    return files


# ---- SpamAssassin ---------------------------------------------------------------------


def spamassassin(data: bytes) -> tuple[float, list[str]]:
    """Score and rule names from `spamassassin -t -L` (local tests only, no network)."""
    if not shutil.which("spamassassin"):
        need_service("spamassassin", "Debian's spamassassin package is not installed")
    out = subprocess.run(["spamassassin", "-t", "-L"], input=data, capture_output=True,
                         timeout=180, check=False).stdout.decode("utf-8", "replace")
    status = re.search(r"^X-Spam-Status: .*?score=(-?[\d.]+)", out, re.M)
    assert status, out[:2000]
    report = out[out.find("Content analysis details"):]
    rules = re.findall(r"^\s*-?[\d.]+\s+([A-Z0-9_]+)\s", report, re.M)
    return float(status.group(1)), rules


@pytest.mark.slow  # an outside checker, a Perl process per message
def test_spamassassin_scores_nothing(digests: dict[str, Rendered]) -> None:
    """Sample, trending and hostile digests, DKIM-signed: score at most 0.0. The old
    hidden preheader (white text) is the control: it must still cost points, or the
    scanner is not looking."""
    for name, r in digests.items():
        assert r.message.data.startswith(b"DKIM-Signature:")
        score, rules = spamassassin(r.message.data)
        assert score <= 0.0, (name, score, rules)
    old = digests["sample"].message.data.decode()
    head, _, body = old.partition("\r\n\r\n")
    html = body.rsplit("Content-Transfer-Encoding: 7bit\r\n\r\n", 1)[1].split("\r\n--")[0]
    hidden = re.sub(r'<div class="preheader"\s+style="display:none;',
                    '<div style="display:none;color:#ffffff;', html, count=1)
    assert hidden != html
    control = old.replace(html, hidden)
    score, rules = spamassassin(control.encode())
    assert "HTML_FONT_LOW_CONTRAST" in rules, rules


# ---- headers, MIME, DKIM --------------------------------------------------------------


def header_block(data: bytes) -> str:
    return data.split(b"\r\n\r\n", 1)[0].decode("ascii")


def test_headers_fold_and_verify(digests: dict[str, Rendered], key_file: Path) -> None:
    import dkim

    from newsletter.delivery.check import dkim_record

    record = dkim_record(key_file.read_bytes()).encode()
    for name, r in digests.items():
        data = r.message.data
        head = header_block(data)
        for line in head.split("\r\n"):
            # folded at 78 wherever a fold point exists; one URI that is longer (the
            # mailto with its token) stands alone on its line
            assert len(line) <= 78 or " " not in line.strip(), (name, line)
            assert len(line) <= 120, (name, line)
        for word in re.findall(r"=\?[^?]+\?[bBqQ]\?[^?]*\?=", head):
            assert len(word) <= 75, (name, word)
        msg = email.message_from_bytes(data, policy=email.policy.strict)
        for part in msg.walk():
            assert not part.defects, (name, part.defects)
        assert re.fullmatch(r"\w{3}, \d{1,2} \w{3} \d{4} \d\d:\d\d:\d\d \+0000", msg["Date"])
        assert msg["Feedback-ID"] == "1:digest:digest.papers-digest.net"
        assert str(msg["Subject"]) == r.subject
        assert dkim.verify(data, dnsfunc=lambda n, timeout=5: record), name
        # the signature covers what receivers act on
        sig = re.sub(r"\s+", "", head.split("\r\nTo:")[0])
        for h in ("list-unsubscribe", "list-unsubscribe-post", "feedback-id", "from"):
            assert h in sig.split("h=")[1].split(";")[0].split(":"), h


@settings(max_examples=150, deadline=None)
@given(st.text(min_size=1, max_size=300).filter(lambda s: s.strip()),
       st.text(max_size=60))
def test_any_subject_and_name_fold_and_round_trip(subject: str, name: str) -> None:
    from newsletter.render.mime import MimeBuilder

    m = MimeBuilder(Settings().replace(sender={"from_address": "d@papers-digest.net",
                                               "from_name": name or "Digest"}).sender)
    msg = m.build(to="r@example.org", to_name=name, subject=subject, text="t", html="<p>h</p>",
                  message_id="<x@papers-digest.net>",
                  list_unsubscribe="<https://papers-digest.net/u/1.abc>, <mailto:d@papers-digest"
                                   ".net?subject=unsubscribe%201.abc>")
    head = header_block(msg.data)
    for line in head.split("\r\n"):
        assert len(line) <= 78 or " " not in line.strip(), line
    for word in re.findall(r"=\?[^?]+\?[bBqQ]\?[^?]*\?=", head):
        assert len(word) <= 75, word
    parsed = email.message_from_bytes(msg.data, policy=email.policy.strict)
    assert str(parsed["Subject"]) == " ".join(subject.split())
    from newsletter.addresses import clean_header_text

    name = clean_header_text(name)  # control characters never reach a header
    if name.strip():
        # decode_header, not the address parser: Python's parser puts a space between
        # adjacent encoded words in a display name, which RFC 2047 (6.2) says to ignore
        to = re.search(r"(?:^|\r\n)To: (.*?)\r\n(?=\S)", head, re.S)
        assert to
        raw = re.sub(r"\r\n\s", " ", to.group(1))
        phrase = raw.rsplit(" <", 1)[0]
        decoded = str(make_header(decode_header(phrase)))
        if phrase.startswith('"'):
            decoded = email.utils.unquote(decoded)
        assert decoded == " ".join(name.split())


# ---- links ----------------------------------------------------------------------------


class Hrefs(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for k, v in attrs:
            if k in ("href", "src"):
                self.urls.append(v or "")


URL_CHARS = re.compile(r"https?://[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]+")


def test_only_http_links_leave_the_renderer(digests: dict[str, Rendered]) -> None:
    """Entries stored with javascript:/data: links and quotes in URLs (as a hostile feed
    could) still render only clean http(s) links, in both parts."""
    for name, r in digests.items():
        p = Hrefs()
        p.feed(r.html)
        assert p.urls, name
        for u in p.urls:
            assert URL_CHARS.fullmatch(u), (name, u)
        for scheme in ("javascript:", "data:text", "onmouseover=\""):
            assert scheme not in r.html.lower(), (name, scheme)
            assert scheme not in r.text.lower(), (name, scheme)
    hostile = digests["hostile"]
    assert "https://github.com/x/y%22onmouseover=%22alert(1)" in hostile.html
    assert "Code: https://example.org/a%20b%3Cc%3E" in hostile.text


@settings(max_examples=300, deadline=None)
@example("http://\u2024")  # a Unicode dot as the host: "http://." the next pass refused
@given(st.one_of(st.text(max_size=80),
                 st.builds(lambda s, rest: s + rest,
                           st.sampled_from(["http://", "https://", "HTTPS://x.org/",
                                            "javascript:", "https://a.b/", "data:", "//"]),
                           st.text(max_size=60))))
def test_safe_url_emits_only_clean_http(url: str) -> None:
    out = safe_url(url)
    if out:
        assert out.startswith(("http://", "https://")), out
        assert URL_CHARS.fullmatch(out), out
        assert safe_url(out) == out  # idempotent: stored links are stable


def test_ingest_drops_unsafe_links_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    from newsletter.ingest.run import parse_text

    data = json.dumps([{"title": "A paper with a bad link", "paper": {
        "id": "2501.00001", "title": "A paper with a bad link", "summary": "x",
        "authors": [{"name": "A"}], "publishedAt": "2025-01-01T00:00:00Z",
        "upvotes": 1, "githubRepo": "javascript:alert(1)",
        "projectPage": 'https://x.org/"q"'}}])
    with caplog.at_level(logging.WARNING, logger="newsletter.ingest"):
        papers = parse_text(data, "feed.json")
    assert papers[0].code_url == ""
    assert papers[0].project_url == "https://x.org/%22q%22"
    assert any("A paper with a bad link" in m and "code_url" in m and "javascript" in m
               for m in caplog.messages), caplog.messages


# ---- the content ----------------------------------------------------------------------


def test_highlights_are_whole_phrases() -> None:
    from newsletter.render.samples import SampleSet

    rows = [type("E", (), dict(
        id="2501.00001", arxiv_id="2501.00001", title="Selective State Space Models",
        abstract="We scale State Space Models. A state-space model is linear. "
                 "Only the state is kept.",
        authors=["Ann Lee", "Bo Chen", "Cy Diaz", "Di Egan", "Yann LeCun"], published=None,
        upvotes=3, url="", code_url="https://github.com/x/y", project_url="", keywords=[]))]
    s = SampleSet(rows, web=WebConfig(base_url="https://papers-digest.net"))
    from newsletter.render.renderer import Recipient

    r = s.render(Recipient(1, "a@example.org", "A",
                           'state space models, author:"Yann LeCun"'))
    marks = re.findall(r'<strong class="hl"[^>]*>(.*?)</strong>', r.html)
    assert "State Space Models" in marks and "state-space model" in marks, marks
    assert "State" not in marks and "Space" not in marks
    assert "Yann LeCun" in marks  # a followed author, shown though fifth
    assert "<mark" not in r.html
    assert "Ann Lee, Bo Chen, Cy Diaz, Yann LeCun et al." in r.text
    for link in ("https://arxiv.org/abs/2501.00001", "https://arxiv.org/pdf/2501.00001",
                 "https://github.com/x/y"):
        assert f'href="{link}"' in r.html and link in r.text
    assert ">PDF</a>" in r.html and ">Code</a>" in r.html


def test_summary_groups_and_title_cap(digests: dict[str, Rendered]) -> None:
    sample = digests["sample"]
    m = re.search(r'<p class="summary"[^>]*>(\d+) new papers for you: (.*?)\.</p>',
                  sample.html)
    assert m, sample.html[:3000]
    counts = [int(c) for c in re.findall(r"\((\d+)\)", m.group(2))]
    assert sum(counts) == int(m.group(1)) == sample.papers and len(counts) >= 2
    headings = re.findall(r'<h2 class="section"[^>]*>(.*?)</h2>', sample.html)
    assert len(headings) == len(counts)  # one section per matched term
    assert sample.html.count("<h1") == 1 and '<html lang="en"' in sample.html
    assert m.group(0)[m.group(0).index(">") + 1:-4] in sample.html  # the preheader too
    hostile = digests["hostile"]
    # as a reader sees them: the HTML writes non-ASCII characters as references
    titles = [unescape(t) for t in re.findall(r'<a class="title-link"[^>]*>(.*?)</a>',
                                              hostile.html)]
    assert max(len(t) for t in titles) <= 300 and any(t.endswith("…") for t in titles)
    assert "x" * 400 not in hostile.text


def test_thumbnails_only_when_asked(key_file: Path) -> None:
    from newsletter.render.renderer import Recipient
    from newsletter.render.samples import SampleSet, hostile_papers

    who = Recipient(1, "a@example.org", "A", "attention")
    plain = SampleSet(hostile_papers(), **digest_sections(live_settings(key_file))).render(who)
    assert "<img" not in plain.html
    remote = SampleSet(hostile_papers(), **digest_sections(
        live_settings(key_file).replace(render={"images": "remote"}))).render(who)
    imgs = re.findall(r"<img [^>]*>", remote.html)
    assert imgs
    for tag in imgs:
        assert 'width="160"' in tag and 'height="90"' in tag and 'alt="Thumbnail of' in tag
        assert re.search(r'src="https://cdn-thumbnails\.huggingface\.co/social-thumbnails/'
                         r'papers/2501\.\d{5}\.png"', tag), tag


# ---- html-validate ----------------------------------------------------------------------


def html_validate() -> Path:
    """html-validate from npm, installed once into a cache folder (node is on the
    machine; npm reaches its registry)."""
    binary = NPM_CACHE / "node_modules" / ".bin" / "html-validate"
    if binary.exists():
        return binary
    if not shutil.which("npm"):
        need_service("npm", "node/npm are needed to install html-validate")
    NPM_CACHE.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--prefix",
                           str(NPM_CACHE), HTML_VALIDATE], capture_output=True, text=True,
                          timeout=300, check=False)
    if done.returncode or not binary.exists():
        need_service("html-validate", f"npm install failed: {done.stderr[-300:]}")
    return binary


@pytest.mark.slow  # an outside checker (node), installed from npm when missing
def test_html_validate(html_files: dict[str, Path], tmp_path: Path) -> None:
    config = tmp_path / ".htmlvalidate.json"
    config.write_text(json.dumps({"extends": ["html-validate:recommended"],
                                  "rules": {rule: "off" for rule in HTML_VALIDATE_OFF}}))
    result = subprocess.run([str(html_validate()), "--config", str(config), "--formatter",
                             "text", *map(str, html_files.values())], capture_output=True,
                            text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-1000:]


# ---- chromium: axe-core and contrast ---------------------------------------------------




def open_page(browser: Any, html: Path, width: int, scheme: str) -> Any:
    page = browser.new_page(viewport={"width": width, "height": 900}, color_scheme=scheme)
    page.route("**/*", lambda route: route.continue_()
               if route.request.url.startswith("file:") else route.abort())
    page.goto(html.resolve().as_uri())
    return page


@pytest.mark.browser
@pytest.mark.parametrize("scheme", ["light", "dark"])
@pytest.mark.parametrize("width", [375, 600])
def test_axe_finds_nothing_serious(browser: Any, html_files: dict[str, Path], width: int,
                                   scheme: str) -> None:
    for name, html in html_files.items():
        page = open_page(browser, html, width, scheme)
        try:
            assert blocking(page) == [], (name, width, scheme)
        finally:
            page.close()


@pytest.mark.browser
def test_axe_catches_low_contrast(browser: Any, html_files: dict[str, Path]) -> None:
    """The control: the defect this replaced (grey on dark) is what axe reports."""
    page = open_page(browser, html_files["sample"], 600, "dark")
    page.evaluate("""() => { for (const el of document.querySelectorAll('.sub'))
                               el.style.setProperty('color', '#1f2328', 'important'); }""")
    found = blocking(page)
    page.close()
    assert any(line.startswith("color-contrast") for line in found), found


CONTRAST_JS = """() => {
  const parse = (c) => { const m = c.match(/[\\d.]+/g).map(Number);
                         return [m[0], m[1], m[2], m.length > 3 ? m[3] : 1]; };
  const lum = ([r, g, b]) => { const f = [r, g, b].map(v => { v /= 255;
      return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); });
      return 0.2126 * f[0] + 0.7152 * f[1] + 0.0722 * f[2]; };
  const background = (el) => { for (; el; el = el.parentElement) {
      const c = parse(getComputedStyle(el).backgroundColor); if (c[3] > 0.5) return c; }
      return [255, 255, 255, 1]; };
  const out = []; let n = 0;
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let t = walker.nextNode(); t; t = walker.nextNode()) {
    if (!t.textContent.trim()) continue;
    const el = t.parentElement; const box = el.getBoundingClientRect();
    if (box.width === 0 || box.height === 0) continue;  // hidden (the preheader)
    const st = getComputedStyle(el);
    if (st.visibility === 'hidden' || st.display === 'none' || +st.opacity === 0) continue;
    n += 1;
    const fg = lum(parse(st.color)), bg = lum(background(el));
    const ratio = (Math.max(fg, bg) + 0.05) / (Math.min(fg, bg) + 0.05);
    if (ratio < 4.5) out.push([t.textContent.trim().slice(0, 40), st.color,
                               background(el).join(','), ratio.toFixed(2)]);
  }
  return {checked: n, low: out};
}"""


@pytest.mark.browser
@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_every_text_node_has_contrast(browser: Any, html_files: dict[str, Path],
                                      scheme: str) -> None:
    """Every visible text node, not a sample of them: masthead, date line, summary,
    headings, titles, authors, excerpts, highlights, links and the footer."""
    for name, html in html_files.items():
        page = open_page(browser, html, 600, scheme)
        result = page.evaluate(CONTRAST_JS)
        if scheme == "dark":
            assert page.evaluate(
                "() => getComputedStyle(document.querySelector('.masthead')).color"
            ) == "rgb(230, 237, 243)"
            assert page.evaluate(
                "() => getComputedStyle(document.querySelector('.masthead')).fontSize"
            ) == "22px"
        page.close()
        assert result["checked"] > 20, (name, result)
        assert result["low"] == [], (name, scheme, result["low"][:10])


# ---- newsletter check and send's gate ----------------------------------------------------


def test_check_fails_on_demo_defaults(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    r = cli("check")
    assert r.code == 1
    assert r.stderr.splitlines()[0] == (  # which settings were checked: none here
        f"settings: no config file ({tmp_path.resolve() / 'config.toml'} not found; "
        "--config or NEWSLETTER_CONFIG names one): the built-in defaults, then "
        "NEWSLETTER_* from the environment")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "config.toml").write_text('[sender]\nfrom_name = "X"\n')
    named = cli("check", env={"NEWSLETTER_CONFIG": str(tmp_path / "elsewhere" / "config.toml")})
    assert named.stderr.splitlines()[0].startswith(
        f"settings: {(tmp_path / 'elsewhere' / 'config.toml').resolve()}, then")
    lines = r.stdout.splitlines()
    for key in ("web.base_url", "sender.from_address", "sender.list_id",
                "sender.postal_address", "dkim", "transport (outbox)"):
        line = next(x for x in lines if x.split(":")[0].endswith(key))
        assert line.startswith("✗") and "fix:" in line, line
    assert any(x.startswith("✓ templates") for x in lines)
    data = json.loads(cli("check", "--json").stdout)
    assert data["ok"] is False and {i["key"] for i in data["items"]} >= {"spf", "dmarc"}


def test_check_passes_a_live_config_over_smtp(cli, smtp_sink, key_file: Path,  # type: ignore[no-untyped-def]
                                              tmp_path: Path) -> None:
    s = live_settings(key_file)
    env = {"NEWSLETTER_WEB__BASE_URL": s.web.base_url,
           "NEWSLETTER_SENDER__FROM_ADDRESS": s.sender.from_address,
           "NEWSLETTER_SENDER__LIST_ID": s.sender.list_id,
           "NEWSLETTER_SENDER__POSTAL_ADDRESS": s.sender.postal_address,
           "NEWSLETTER_RENDER__DKIM_SELECTOR": "s1",
           "NEWSLETTER_RENDER__DKIM_DOMAIN": "papers-digest.net",
           "NEWSLETTER_RENDER__DKIM_PRIVATE_KEY": str(key_file),
           "NEWSLETTER_TRANSPORT__BACKEND": "smtp", "NEWSLETTER_SMTP__HOST": "127.0.0.1",
           "NEWSLETTER_SMTP__PORT": str(smtp_sink.port)}
    r = cli("check", "--json", env=env)
    items = {i["key"]: i for i in json.loads(r.stdout)["items"]}
    assert [k for k, i in items.items() if not i["ok"]] == ["database"], items
    assert cli("db", "upgrade").code == 0
    r = cli("check", "--json", env=env)
    assert r.code == 0, r.stdout
    items = {i["key"]: i for i in json.loads(r.stdout)["items"]}
    # a plain-text relay on this machine is fine, with a note
    assert "connect, EHLO" in items["transport (smtp)"]["detail"]
    assert "no TLS: fine for a relay on this machine" in items["transport (smtp)"]["fix"]
    # its address is not one to put in SPF
    assert "127.0.0.1" not in items["spf"]["detail"]
    assert "<the public address your relay sends from>" in items["spf"]["detail"]
    assert smtp_sink.messages == []  # nothing sent
    record = items["dkim.dns"]["detail"]
    assert record.startswith('publish s1._domainkey.papers-digest.net TXT "v=DKIM1; k=rsa; p=')
    assert items["dkim.alignment"]["status"] == "ok"
    env |= {"NEWSLETTER_TRANSPORT__BACKEND": "sendgrid",
            "NEWSLETTER_API__API_KEY": "SG.abcdefghijklmnopqrst.abcdefghijklmnopqrstuvwxyz012"}
    r = cli("check", env=env)
    assert r.code == 0, r.stdout
    env["NEWSLETTER_API__API_KEY"] = "not-a-key"
    r = cli("check", env=env)
    assert r.code == 1 and "✗ transport (sendgrid)" in r.stdout
    env["NEWSLETTER_SMTP__PORT"] = "1"
    env["NEWSLETTER_TRANSPORT__BACKEND"] = "smtp"
    r = cli("check", env=env)
    assert r.code == 1 and "✗ transport (smtp): 127.0.0.1:1" in r.stdout


def test_send_refuses_non_compliant_mail_unless_forced(cli, smtp_sink) -> None:  # type: ignore[no-untyped-def]
    env = {"NEWSLETTER_TRANSPORT__BACKEND": "smtp", "NEWSLETTER_SMTP__HOST": "127.0.0.1",
           "NEWSLETTER_SMTP__PORT": str(smtp_sink.port)}
    from .conftest import ROOT

    assert cli("ingest", str(ROOT / "newsletter" / "data" / "sample_papers.json")).code == 0
    assert cli("subscribers", "add", "ada@example.org", "--keywords", "vision transformer"
               ).code == 0
    r = cli("send", "--yes", "--date", "2030-01-02", env=env)
    assert r.code != 0
    for problem in ("web.base_url", "not https", "sender.from_address",
                    "sender.postal_address"):
        assert problem in r.stderr, r.stderr
    assert smtp_sink.messages == []
    r = cli("send", "--yes", "--force", "--date", "2030-01-02", env=env)
    assert r.code == 0, r.stderr
    assert "warning: sending anyway (--force)" in r.stderr
    assert smtp_sink.messages


def test_web_paper_page_never_links_another_scheme(site) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    """A row stored before the link rule (or edited by hand) with javascript:/quoted
    links: the public paper page still only links http(s)."""
    import httpx

    from newsletter.store.db import session_scope
    from newsletter.store.models import Entry

    url, _settings, engine, _signer = site
    with session_scope(engine) as s:
        entry = s.scalars(select(Entry).limit(1)).one()
        entry.url, entry.code_url = "javascript:alert(1)", 'https://github.com/x/y"onclick="x'
        entry_id = entry.id
    page = httpx.get(f"{url}/papers/{quote(entry_id, safe='')}")
    assert page.status_code == 200
    p = Hrefs()
    p.feed(page.text)
    assert "javascript:" not in page.text and 'onclick="x' not in page.text
    assert "https://github.com/x/y%22onclick=%22x" in p.urls
