"""Per-paper blocks rendered once per paper, then filled in for each subscriber.

Most of an email is its papers, and most of a paper's block is the same for everyone
who gets that paper: title, links, authors, date. A block the template marks with
``{# paper-block #}`` … ``{# /paper-block #}`` (``partials/paper.html``, the paper
section of ``digest.txt``; inside a loop over the papers, as ``p``) becomes a template
of its own, and the digest prints ``p.blocks[n]`` in its place (autoescape off: the
block's values are escaped when it is filled in). Each block is
rendered once per paper (and per truth value of what it tests) with stand-ins for
what differs between subscribers (the excerpt and its highlights, the explanation,
the author line, the vote links), cut at the stand-ins into fixed pieces, and for
each subscriber the pieces are joined with that subscriber's values, escaped as Jinja
would escape them, by a function generated once per shape (attribute reads and one
join, where Jinja calls a dozen helpers per paper).

That gives the same text as rendering the block inline only if the block does
nothing with those values but print them as they are (``{{ p.why }}``) or test them
for truth (``{% if p.why %}``). ``split_blocks`` checks that on Jinja's syntax tree
and leaves any other block inline (a filter on ``p.why``, a comparison, the outer
loop's ``loop``, any variable but ``p`` and ``feedback``). Tests render subscribers
both ways and compare the bytes.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from typing import Any

import jinja2
import jinja2.meta
from jinja2 import nodes
from markupsafe import Markup, escape

from newsletter.render.bytecode import from_source

# PaperView attributes that differ between subscribers for the same paper; the rest
# follow from the paper.
PER_SUBSCRIBER = frozenset({"excerpt", "excerpt_text", "authors", "authors_text", "why",
                            "matched", "group"})
VOTES = ("more", "less")
BLOCK_CACHE = 20_000  # filled-in shapes kept per edition (a few KB each); then cleared
_BLOCK = re.compile(r"\{# paper-block #\}(.*?)\{# /paper-block #\}", re.S)

Dep = tuple[str, ...]  # ("p", attribute) | ("feedback",) | ("feedback", "item" | "more" | "less")


class _Ineligible(Exception):
    pass


@dataclass(frozen=True)
class BlockPlan:
    """One split-off block: its template, what it prints (stand-ins put in later) and
    what it tests for truth (the cached pieces are kept per combination)."""

    template: jinja2.Template
    printed: tuple[Dep, ...]
    tested: tuple[Dep, ...]
    escaped: bool  # HTML (values escaped as Jinja's autoescape would) or plain text


def split_blocks(env: jinja2.Environment, source: str, first: int = 0) -> tuple[
        str, list[BlockPlan]]:
    """``source`` with each eligible marked block replaced by a ``paper_block`` call
    (numbered from ``first``), and the plans of those blocks."""
    plans: list[BlockPlan] = []
    seen: dict[str, int] = {}  # the same block twice (papers, trending) is one plan

    def split(m: re.Match[str]) -> str:
        body = m.group(1)
        if body not in seen:
            try:
                printed, tested = _analyse(env.parse(body))
            except _Ineligible:
                return m.group(0)
            plans.append(BlockPlan(from_source(env, body), tuple(sorted(printed)),
                                   tuple(sorted(tested)), escaped=bool(env.autoescape)))
            seen[body] = first + len(plans) - 1
        call = "{{ p.blocks[" + str(seen[body]) + "] }}"
        if not env.autoescape:
            return call
        # printed as it is (it is HTML already): no escape() call, no Markup copy
        return "{% autoescape false %}" + call + "{% endautoescape %}"

    return _BLOCK.sub(split, source), plans


def _dep(node: nodes.Node) -> Dep | None:
    """The per-subscriber value ``node`` reads, if it is one of the known shapes."""
    if isinstance(node, nodes.Name) and node.name == "feedback":
        return ("feedback",)
    if isinstance(node, nodes.Getattr):
        if _is_p(node.node):
            return ("p", node.attr) if node.attr in PER_SUBSCRIBER else None
        if _is_item(node.node) and node.attr in VOTES:
            return ("feedback", node.attr)
    if _is_item(node):
        return ("feedback", "item")
    return None


def _is_p(node: nodes.Node) -> bool:
    return isinstance(node, nodes.Name) and node.name == "p"


def _is_item(node: nodes.Node) -> bool:
    """``feedback[p.id]``."""
    return (isinstance(node, nodes.Getitem) and isinstance(node.node, nodes.Name)
            and node.node.name == "feedback" and isinstance(node.arg, nodes.Getattr)
            and _is_p(node.arg.node) and node.arg.attr == "id")


def _analyse(tree: nodes.Template) -> tuple[set[Dep], set[Dep]]:
    """(printed, tested) per-subscriber values of an eligible block; raises
    ``_Ineligible`` for any other use of them."""
    if not jinja2.meta.find_undeclared_variables(tree) <= {"p", "feedback"}:
        raise _Ineligible
    printed: set[Dep] = set()
    tested: set[Dep] = set()

    def visit(node: nodes.Node, parents: list[nodes.Node]) -> None:
        dep = _dep(node)
        if dep is not None:
            _use(node, parents, dep, printed, tested)
            return
        if isinstance(node, nodes.Getattr) and _is_p(node.node):
            return  # a per-paper attribute: anything may be done with it
        if _is_p(node) or (isinstance(node, nodes.Name) and node.name == "feedback"):
            raise _Ineligible  # handed on whole (a filter, a call, a loop)
        for child in node.iter_child_nodes():
            visit(child, [*parents, node])

    visit(tree, [])
    return printed, tested


def _use(node: nodes.Node, parents: list[nodes.Node], dep: Dep, printed: set[Dep],
         tested: set[Dep]) -> None:
    if parents and isinstance(parents[-1], nodes.Output) and (
            dep[0] == "p" or dep[-1] in VOTES):
        printed.add(dep)
        return
    child = node
    for parent in reversed(parents):
        if isinstance(parent, (nodes.And, nodes.Or, nodes.Not)):
            child = parent
            continue
        if isinstance(parent, nodes.If) and parent.test is child:
            tested.add(dep)
            return
        break
    raise _Ineligible


class _Slot(Markup):
    """A stand-in for a printed value: its text marks the place, its truth is the real
    value's (so ``{% if p.why %}{{ p.why }}{% endif %}`` takes the same branch)."""

    truth = True

    def __bool__(self) -> bool:
        return self.truth


class _StandIn:
    """The paper as the block sees it while its pieces are made: the real per-paper
    attributes, stand-ins for the per-subscriber ones."""

    def __init__(self, p: Any, replaced: dict[str, Any]) -> None:
        self._p, self._replaced = p, replaced

    def __getattr__(self, name: str) -> Any:
        if name in self._replaced:
            return self._replaced[name]
        return getattr(self._p, name)


def _read(dep: Dep) -> str:
    """Python reading ``dep`` from ``p``, ``fb`` (the feedback dict) and ``item``
    (``fb.get(p.id)``). Names come from PER_SUBSCRIBER and VOTES only."""
    if dep[0] == "p":
        assert dep[1] in PER_SUBSCRIBER
        return f"p.{dep[1]}"
    if len(dep) == 1:
        return "fb"
    if dep[1] == "item":
        return "item"
    assert dep[1] in VOTES
    return f"item[{dep[1]!r}]"


def escaped(v: Any) -> str:
    """What Jinja's autoescape prints for ``v``: Markup as it is, text escaped (text
    with nothing to escape, such as most URLs, as it is without a Markup copy)."""
    if type(v) is Markup:  # type(), not __class__: a proxy reports its target's
        return v
    if type(v) is str and not ("&" in v or "<" in v or ">" in v or '"' in v or "'" in v):
        return v
    return str(escape(v))


def _compile(source: str, name: str) -> Any:
    namespace: dict[str, Any] = {"escaped": escaped, "Markup": Markup}
    exec(compile(source, f"<paper block {name}>", "exec"), namespace)  # noqa: S102
    return namespace[name]


class BlockFiller:
    """The filled-in blocks of one edition: per block a function of the paper view,
    the feedback dict and this paper's entry in it (generated once: plain attribute
    reads and one join, where Jinja would call a dozen helpers), the pieces cached per
    (block, paper, truth values)."""

    def __init__(self, plans: tuple[BlockPlan, ...], *, ascii_html: bool = False) -> None:
        """``ascii_html``: the HTML blocks' fixed pieces with their non-ASCII characters
        as character references (the same page), made once per paper, so most emails
        come out ASCII and their 7-bit HTML part needs no encoding step; only where the
        template allows it (``Compiled.html_7bit``: none in a <style> or <script>)."""
        self.plans = plans
        self.ascii_html = ascii_html
        self._pieces: dict[tuple[Any, ...], tuple[tuple[str, ...], Any] | None] = {}
        self._joins: dict[tuple[bool, tuple[Dep, ...]], Any] = {}
        self._mark = f"\x00{secrets.token_hex(4)}:"  # no real text holds it by chance
        self.fills = [self._fill_function(n, plan) for n, plan in enumerate(plans)]

    def fill(self, p: Any, feedback: dict[str, dict[str, str]]) -> list[str]:
        """Every block for paper view ``p`` (for ``p.blocks``): text to print as it is
        (the digest prints it with autoescape off; HTML blocks are escaped inside)."""
        item = feedback.get(p.fixed.id) if feedback else None
        return [f(p, feedback, item) for f in self.fills]

    def _fill_function(self, n: int, plan: BlockPlan) -> Any:
        truths = "".join(f"bool({_read(d)}), " for d in plan.tested)
        source = (
            "def fill(p, fb, item):\n"
            f"    key = ({n}, p.fixed, {truths})\n"
            "    hit = pieces.get(key, miss)\n"
            "    if hit is miss:\n"
            "        hit = make(key, p, fb)\n"
            "    if hit is None:\n"
            "        return whole(p, fb)\n"
            "    return hit[1](hit[0], p, fb, item)\n")
        namespace: dict[str, Any] = {
            "pieces": self._pieces, "miss": object(),
            "make": lambda key, p, fb: self._make(plan, key, p, fb),
            "whole": lambda p, fb: plan.template.render(p=p, feedback=fb)}
        exec(compile(source, f"<paper block {n}>", "exec"), namespace)  # noqa: S102
        return namespace["fill"]

    def _join_function(self, escaped: bool, order: tuple[Dep, ...]) -> Any:
        """``join(pieces, p, fb, item)``: the pieces with the values in ``order``
        between them, escaped as Jinja's autoescape would (Markup as it is)."""
        hit = self._joins.get((escaped, order))
        if hit is None:
            parts = ["pieces[0]"]
            for i, dep in enumerate(order, 1):
                v = _read(dep)
                parts.append(f"escaped({v})" if escaped else f"str({v})")
                parts.append(f"pieces[{i}]")
            source = (f"def join(pieces, p, fb, item):\n"
                      f"    return ''.join(({', '.join(parts)},))\n")
            hit = self._joins[(escaped, order)] = _compile(source, "join")
        return hit

    def _make(self, plan: BlockPlan, key: tuple[Any, ...], p: Any,
              fb: dict[str, dict[str, str]]) -> tuple[tuple[str, ...], Any] | None:
        """Render the block with stand-ins, cut it at them, and keep the pieces (None:
        a stand-in did not come through as it went in, so this block is rendered whole
        every time)."""
        truths = dict(zip(plan.tested, key[2:], strict=True))
        slots = {dep: i for i, dep in enumerate(plan.printed)}

        def stand(dep: Dep) -> Any:
            if dep in slots:
                s = _Slot(f"{self._mark}{slots[dep]}\x00")
                s.truth = truths.get(dep, True)
                return s
            return truths[dep]

        replaced = {d[1]: stand(d) for d in (*plan.printed, *plan.tested) if d[0] == "p"}
        votes = {v: stand(("feedback", v)) for v in VOTES if ("feedback", v) in slots}
        item = votes if truths.get(("feedback", "item"), True) else {}
        feedback = {p.id: item} if truths.get(("feedback",), True) else {}
        text = plan.template.render(p=_StandIn(p, replaced), feedback=feedback)
        parts = re.split(re.escape(self._mark) + r"(\d+)\x00", text)
        pieces = tuple(parts[0::2])
        if plan.escaped and self.ascii_html:
            pieces = tuple(x if x.isascii() else x.encode("ascii", "xmlcharrefreplace").decode()
                           for x in pieces)
        made: tuple[tuple[str, ...], Any] | None = None
        if not any(self._mark[:-1] in piece for piece in pieces):
            order = tuple(plan.printed[int(i)] for i in parts[1::2])
            made = (pieces, self._join_function(plan.escaped, order))
        if len(self._pieces) >= BLOCK_CACHE:
            self._pieces.clear()
        self._pieces[key] = made
        return made
