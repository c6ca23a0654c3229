"""axe-core (shipped inside axe-playwright-python) run in a Playwright page, for any
test that wants to hold a page to WCAG: the emails here, the web pages elsewhere.

``blocking(page)`` returns the serious and critical violations as readable lines
(rule, impact, first offending nodes), so an assertion failure says what to fix.
"""

from __future__ import annotations

from typing import Any

BLOCKING = ("serious", "critical")


def violations(page: Any, impacts: tuple[str, ...] = BLOCKING) -> list[dict[str, Any]]:
    """axe-core's violations on the page as loaded, those of the given impacts."""
    from axe_playwright_python.sync_playwright import Axe

    results = Axe().run(page)
    return [v for v in results.response["violations"] if v.get("impact") in impacts]


def describe(found: list[dict[str, Any]]) -> list[str]:
    lines = []
    for v in found:
        nodes = v.get("nodes", [])
        where = "; ".join(
            f"{n.get('target')} {n.get('failureSummary', '').splitlines()[-1].strip()}"
            for n in nodes[:3])
        lines.append(f"{v['id']} ({v['impact']}, {len(nodes)} nodes): {v['help']}: {where}")
    return lines


def blocking(page: Any) -> list[str]:
    """Serious and critical violations, one readable line each (empty when clean)."""
    return describe(violations(page))
