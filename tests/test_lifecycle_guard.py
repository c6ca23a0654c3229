"""``store/lifecycle.py`` is the only code that changes a subscriber's status or profile.

Every change there records an event naming who asked (``cli``, ``web``,
``admin:<name>``, ``bounce``, ``webhook:<provider>``) and applies the rules once
(which states a change may leave from, that a stop is only undone by the person).
A change written anywhere else skips both, one convenient line at a time, so this
test reads the package's source (``ast``, importing nothing) and fails on:

* an assignment (``=``, ``+=``, tuple targets, ``setattr``) to a guarded attribute of
  something that is a ``Subscriber`` in that function: a parameter annotated so, or a
  name bound from an expression naming ``Subscriber`` (``s.get(Subscriber, id)``,
  ``s.scalar(select(Subscriber)...)``, a loop over them), or named ``sub``/``subscriber``;
* ``update(Subscriber)`` (or of its table) and SQL text that updates ``subscribers``.

Creating a subscriber (``Subscriber(...)``, the import's ``insert``) is not a change.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "newsletter"
LIFECYCLE = PACKAGE / "store" / "lifecycle.py"
GUARDED = frozenset({"status", "keywords", "name", "tz", "send_hour", "bounce_count",
                     "consent_at", "consent_source"})
SUBSCRIBER_NAMES = frozenset({"sub", "subscriber"})
SQL_UPDATE = re.compile(r"\bupdate\s+subscribers\b", re.IGNORECASE)


def _names_subscriber(node: ast.AST | None) -> bool:
    """Whether an expression or annotation mentions the ``Subscriber`` model (not
    ``SubscriberStatus``)."""
    if node is None:
        return False
    for n in ast.walk(node):
        if isinstance(n, ast.Name) and n.id == "Subscriber":
            return True
        if isinstance(n, ast.Attribute) and n.attr == "Subscriber":
            return True
        if isinstance(n, ast.Constant) and isinstance(n.value, str) and re.search(
                r"\bSubscriber\b", n.value):
            return True
    return False


def _target_names(target: ast.AST) -> Iterator[str]:
    for n in ast.walk(target):
        if isinstance(n, ast.Name):
            yield n.id


def _binds_subscriber(node: ast.AST) -> bool:
    """An annotated assignment or a loop whose target is a subscriber."""
    if isinstance(node, ast.AnnAssign):
        return _names_subscriber(node.annotation) or _names_subscriber(node.value)
    if isinstance(node, ast.For | ast.AsyncFor | ast.comprehension):
        return _names_subscriber(node.iter)
    return False


def _subscriber_names(func: ast.AST) -> set[str]:
    """The names a function binds to subscribers (parameters, assignments, loops)."""
    names = set(SUBSCRIBER_NAMES)
    if isinstance(func, ast.FunctionDef | ast.AsyncFunctionDef):
        args = func.args
        for arg in (*args.posonlyargs, *args.args, *args.kwonlyargs):
            if _names_subscriber(arg.annotation):
                names.add(arg.arg)
    for node in ast.walk(func):
        if isinstance(node, ast.Assign) and _names_subscriber(node.value):
            for t in node.targets:
                names.update(_target_names(t))
        elif _binds_subscriber(node):
            names.update(_target_names(node.target))  # type: ignore[attr-defined]
    return names


def _assigned_attributes(node: ast.AST) -> Iterator[ast.Attribute]:
    targets: list[ast.AST] = []
    if isinstance(node, ast.Assign):
        targets = list(node.targets)
    elif isinstance(node, ast.AugAssign | ast.AnnAssign):
        targets = [node.target]
    for t in targets:
        for n in ast.walk(t):
            if isinstance(n, ast.Attribute) and isinstance(n.ctx, ast.Store):
                yield n


def _base_name(node: ast.AST) -> str | None:
    return node.id if isinstance(node, ast.Name) else None


def violations(source: str, where: str) -> list[str]:
    """Every change of a subscriber's status or profile written in ``source``."""
    tree = ast.parse(source)
    found: list[str] = []
    scopes = [n for n in ast.walk(tree)
              if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)]
    for scope in [tree, *scopes]:
        names = _subscriber_names(scope)
        for node in ast.walk(scope):
            for attr in _assigned_attributes(node):
                if attr.attr in GUARDED and _base_name(attr.value) in names:
                    found.append(f"{where}:{attr.lineno}: assigns {ast.unparse(attr)}")
            if isinstance(node, ast.Call):
                func = node.func
                fname = func.id if isinstance(func, ast.Name) else (
                    func.attr if isinstance(func, ast.Attribute) else "")
                if fname == "setattr" and node.args and _base_name(node.args[0]) in names:
                    found.append(f"{where}:{node.lineno}: setattr on {ast.unparse(node.args[0])}")
                if fname == "update" and node.args and (
                        _names_subscriber(node.args[0])
                        or "SUBSCRIBERS" in ast.unparse(node.args[0])):
                    found.append(f"{where}:{node.lineno}: {ast.unparse(node)[:60]}")
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and \
                    SQL_UPDATE.search(node.value):
                found.append(f"{where}:{node.lineno}: SQL updating subscribers")
    return sorted(set(found))


def package_sources() -> Iterator[tuple[Path, str]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        if path == LIFECYCLE or "migrations" in path.parts:
            continue
        yield path, path.read_text(encoding="utf-8")


def test_only_the_lifecycle_changes_a_subscriber() -> None:
    found = [v for path, source in package_sources()
             for v in violations(source, str(path.relative_to(ROOT)))]
    assert not found, ("change subscribers through newsletter/store/lifecycle.py "
                       "(it records who did it):\n" + "\n".join(found))


def test_the_guard_sees_each_way_of_writing_a_change() -> None:
    """Not vacuous: each form of a change is caught, creation and other models are not,
    and the lifecycle itself (the one allowed place) is full of them."""
    caught = violations('''
def a(s, sub_id):
    found = s.get(Subscriber, sub_id)
    found.status = "active"
def b(person: Subscriber | None):
    person.keywords, person.tz = "x", "UTC"
def c(s):
    for x in s.scalars(select(Subscriber)):
        x.bounce_count += 1
def d(s, sub, values):
    for k, v in values.items():
        setattr(sub, k, v)
def e(s):
    s.execute(update(Subscriber).values(status="bounced"))
def f(s):
    s.execute(text("UPDATE subscribers SET status = 'paused'"))
def g(subscriber):
    subscriber.name = "x"
''', "snippet")
    assert {int(line.split(":")[1]) for line in caught} == {4, 6, 9, 12, 14, 16, 18}, caught
    assert violations('''
def ok(s, row, delivery):
    row = s.get(Entry, "x")
    row.keywords = ["a"]
    delivery.status = "sent"
    s.add(Subscriber(email="a@example.org", status="active"))
    s.execute(insert(Subscriber), [{"status": "active"}])
    s.execute(update(Delivery).values(status="sent"))
''', "snippet") == []
    assert len(violations(LIFECYCLE.read_text(encoding="utf-8"), "lifecycle")) >= 8
