"""The package's stages import downwards only, and no modules import each other in a circle.

The flow is ingest → store → ranking → render → transports, with the application
layer (``newsletter/service/``), delivery, the web and the CLI above it. A lower stage
that imports a higher one cannot be used or tested without it, and a circle means
two modules that can only be understood together; both creep in one convenient
function-level import at a time, so this test reads every import statement of the
package (``ast``, without importing anything) and holds the rules:

* no module under store/, ingest/, ranking/, render/, transports/ imports delivery/,
  web/, service/ or the CLI (module-level and function-level imports alike);
* store/ imports nothing from ingest/, ranking/, render/, transports/;
* ingest/, ranking/ and render/ import nothing from store/: ingest produces
  normalized papers and the store keeps them, ranking and render take rows and keys
  as arguments; the application layer (``newsletter/service/``) queries and writes;
* a migration imports no ``newsletter`` module outside store/ (it carries a frozen
  copy of any helper, so it cannot change when live code does);
* no import circle among modules. Every import counts here, module-level,
  ``if TYPE_CHECKING:`` and function-level alike: a circle through a function-level
  import is still two modules that need each other.

The lower stages' rules hold with no exception. Where a rule fails only in the
areas above (delivery/, web/, service/, the CLI), the case is listed in
``ALLOWED_CIRCLES`` and printed, so it can be removed when it is fixed; an entry that
no longer occurs fails the test, so the list only shrinks.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "newsletter"

LOWER = ("store", "ingest", "ranking", "render", "transports", "bounces")
HIGHER = ("delivery", "web", "service", "cli")

# Circles owned by the layers above, to be broken there (each a sorted tuple of the
# modules on the circle). Lower-stage modules never appear here.
ALLOWED_CIRCLES: set[tuple[str, ...]] = set()


@dataclass(frozen=True)
class Import:
    source: str  # the importing module, e.g. "newsletter.ranking.view"
    target: str  # the imported module, e.g. "newsletter.store.votes"
    line: int
    in_function: bool

    def __str__(self) -> str:
        where = "function-level" if self.in_function else "module-level"
        path = self.source.replace(".", "/")
        return f"{path}.py:{self.line}: {where} import of {self.target}"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _resolve(source: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = source.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _targets(source: str, is_package: bool, node: ast.Import | ast.ImportFrom) -> Iterator[str]:
    """The package's modules an import statement loads (``from a import b`` loads
    ``a.b`` when that is a module, else ``a``)."""
    if isinstance(node, ast.Import):
        for alias in node.names:
            yield alias.name
        return
    base = _resolve(source, is_package, node)
    for alias in node.names:
        full = f"{base}.{alias.name}"
        yield full if full in MODULES else base


def imports_of(name: str) -> list[Import]:
    path = MODULES[name]
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    out: list[Import] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import | ast.ImportFrom):
                for target in _targets(name, path.name == "__init__.py", child):
                    if target == "newsletter" or target.startswith("newsletter."):
                        out.append(Import(name, target, child.lineno, in_function))
            inner = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef
                                               | ast.Lambda)
            visit(child, inner)

    visit(tree, False)
    return out


ALL_IMPORTS = list(dict.fromkeys(imp for name in MODULES for imp in imports_of(name)))


def _stage(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _in(module: str, stages: tuple[str, ...]) -> bool:
    return _stage(module) in stages


def test_the_walk_sees_the_package() -> None:
    """The rules below are only as good as the walk: it finds the package's modules and
    both kinds of import (a regression here would make every other test vacuous)."""
    assert "newsletter.store.models" in MODULES and "newsletter.cli" in MODULES
    assert any(i.in_function for i in ALL_IMPORTS)
    assert any(i.source == "newsletter.cli" and i.target == "newsletter.app"
               for i in ALL_IMPORTS)
    assert all(i.target in MODULES for i in ALL_IMPORTS), sorted(
        {str(i) for i in ALL_IMPORTS if i.target not in MODULES})


def test_lower_stages_never_import_the_layers_above() -> None:
    bad = [str(i) for i in ALL_IMPORTS if _in(i.source, LOWER) and _in(i.target, HIGHER)]
    assert not bad, "a lower stage imports a higher one:\n" + "\n".join(bad)


def test_store_imports_no_other_stage() -> None:
    bad = [str(i) for i in ALL_IMPORTS
           if _in(i.source, ("store",)) and _in(i.target, LOWER[1:])]
    assert not bad, "store/ imports another stage:\n" + "\n".join(bad)


def test_ingest_ranking_and_render_never_touch_the_store() -> None:
    bad = [str(i) for i in ALL_IMPORTS
           if _in(i.source, ("ingest", "ranking", "render")) and _in(i.target, ("store",))]
    assert not bad, "ingest/ranking/render import store/:\n" + "\n".join(bad)


def test_migrations_import_nothing_outside_store() -> None:
    migrations = [i for i in ALL_IMPORTS if i.source.startswith("newsletter.store.migrations")]
    assert any(i.source.endswith(".env") for i in migrations)  # the walk reaches them
    bad = [str(i) for i in migrations if not _in(i.target, ("store",))]
    assert not bad, "a migration imports live code outside store/:\n" + "\n".join(bad)


def circles(imports: list[Import]) -> list[tuple[str, ...]]:
    """Strongly connected components of two or more modules (Tarjan), each sorted."""
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for i in imports:
        if i.target != i.source:
            graph[i.source].add(i.target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[tuple[str, ...]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(tuple(sorted(component)))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return sorted(found)


def test_circles_are_found() -> None:
    """The circle finder itself, on a made-up graph: a→b→c→a and d→e→d, f alone."""
    made_up = [Import(a, b, 1, False) for a, b in
               [("newsletter.cli", "newsletter.config"), ("newsletter.config", "newsletter.app"),
                ("newsletter.app", "newsletter.cli"), ("newsletter.urls", "newsletter.errors"),
                ("newsletter.errors", "newsletter.urls"), ("newsletter.retry", "newsletter.urls")]]
    assert circles(made_up) == [("newsletter.app", "newsletter.cli", "newsletter.config"),
                                ("newsletter.errors", "newsletter.urls")]


def test_no_import_circles() -> None:
    found = circles(ALL_IMPORTS)
    lower = [c for c in found if any(_in(m, LOWER) for m in c)]
    assert not lower, "import circles through a lower stage:\n" + "\n".join(
        " <-> ".join(c) for c in lower)
    if ALLOWED_CIRCLES:
        print("\nallowed import circles (to be broken by the layers above):")
        for c in sorted(ALLOWED_CIRCLES):
            print("  " + " <-> ".join(c))
    unexpected = [c for c in found if c not in ALLOWED_CIRCLES]
    assert not unexpected, "import circles:\n" + "\n".join(" <-> ".join(c) for c in unexpected)
    gone = sorted(ALLOWED_CIRCLES - set(found))
    assert not gone, "no longer circles, remove from ALLOWED_CIRCLES: " + repr(gone)
