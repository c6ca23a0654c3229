"""Template loading and the compile cache.

``digest.mjml`` is MJML with Jinja inside. It is compiled to HTML by MRML and its
CSS inlined *once per template version* (the cache key is a hash of every file
in the template directory); per subscriber only the resulting Jinja template
runs. Jinja control statements survive both steps because they sit in text
positions (inside ``mj-text`` or between sections), never between table rows.

``<mj-include path="..."/>`` is expanded here, before compiling, so partials are
inlined and styled like the rest. Errors name the template file and line.

The inlined HTML is then made ready to go into a message as it is (7-bit, see
``render/mime.py``): style attributes lose the spaces the inliner writes
(``color: #fff;`` → ``color:#fff``; the same CSS), and long lines are broken between
a tag's attributes, where a line end means what the space meant, so that no line
comes near SMTP's 998-byte limit. The page the browser builds is unchanged.
"""

from __future__ import annotations

import hashlib
import re
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import css_inline
import jinja2
import mjml
from jinja2.runtime import new_context

from newsletter.errors import TemplateError
from newsletter.render.blocks import BlockPlan, escaped, split_blocks
from newsletter.render.bytecode import from_source

# The top-level templates/ folder, carried inside the package (newsletter/templates
# links to it in the checkout; a built wheel holds a copy).
BUNDLED = Path(__file__).resolve().parent.parent / "templates"
_INCLUDE = re.compile(r'<mj-include\s+path="([^"]+)"\s*/>')
_TAG = re.compile(r"<(/?)(mjml|mj-[a-z-]+)\b([^>]*?)(/?)>")
KNOWN_TAGS = {
    "mjml", "mj-head", "mj-body", "mj-title", "mj-preview", "mj-attributes", "mj-all",
    "mj-class", "mj-style", "mj-font", "mj-breakpoint", "mj-raw", "mj-section", "mj-column",
    "mj-group", "mj-wrapper", "mj-text", "mj-button", "mj-image", "mj-divider", "mj-spacer",
    "mj-table", "mj-social", "mj-social-element", "mj-navbar", "mj-navbar-link", "mj-hero",
    "mj-accordion", "mj-accordion-element", "mj-accordion-title", "mj-accordion-text",
    "mj-carousel", "mj-carousel-image", "mj-include",
}


@dataclass(frozen=True)
class Compiled:
    version: str
    html: jinja2.Template
    text: jinja2.Template
    subject: jinja2.Template
    html_source: str
    # True when the HTML can go as 7-bit text with non-ASCII as character references:
    # no Jinja and no non-ASCII inside <style> or <script>, where references are not
    # decoded.
    html_7bit: bool = False
    blocks: tuple[BlockPlan, ...] = ()  # split-off paper blocks, HTML's then text's


_cache: dict[str, Compiled] = {}


def template_dir(configured: str | None) -> Path:
    path = Path(configured) if configured else BUNDLED
    if not (path / "digest.mjml").is_file():
        raise TemplateError(f"{path}: no digest.mjml in the template directory "
                            "([render] templates)")
    return path


def _version(directory: Path) -> str:
    digest = hashlib.sha256()
    for f in sorted(p for p in directory.rglob("*") if p.is_file()):
        digest.update(str(f.relative_to(directory)).encode())
        digest.update(f.read_bytes())
    return digest.hexdigest()[:16]


def _expand(directory: Path, name: str, depth: int = 0) -> list[tuple[str, str, int]]:
    """The template as (file, line text, line number) triples, includes expanded."""
    if depth > 8:
        raise TemplateError(f"{name}: includes nested too deeply")
    path = directory / name
    try:
        source = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TemplateError(f"{path}: included template not found") from None
    out: list[tuple[str, str, int]] = []
    for n, line in enumerate(source.splitlines(), 1):
        pos = 0
        for m in _INCLUDE.finditer(line):
            if m.start() > pos:
                out.append((name, line[pos : m.start()], n))
            out.extend(_expand(directory, m.group(1), depth + 1))
            pos = m.end()
        out.append((name, line[pos:] if pos else line, n))
    return out


def _check_tags(lines: list[tuple[str, str, int]], directory: Path) -> None:
    """MRML's own errors carry no position: find unbalanced or unknown tags ourselves."""
    stack: list[tuple[str, str, int]] = []
    for fname, text, n in lines:
        for m in _TAG.finditer(text):
            closing, tag, _, self_closing = m.groups()
            where = f"{directory / fname}:{n}"
            if tag not in KNOWN_TAGS:
                raise TemplateError(f"{where}: unknown MJML tag <{tag}>")
            if self_closing:
                continue
            if not closing:
                stack.append((tag, fname, n))
                continue
            if not stack:
                raise TemplateError(f"{where}: </{tag}> closes nothing")
            open_tag, ofile, on = stack.pop()
            if open_tag != tag:
                raise TemplateError(
                    f"{where}: </{tag}> closes <{open_tag}> opened at {ofile}:{on}")
    if stack:
        tag, fname, n = stack[-1]
        raise TemplateError(f"{directory / fname}:{n}: <{tag}> is never closed")


def _env() -> jinja2.Environment:
    return jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined,
                              keep_trailing_newline=True)


def _jinja(env: jinja2.Environment, source: str, name: str,
           lines: list[tuple[str, str, int]] | None = None) -> jinja2.Template:
    try:
        return printing_escaped(from_source(env, source))
    except jinja2.TemplateSyntaxError as exc:
        if lines and exc.lineno and exc.lineno <= len(lines):
            fname, _, n = lines[exc.lineno - 1]
            raise TemplateError(f"{name.rsplit('/', 1)[0]}/{fname}:{n}: {exc.message}") from None
        raise TemplateError(f"{name}:{exc.lineno}: {exc.message}") from None


def compile_templates(configured: str | None = None, *, split: bool = True) -> Compiled:
    """The compiled templates for the directory, from the cache when unchanged.
    ``split``: marked paper blocks become templates of their own (render/blocks.py);
    without, every block runs inline (the tests compare the two)."""
    directory = template_dir(configured)
    version = _version(directory)
    key = f"{version}:{int(split)}"
    hit = _cache.get(key)
    if hit is not None:
        return hit
    lines = _expand(directory, "digest.mjml")
    _check_tags(lines, directory)
    mjml_source = "\n".join(text for _, text, _ in lines)
    env = _env()
    # Jinja syntax errors are found on the MJML source, where line numbers mean something.
    _jinja(env, mjml_source, str(directory / "digest.mjml"), lines)
    try:
        # fonts={}: no web-font imports; an email must not call out to a font host
        html = mjml.mjml2html(mjml_source, disable_comments=True, fonts={})
    except ValueError as exc:
        raise TemplateError(f"{directory / 'digest.mjml'}: MJML does not compile: {exc}") \
            from None
    inliner = css_inline.CSSInliner(keep_style_tags=True, load_remote_stylesheets=False)
    html = email_ready(inliner.inline(html))
    seven_bit = raw_text_is_plain(html)
    if seven_bit:
        html = ascii_outside_jinja(html)
    text_env = jinja2.Environment(autoescape=False, undefined=jinja2.StrictUndefined,
                                  keep_trailing_newline=True)
    text = _read(directory, "digest.txt")
    _jinja(text_env, text, str(directory / "digest.txt"))  # errors on the file as written
    blocks: list[BlockPlan] = []
    if split:
        html, blocks = split_blocks(env, html)
        text, text_blocks = split_blocks(text_env, text, first=len(blocks))
        blocks += text_blocks
    compiled = Compiled(
        version=version,
        html=_jinja(env, html, str(directory / "digest.mjml")),
        text=_jinja(text_env, text, str(directory / "digest.txt")),
        subject=_jinja(text_env, _read(directory, "subject.txt"),
                       str(directory / "subject.txt")),
        html_source=html,
        html_7bit=seven_bit,
        blocks=tuple(blocks),
    )
    _cache[key] = compiled
    return compiled


FOLD_AT = 160  # lines longer than this are broken between the attributes of their tags
_STYLE_ATTR = re.compile(r'style="([^"{}]*)"')
_QUOTED = re.compile(r"('[^']*')")
_CSS_SPACE = re.compile(r"\s*([:;,])\s*")
_START_TAG = re.compile(r"<[A-Za-z][^<>]*>")
_TAG_TOKEN = re.compile(r"""\s+|"[^"]*"|'[^']*'|[^\s"']+""")
_JINJA = re.compile(r"(\{\{.*?\}\}|\{%.*?%\}|\{#.*?#\})", re.S)
_RAW_TEXT = re.compile(r"<(style|script)\b[^>]*>(.*?)</\1", re.S | re.I)


def _minified(m: re.Match[str]) -> str:
    """A style attribute without the spaces around ``:``, ``;`` and ``,`` (quoted
    strings, such as a font name, kept as they are). A style written without spaces
    stays byte for byte as it was (the hidden preheader's: spam filters read it)."""
    parts = _QUOTED.split(m.group(1))
    value = "".join(part if i % 2 else _CSS_SPACE.sub(r"\1", part)
                    for i, part in enumerate(parts))
    return f'style="{value.strip()}"'


def _fold_tag(m: re.Match[str]) -> str:
    """The tag with a line end instead of each space between its attributes but the
    first (so ``<p class="x"`` and ``<html lang="en"`` read as before). A tag with Jinja
    outside its quoted values is left alone."""
    tokens = _TAG_TOKEN.findall(m.group(0))
    if any("{" in t for t in tokens if t[0] not in "\"'"):
        return m.group(0)
    for i, t in enumerate(tokens):
        if i > 1 and t.isspace():
            tokens[i] = "\n"
    return "".join(tokens)


def email_ready(html: str) -> str:
    """Style attributes minified, long lines broken inside tags (see the module's
    docstring): the same page, fewer bytes, short lines. A line starting with "." (MJML's
    ``.mj-outlook-group-fix`` rule) gets a space before it, which CSS and HTML both
    ignore: SMTP clients must double such a dot, and aiosmtplib does it with a regex over
    the whole message (a tenth of a millisecond for each one; none without such a line)."""
    html = _STYLE_ATTR.sub(_minified, html)
    return "\n".join(" " + line if line.startswith(".") else
                     _START_TAG.sub(_fold_tag, line) if len(line) > FOLD_AT else line
                     for line in html.split("\n"))


def raw_text_is_plain(html: str) -> bool:
    """True when every <style> and <script> holds ASCII and no Jinja: character
    references there would be shown as they are, not decoded."""
    return all(body.isascii() and "{{" not in body and "{%" not in body
               for _, body in _RAW_TEXT.findall(html))


def ascii_outside_jinja(html: str) -> str:
    """Non-ASCII characters of the template's own text as character references (the
    same page), Jinja expressions and statements left as they are: most emails then
    come out of Jinja as pure ASCII, which goes into a 7-bit part as it is."""
    parts = _JINJA.split(html)
    return "".join(part if i % 2 else part.encode("ascii", "xmlcharrefreplace").decode()
                   for i, part in enumerate(parts))


def printing_escaped(template: jinja2.Template) -> jinja2.Template:
    """``template`` printing each value through ``escaped`` instead of Jinja's
    ``escape``: the same text, as plain strings. Jinja's autoescape wraps every printed
    value in ``escape``, which makes a Markup copy of it (a Python-level constructor,
    about twenty a digest), only for the copy to be joined into the page at once. The
    generated code reads ``escape`` from the template's own namespace, at output
    positions only (``jinja2.compiler``), so replacing it there changes nothing else."""
    if template.environment.autoescape:
        template.root_render_func.__globals__["escape"] = escaped
    return template


def _read(directory: Path, name: str) -> str:
    try:
        return (directory / name).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TemplateError(f"{directory / name}: template not found") from None


_GLOBALS: weakref.WeakKeyDictionary[jinja2.Template, dict[str, Any]] = (
    weakref.WeakKeyDictionary())


def render_or_raise(template: jinja2.Template, name: str, context: dict[str, object]) -> str:
    """Render, turning Jinja runtime errors into a TemplateError naming the template.

    What ``Template.render`` does, but the template's globals (``range``, ``dict``, …)
    are copied into the variables from a plain dict made once, not read from Jinja's
    ChainMap on every call (a tenth of a small template's time); the context is given
    that dict as its globals too, whose names it lists on creation (a ChainMap walked
    there cost about 1 µs a template, half of making the context)."""
    try:
        found = _GLOBALS.get(template)
        if found is None:
            found = _GLOBALS[template] = dict(template.globals)
        env = template.environment
        try:
            ctx = new_context(env, template.name, template.blocks, {**found, **context},
                              True, found)
            return env.concat(template.root_render_func(ctx))
        except Exception:
            env.handle_exception()  # Jinja's own: template line numbers, TemplateError
    except jinja2.TemplateError as exc:
        line = ""
        tb = exc.__traceback__
        while tb is not None:
            if tb.tb_frame.f_code.co_filename == "<template>":
                line = f":{tb.tb_lineno}"
            tb = tb.tb_next
        raise TemplateError(f"{name}{line}: {exc}") from None
