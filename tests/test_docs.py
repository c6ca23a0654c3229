"""The README and docs/ name only things that exist: every repository path they write,
every file they link to, and every `newsletter` command the README shows."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from .conftest import ROOT

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# A repository path: one of the top-level folders, not inside a longer path or URL
# (/var/lib/newsletter/config.toml and .../5432/newsletter are not ours).
PATH = re.compile(r"(?<![\w./@:+~-])((?:newsletter|docs|deploy|templates|bench|tests)"
                  r"/[\w./*@-]*)")
LINK = re.compile(r"\]\(([^)\s]+)\)")
FENCE = re.compile(r"(?ms)^```[^\n]*\n(.*?)^```")
SPAN = re.compile(r"`([^`\n]+)`")
# `newsletter` where a shell would run it: at the start of a code span or line, after a
# shell operator, or as .../bin/newsletter.
COMMAND = re.compile(r"(?:^|&&|\|\||[;|(]|\bbin/)\s*newsletter[ \t]+([a-z][a-z-]*)"
                     r"(?:[ \t]+([a-z][a-z-]*))?", re.M)


def code_of(text: str) -> list[str]:
    """The code in a Markdown text: fenced blocks' lines and inline code spans."""
    chunks = [line for block in FENCE.findall(text) for line in block.splitlines()]
    prose = FENCE.sub("", text)
    return chunks + SPAN.findall(prose)


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_repository_path_named_exists(doc: Path) -> None:
    missing = []
    for raw in PATH.findall(doc.read_text(encoding="utf-8")):
        path = raw.rstrip(".,:;")
        if "*" in path:
            if not list(ROOT.glob(path)):
                missing.append(path)
        elif not (ROOT / path).exists():
            missing.append(path)
    assert not missing, f"{doc.name} names paths that do not exist: {missing}"


def anchors(doc: Path) -> set[str]:
    """The heading anchors GitHub makes for a Markdown file."""
    out = set()
    for heading in re.findall(r"(?m)^#+ (.+)$", FENCE.sub("", doc.read_text(encoding="utf-8"))):
        out.add(re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-"))
    return out


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_relative_link_resolves(doc: Path) -> None:
    missing = []
    for target in LINK.findall(doc.read_text(encoding="utf-8")):
        if re.match(r"[a-z]+:", target):
            continue
        file, _, anchor = target.partition("#")
        where = doc.parent / file if file else doc
        if not where.exists() or (anchor and where.suffix == ".md"
                                  and anchor not in anchors(where)):
            missing.append(target)
    assert not missing, f"{doc.name} links to files or headings that do not exist: {missing}"


def commands(cli, *group: str) -> set[str]:  # type: ignore[no-untyped-def]
    """Command names as `newsletter [GROUP] --help` lists them."""
    result = cli(*group, "--help")
    assert result.code == 0, result.stderr
    listing = result.stdout.split("Commands:", 1)[1]
    return set(re.findall(r"(?m)^  ([a-z][a-z-]*)\s", listing))


def test_every_command_the_docs_show_exists(cli) -> None:  # type: ignore[no-untyped-def]
    top = commands(cli)
    groups: dict[str, set[str]] = {}
    named: set[tuple[str, str | None]] = set()
    for doc in DOCS:
        for chunk in code_of(doc.read_text(encoding="utf-8")):
            named |= {(m.group(1), m.group(2)) for m in COMMAND.finditer(chunk)}
    readme = {(m.group(1)) for chunk in code_of(DOCS[0].read_text(encoding="utf-8"))
              for m in COMMAND.finditer(chunk)}
    assert {"demo", "init", "send", "check", "web"} <= readme  # the pattern finds them
    unknown = []
    for name, sub in sorted(named, key=str):
        if name not in top:
            unknown.append(f"newsletter {name}")
            continue
        if sub is not None and name not in groups:
            probe = cli(name, "--help")
            groups[name] = commands(cli, name) if "Commands:" in probe.stdout else set()
        if sub is not None and groups.get(name) and sub not in groups[name]:
            unknown.append(f"newsletter {name} {sub}")
    assert not unknown, f"the docs show commands that `newsletter --help` does not: {unknown}"
