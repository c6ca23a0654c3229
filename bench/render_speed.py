"""Personalized emails per second: render + MIME build + serialization to bytes.

    python bench/render_speed.py [--subscribers 10000] [--naive-sample 300] [--diverse]

Ours: templates compiled and CSS-inlined once, per subscriber only Jinja runs and
the MIME skeleton is filled in. The naive way, per subscriber: Jinja over the
MJML source, MJML compile, CSS inlining, then ``EmailMessage.as_bytes()``. Both
make the same emails from the same picks (10 of 200 papers, different for
everyone). Also: the CSS inliners side by side on the compiled template.
"""

from __future__ import annotations

import argparse
import datetime as dt
import email
import email.policy
import random
import statistics
import sys
import time
from email.message import EmailMessage
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import css_inline  # noqa: E402
import jinja2  # noqa: E402
import mjml  # noqa: E402

from bench.common import sample_papers, synthetic_profiles  # noqa: E402
from newsletter.config import Settings  # noqa: E402
from newsletter.ranking.engine import Corpus, RankEntry, Ranker  # noqa: E402
from newsletter.ranking.text import Acronyms  # noqa: E402
from newsletter.render.compile import BUNDLED, _expand  # noqa: E402
from newsletter.render.digest import PaperInfo, group_papers, summary_line  # noqa: E402
from newsletter.render.renderer import Recipient, Renderer  # noqa: E402

DAY = dt.date(2025, 12, 26)
PROFILE = "attention, diffusion, graph neural networks, vision transformer"


def setup(n_papers: int = 200):  # type: ignore[no-untyped-def]
    rows = [SimpleNamespace(**{**d, "published": dt.date.fromisoformat(d["published"])
                               if d["published"] else None}) for d in sample_papers()][:n_papers]
    settings = Settings()
    acronyms = Acronyms.load()
    ranker = Ranker(Corpus([RankEntry.of(r) for r in rows], acronyms, settings.ranking, DAY),
                    settings.ranking)
    papers = [PaperInfo.of(r, f"https://digest.example.org/papers/{r.id}") for r in rows]
    renderer = Renderer(settings.render, settings.sender, settings.web, keys=["bench-key"],
                        day=DAY, edition_id=1, papers=papers, acronyms=acronyms)
    return settings, ranker, renderer, len(rows)


def jobs(n: int, n_papers: int, ranker: Ranker) -> list:  # type: ignore[type-arg]
    rng = random.Random(5)
    out = []
    for i in range(n):
        picks = rng.sample(range(n_papers), 10)
        out.append((Recipient(i, f"reader{i}@example.org", f"Reader {i}", PROFILE), picks,
                    ranker.explain_many(PROFILE, picks), False))
    return out


def diverse_jobs(n: int, ranker: Ranker) -> list:  # type: ignore[type-arg]
    """Everyone with a profile of their own (the synthetic 3-8 term profiles) and the
    picks the ranker gives it: explanations and highlights differ from one subscriber
    to the next, as in a real edition, so caches shared between subscribers hit less."""
    profiles = synthetic_profiles(n, seed=11)
    out = []
    for chunk in ranker.rank(enumerate(profiles), k=10):
        for key, row, trending in zip(chunk.keys, chunk.picks, chunk.trending, strict=True):
            picks = [int(c) for c in row if c >= 0]
            explanations = ([None] * len(picks) if trending
                            else ranker.explain_many(profiles[key], picks))
            out.append((Recipient(key, f"reader{key}@example.org", f"Reader {key}",
                                  profiles[key]), picks, explanations, bool(trending)))
    return out


def ours(renderer: Renderer, work: list) -> tuple[float, list[bytes]]:  # type: ignore[type-arg]
    t = time.perf_counter()
    out = [renderer.render(r, p, e, trending).message.data for r, p, e, trending in work]
    return time.perf_counter() - t, out


def ours_cpu(renderer: Renderer, work: list) -> tuple[float, float]:  # type: ignore[type-arg]
    """Wall and CPU seconds (this process: user + sys) for rendering ``work``. On a
    shared machine the CPU time is what "per core" means: time waiting for a core
    is not counted."""
    t, c = time.perf_counter(), time.process_time()
    for r, p, e, trending in work:
        renderer.render(r, p, e, trending)
    return time.perf_counter() - t, time.process_time() - c


def naive(renderer: Renderer, work: list) -> tuple[float, list[bytes]]:  # type: ignore[type-arg]
    """Per subscriber: Jinja → MJML → inline → EmailMessage.as_bytes()."""
    source = "\n".join(text for _, text, _ in _expand(BUNDLED, "digest.mjml"))
    env = jinja2.Environment(autoescape=True)
    tpl = env.from_string(source)
    inliner = css_inline.CSSInliner(keep_style_tags=True, load_remote_stylesheets=False)
    base = renderer
    t = time.perf_counter()
    out = []
    for r, picks, exps, _ in work:
        items = [base.digest.paper(i, ex) for i, ex in zip(picks, exps, strict=True)]
        links = base.links.for_subscriber(r.id, 1)
        ctx = {"sender": base.sender, "edition": base.edition,
               "subscriber": {"email": r.email, "name": r.name, "keywords": r.keywords},
               "links": {"unsubscribe": links.unsubscribe, "preferences": links.preferences,
                         "browser": links.browser},
               "papers": items, "trending": [], "subject": "Your papers",
               "preheader": "Your papers", "groups": group_papers(items),
               "summary": summary_line(items, []),
               "feedback": {p.id: base.links.votes(r.id, p.id) for p in items}}
        html = inliner.inline(mjml.mjml2html(tpl.render(ctx), fonts={}))
        for p in items:  # the compiled text template prints each paper's filled-in block
            p.blocks = base.blocks.fill(p, ctx["feedback"])
        text = base.compiled.text.render(ctx)
        msg = EmailMessage()
        msg["From"] = "Research Digest <digest@localhost>"
        msg["To"] = r.email
        msg["Subject"] = "Your papers"
        msg["List-Unsubscribe"] = f"<{links.unsubscribe}>"
        msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
        msg.set_content(text)
        msg.add_alternative(html, subtype="html")
        out.append(msg.as_bytes(policy=email.policy.SMTP))
    return time.perf_counter() - t, out


def inliners(renderer: Renderer, rounds: int = 20) -> dict[str, float]:
    import premailer

    html = mjml.mjml2html("\n".join(t for _, t, _ in _expand(BUNDLED, "digest.mjml")), fonts={})
    results = {}
    inliner = css_inline.CSSInliner(keep_style_tags=True, load_remote_stylesheets=False)
    t = time.perf_counter()
    for _ in range(rounds):
        inliner.inline(html)
    results["css-inline"] = (time.perf_counter() - t) / rounds * 1e3
    t = time.perf_counter()
    for _ in range(rounds):
        premailer.Premailer(html, keep_style_tags=True, disable_validation=True,
                            allow_network=False, cssutils_logging_level="CRITICAL").transform()
    results["premailer"] = (time.perf_counter() - t) / rounds * 1e3
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--subscribers", type=int, default=10_000)
    ap.add_argument("--naive-sample", type=int, default=300)
    ap.add_argument("--diverse", action="store_true", help="a profile of its own for each "
                    "subscriber (default: one profile, random picks)")
    args = ap.parse_args()
    _, ranker, renderer, n_papers = setup()
    work = (diverse_jobs(args.subscribers, ranker) if args.diverse
            else jobs(args.subscribers, n_papers, ranker))
    ours(renderer, work[:50])  # warm the excerpt cache as a real edition would
    ours_s, made = ours(renderer, work)
    wall_s, cpu_s = ours_cpu(renderer, work)
    naive_s, _ = naive(renderer, work[: args.naive_sample])
    for data in random.Random(1).sample(made, 50):  # what we make is standards-correct
        msg = email.message_from_bytes(data, policy=email.policy.strict)
        assert not any(p.defects for p in msg.walk())
    ours_rate = args.subscribers / ours_s
    naive_rate = args.naive_sample / naive_s
    sizes = [len(m) for m in made]
    who = ("each with a profile of their own and its picks" if args.diverse
           else "one profile, 10 random picks each")
    print(f"{args.subscribers:,} subscribers ({who}), {n_papers} papers, one core; "
          f"message size median {statistics.median(sizes) / 1024:.0f} KB")
    print("| method | messages/s | ms/message | speed-up |")
    print("|---|---|---|---|")
    print(f"| compiled once + MIME skeleton | {ours_rate:,.0f} | {1e3 / ours_rate:.2f} | "
          f"{ours_rate / naive_rate:.0f}x |")
    print(f"| naive: Jinja → MJML → inline → EmailMessage.as_bytes() ({args.naive_sample} "
          f"timed) | {naive_rate:,.0f} | {1e3 / naive_rate:.2f} | 1x |")
    import os

    print(f"\nper core (CPU time of this process, a second pass): "
          f"{args.subscribers / cpu_s:,.0f} messages/s ({cpu_s / args.subscribers * 1e3:.3f} ms "
          f"each; wall {args.subscribers / wall_s:,.0f}/s); load average "
          f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    inl = inliners(renderer)
    print()
    print("| CSS inliner, compiled digest template | ms per run |")
    print("|---|---|")
    for name, ms in sorted(inl.items(), key=lambda x: x[1]):
        print(f"| {name} | {ms:.1f} |")


if __name__ == "__main__":
    main()
