"""The reader's side of an email across days, sent through the aiosmtpd sink on
127.0.0.1: "Featured today", the email as sent kept as a record, frequencies."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import html
from email.message import EmailMessage
from typing import Any

from sqlalchemy import select, update

from newsletter.store.db import session_scope
from newsletter.store.models import Delivery, Entry, Subscriber

from .conftest import SmtpSink
from .editions_support import run_send

ADA = "ada@example.org"


def via_sink(settings: Any, sink: SmtpSink) -> Any:
    return settings.replace(transport={"backend": "smtp", "max_attempts": 2,
                                       "backoff_seconds": 0.01},
                            smtp={"host": sink.host, "port": sink.port, "connections": 1,
                                  "timeout": 5.0})


def messages_to(sink: SmtpSink, address: str) -> list[EmailMessage]:
    return [email.message_from_bytes(raw, policy=email.policy.default)  # type: ignore[misc]
            for rcpt, raw in sink.messages if rcpt == address]


def parts(msg: EmailMessage) -> tuple[str, str]:
    body, text = msg.get_body(("html",)), msg.get_body(("plain",))
    assert body is not None and text is not None
    return html.unescape(body.get_content()), text.get_content()


def test_featured_today_is_said_where_the_source_says_so(world, smtp_sink: SmtpSink) -> None:  # type: ignore[no-untyped-def]
    settings, engine = world
    day = dt.date(2026, 3, 4)
    with session_scope(engine) as s:
        ada = s.scalars(select(Subscriber).where(Subscriber.email == ADA)).one()
        s.execute(update(Subscriber).where(Subscriber.id != ada.id).values(status="paused"))
    summary = run_send(via_sink(settings, smtp_sink), engine, day)
    assert summary.report.counts["sent"] == 1
    with session_scope(engine) as s:
        [row] = s.scalars(select(Delivery)).all()
        picks = list(row.entry_ids)
        titles = {e.id: e.title for e in s.scalars(select(Entry).where(Entry.id.in_(picks)))}
    # the same send again, on a fresh day, with the second pick featured that day
    with session_scope(engine) as s:
        s.execute(update(Entry).values(featured=None))
        s.execute(update(Entry).where(Entry.id == picks[1]).values(featured=day))
        s.execute(update(Entry).where(Entry.id == picks[2]).values(
            featured=day - dt.timedelta(days=5)))  # old news: not said
        s.query(Delivery).delete()
        from newsletter.store.models import Edition, SentEntry

        s.query(SentEntry).delete()
        s.query(Edition).delete()
    smtp_sink.messages.clear()
    assert run_send(via_sink(settings, smtp_sink), engine, day).report.counts["sent"] == 1
    [msg] = messages_to(smtp_sink, ADA)
    body, text = parts(msg)
    assert body.count("Featured today") == 1 and text.count("Featured today") == 1
    featured_block = text[text.index(titles[picks[1]][:40]):]
    assert "Featured today" in featured_block[:featured_block.index("Abstract:")]
    assert "Featured" not in text[text.index(titles[picks[2]][:40]):][:400].split("Abstract:")[0]


def test_each_email_is_dated_by_the_subscribers_own_day(world, smtp_sink: SmtpSink) -> None:  # type: ignore[no-untyped-def]
    """A slot's edition reaches people on both sides of the date line: at 17:00 UTC on
    March 4 it is 07:00 on March 5 in Kiritimati. Each email, its view in the browser
    and the archive are dated by the subscriber's own day (the row's), and "Featured
    today" is said of that day."""
    import re

    import httpx

    from newsletter.store.subscribers import add

    from .web_support import running_site

    settings, engine = world
    day = dt.date(2026, 3, 4)
    with session_scope(engine) as s:
        s.execute(update(Subscriber).values(status="paused"))
        add(s, "east@example.org", keywords="attention, diffusion", tz="Pacific/Kiritimati",
            hour=7)
        add(s, "west@example.org", keywords="attention, diffusion", tz="UTC", hour=17)
        s.execute(update(Entry).values(featured=day))
    with running_site(settings, engine) as site:
        summary = run_send(via_sink(site.settings, smtp_sink), engine, day, slot="17")
        assert summary.report.counts["sent"] == 2, summary.report.errors
        with session_scope(engine, readonly=True) as s:
            days = dict(s.execute(select(Subscriber.email, Delivery.day).select_from(Delivery)
                                  .join(Subscriber)).all())
            east_id = s.scalars(select(Subscriber.id)
                                .where(Subscriber.email == "east@example.org")).one()
        assert days == {"east@example.org": day + dt.timedelta(days=1),
                        "west@example.org": day}
        for who, dated, featured in (("east", "Thursday, March 5, 2026", "Featured yesterday"),
                                     ("west", "Wednesday, March 4, 2026", "Featured today")):
            [msg] = messages_to(smtp_sink, f"{who}@example.org")
            body, text = parts(msg)
            assert text.splitlines()[0].endswith(f" - {dated}"), text[:200]
            assert dated in body and featured in body and featured in text
            other = "Featured today" if featured != "Featured today" else "Featured yesterday"
            assert other not in body and other not in text
        [east] = messages_to(smtp_sink, "east@example.org")
        view = re.search(r"View in browser: (\S+)", parts(east)[1])
        assert view
        page = html.unescape(httpx.get(view.group(1), timeout=60).text)
        assert "Thursday, March 5, 2026" in page and "Featured yesterday" in page
        archive = html.unescape(httpx.get(site.links.preferences(east_id, "archive")).text)
        assert "Mar 5, 2026" in archive and "Mar 4, 2026" not in archive


def test_a_term_matched_through_different_related_words_is_one_section(  # type: ignore[no-untyped-def]
        world, smtp_sink: SmtpSink) -> None:
    """"robotics" names a field: papers match it through its related words, each
    paper's why line says which ("matched: robotics (via grasping)"), and they are all
    one section headed "robotics", in the opening line, the headings and the record
    the archive reads; not a section for each set of related words."""
    import re

    from newsletter.delivery import shown

    settings, engine = world
    with session_scope(engine) as s:
        s.execute(update(Subscriber).where(Subscriber.email != ADA).values(status="paused"))
        s.execute(update(Subscriber).where(Subscriber.email == ADA)
                  .values(keywords="robotics, video diffusion"))
    assert run_send(via_sink(settings, smtp_sink), engine, dt.date(2026, 3, 4)
                    ).report.counts["sent"] == 1
    [msg] = messages_to(smtp_sink, ADA)
    body, text = parts(msg)
    assert re.search(r"matched: robotics \(via [^)]+\)", text), text  # each paper says which
    opening = re.search(r"new papers? for you: (.*)", text)
    assert opening, text
    sections = re.findall(r"([^,]+) \((\d+)\)", opening.group(1))
    assert [t.strip() for t, _ in sections] == ["robotics", "video diffusion"], opening.group(0)
    assert re.findall(r"^== (.*) ==\s*$", text, re.M) == ["robotics", "video diffusion"], text
    assert "(via" not in "".join(re.findall(r'<h2 class="section">(.*?)</h2>', body, re.S))
    with session_scope(engine, readonly=True) as s:
        record = shown.decode(s.scalars(select(Delivery.shown)).one())
    assert record is not None
    assert record.sections() == [(t.strip(), int(n)) for t, n in sections]


def test_a_previews_links_work_as_the_sent_emails_do(world, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """`newsletter preview` writes exactly what `send` would send: its unsubscribe,
    preferences and view-in-browser links answer as the sent email's do (they named no
    link nonce, which the site reads as a subscription deleted since: 410)."""
    import re

    import httpx

    from .editions_support import run_preview
    from .web_support import running_site

    settings, engine = world
    with running_site(settings, engine) as site:
        report = run_preview(site.settings, engine, dt.date(2026, 3, 4), tmp_path / "pv",
                             email=ADA)
        assert len(report.outcomes) == 1, report
        [txt] = (tmp_path / "pv").glob("*.txt")
        text = txt.read_text()
        links = {name: re.search(rf"{label}: (\S+)", text) for name, label in (
            ("view", "View in browser"), ("preferences", "Manage preferences"),
            ("unsubscribe", "Unsubscribe"))}
        assert all(links.values()), (links, text[-800:])
        for name, found in links.items():
            assert found is not None
            got = httpx.get(found.group(1), timeout=60)
            assert got.status_code == 200, (name, got.status_code, got.text[:300])


def test_a_week_of_sends_gives_weekly_one_email_and_daily_seven(
        cli, tmp_path, smtp_sink: SmtpSink) -> None:  # type: ignore[no-untyped-def]
    """Seven days of `ingest` then `send --date`: the daily subscriber gets seven
    emails, the weekly one (Friday) one, on Friday, the week's best, no paper twice."""
    import json

    from .conftest import ROOT

    env = sink_env(tmp_path / "week.db", smtp_sink)
    assert cli("db", "upgrade", env=env).code == 0
    keywords = "transformer, diffusion, language models, graph, reinforcement learning"
    daily, weekly = "daily@example.org", "weekly@example.org"
    assert cli("subscribers", "add", daily, "--keywords", keywords, env=env).code == 0
    added = cli("subscribers", "add", weekly, "--keywords", keywords, "--frequency",
                "weekly:friday", env=env)
    assert added.code == 0, added.stderr
    bad = cli("subscribers", "add", "x@example.org", "--keywords", "gnn", "--frequency",
              "fortnightly", env=env)
    assert bad.code != 0 and "--frequency: invalid frequency 'fortnightly'" in bad.stderr

    papers = json.loads((ROOT / "newsletter" / "data" / "sample_papers.json").read_text())
    monday = dt.date(2026, 3, 2)
    for i in range(7):
        chunk = tmp_path / f"day{i}.json"
        chunk.write_text(json.dumps(papers[i * 40:(i + 1) * 40]))
        assert cli("ingest", str(chunk), env=env).code == 0
        day = monday + dt.timedelta(days=i)
        sent = cli("send", "--date", day.isoformat(), "--yes", "--force", env=env)
        assert sent.code == 0, sent.stderr
        # a second run the same day sends nobody again
        again = cli("send", "--date", day.isoformat(), "--yes", "--force", env=env)
        assert again.code == 0

    to_daily, to_weekly = messages_to(smtp_sink, daily), messages_to(smtp_sink, weekly)
    assert len(to_daily) == 7
    assert len(to_weekly) == 1
    [msg] = to_weekly
    assert "this week" in str(msg["Subject"]) and "Friday" in parts(msg)[1]
    assert "this week" not in str(to_daily[0]["Subject"])
    with sqlite3_rows(tmp_path / "week.db") as rows:
        by = rows("select s.email, d.day, d.entry_ids from deliveries d join subscribers s"
                  " on s.id = d.subscriber_id where d.status = 'sent'")
    weekly_ids = [json.loads(ids) for email_, _, ids in by if email_ == weekly]
    assert [d for email_, d, _ in by if email_ == weekly] == ["2026-03-06"]
    [ids] = weekly_ids
    assert ids and len(ids) == len(set(ids))
    # the week's papers, not Friday's alone: picks from earlier days' files
    days_of = {p["id"]: n // 40 for n, p in enumerate(papers)}
    assert any(days_of[i] < 4 for i in ids), ids
    daily_ids = [i for email_, _, x in by if email_ == daily for i in json.loads(x)]
    assert len(daily_ids) == len(set(daily_ids))  # never a paper twice


def test_a_weekdays_monday_brings_the_weekends_papers(
        cli, tmp_path, smtp_sink: SmtpSink) -> None:  # type: ignore[no-untyped-def]
    """A daily and a weekdays reader at the same hour, papers every day of a week, then
    a Monday with none: the daily reader had the weekend's papers on Saturday and
    Sunday; the weekdays reader gets them on Monday (the papers since their Friday
    email), and preview shows the same."""
    import json

    from newsletter.config import Settings
    from newsletter.delivery.edition import EditionConfig
    from newsletter.service.preview import preview_email
    from newsletter.store.db import get_engine

    daily, weekdays = "daily@example.org", "weekdays@example.org"
    env, papers = two_readers(cli, tmp_path / "wd.db", smtp_sink, daily, weekdays, "weekdays")
    monday = dt.date(2026, 3, 2)
    for i in range(8):
        day = monday + dt.timedelta(days=i)
        if i < 7:  # Monday to Sunday; the next Monday has no new papers
            chunk = tmp_path / f"day{i}.json"
            chunk.write_text(json.dumps(papers[i * 40:(i + 1) * 40]))
            assert cli("ingest", str(chunk), env=env).code == 0
        else:
            out = tmp_path / "preview"
            shown = cli("preview", "--date", day.isoformat(), "--out", str(out), env=env)
            assert shown.code == 0, shown.stderr
            assert [p.name for p in out.glob("*.eml")] == ["weekdays@example.org.eml"]
            previewed = (out / "weekdays@example.org.txt").read_text()
            # the console's one-email preview explains the picks over the same papers
            url = env["NEWSLETTER_DATABASE__URL"]
            one = preview_email(EditionConfig.of(Settings().replace(database={"url": url})),
                                get_engine(url), day, subscriber=weekdays)
            assert one.status == "sent" and len(one.why) > 1, one
        sent = cli("send", "--date", day.isoformat(), "--yes", "--force", env=env)
        assert sent.code == 0, sent.stderr
    assert "1 weekdays email due goes out with the weekend's papers" in sent.stderr
    assert "papers ingested since go to the next edition" in sent.stderr
    # Monday's papers come later that day: the weekdays email was ranked up to the
    # edition's cutoff, which stays; the run says where the new papers go
    chunk = tmp_path / "day7.json"
    chunk.write_text(json.dumps(papers[280:]))
    assert cli("ingest", str(chunk), env=env).code == 0
    again = cli("send", "--date", day.isoformat(), "--yes", "--force", env=env)
    assert again.code == 0 and "papers ingested since go to the next edition" in (
        again.stderr), again.stderr
    assert "the day stays open" not in again.stderr
    assert len(messages_to(smtp_sink, daily)) == 7
    assert len(messages_to(smtp_sink, weekdays)) == 6
    with sqlite3_rows(tmp_path / "wd.db") as rows:
        by = rows("select s.email, d.day, d.entry_ids from deliveries d join subscribers s"
                  " on s.id = d.subscriber_id where d.status = 'sent'")
    days_of = {p["id"]: n // 40 for n, p in enumerate(papers)}
    [last] = [json.loads(ids) for e, d, ids in by if e == weekdays and d == "2026-03-09"]
    assert last and {days_of[i] for i in last} <= {5, 6}, last  # Saturday's and Sunday's
    assert all(p["title"][:30] in " ".join(previewed.split()) for p in papers
               if p["id"] in last[:3])
    for who in (daily, weekdays):  # never a paper twice
        ids = [i for e, _, x in by if e == who for i in json.loads(x)]
        assert len(ids) == len(set(ids))
    weekend = {i for e, d, x in by if e == daily and d in ("2026-03-07", "2026-03-08")
               for i in json.loads(x)}
    assert weekend and {days_of[i] for i in weekend} <= {5, 6}


def two_readers(cli: Any, db: Any, sink: SmtpSink, daily: str, other: str,
                frequency: str) -> tuple[dict[str, str], list[dict[str, Any]]]:
    """A database with a daily reader and one of ``frequency``, the same keywords; the
    environment to run the CLI on it (sending to ``sink``) and the sample papers."""
    import json

    from .conftest import ROOT

    env = sink_env(db, sink)
    assert cli("db", "upgrade", env=env).code == 0
    keywords = "transformer, diffusion, language models, graph, reinforcement learning"
    assert cli("subscribers", "add", daily, "--keywords", keywords, env=env).code == 0
    assert cli("subscribers", "add", other, "--keywords", keywords, "--frequency",
               frequency, env=env).code == 0
    return env, json.loads((ROOT / "newsletter" / "data" / "sample_papers.json").read_text())


def sink_env(db: Any, sink: SmtpSink) -> dict[str, str]:
    """The environment of a CLI run on its own database, sending to the sink."""
    return {"NEWSLETTER_DATABASE__URL": f"sqlite:///{db}",
            "NEWSLETTER_TRANSPORT__BACKEND": "smtp", "NEWSLETTER_SMTP__HOST": sink.host,
            "NEWSLETTER_SMTP__PORT": str(sink.port),
            "NEWSLETTER_WEB__BASE_URL": "https://digest.example.org",
            "NEWSLETTER_SENDER__FROM_ADDRESS": "digest@example.org"}


class sqlite3_rows:  # noqa: N801 - used as a context manager
    def __init__(self, path: Any) -> None:
        import sqlite3

        self.conn = sqlite3.connect(path)

    def __enter__(self) -> Any:
        return lambda q: self.conn.execute(q).fetchall()

    def __exit__(self, *exc: object) -> None:
        self.conn.close()


def test_frequency_on_preferences_console_and_import(world, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The person on their preferences page, the operator in the console and by CSV."""
    import httpx

    from newsletter.store.subscribers import export_csv, import_csv

    from .test_admin import start_console
    from .web_support import post_form, running_site

    settings, engine = world
    with session_scope(engine, readonly=True) as s:
        grace = s.scalars(select(Subscriber.id).where(
            Subscriber.email == "grace@example.org")).one()
    with running_site(settings, engine) as site:
        client = httpx.Client()
        url = site.links.preferences(grace)
        assert 'name="frequency"' in client.get(url).text
        ok = post_form(client, url, {"action": "save", "keywords": "graph neural networks",
                                     "tz": "UTC", "hour": "7", "status": "active",
                                     "frequency": "weekly:fri"})
        assert ok.status_code == 200 and "Saved." in ok.text
        assert "How often" in ok.text, ok.text[ok.text.find("<form"):][:3000]
        assert '<option value="weekly:fri" selected>Weekly on Friday' in ok.text
        bad = post_form(client, url, {"action": "save", "keywords": "gnn", "tz": "UTC",
                                      "hour": "7", "status": "active", "frequency": "hourly"})
        assert bad.status_code == 400 and "invalid frequency 'hourly'" in html.unescape(bad.text)
    with session_scope(engine, readonly=True) as s:
        assert s.get(Subscriber, grace).frequency == "weekly:fri"  # type: ignore[union-attr]

    running = start_console(settings, engine)
    console = next(running)
    c = console.login()
    from .test_admin import csrf_of

    page = f"/subscribers/{grace}"
    token = csrf_of(c, page)
    saved = c.post(page, data={"csrf": token, "name": "Grace", "keywords": "gnn", "tz": "UTC",
                               "hour": "7", "status": "active", "frequency": "weekdays"})
    assert saved.status_code == 200, saved.text
    assert '<option value="weekdays" selected>on weekdays' in saved.text
    assert "weekdays" in c.get("/subscribers", params={"q": "grace"}).text
    with session_scope(engine, readonly=True) as s:
        assert s.get(Subscriber, grace).frequency == "weekdays"  # type: ignore[union-attr]
    running.close()

    data = (b"email,name,keywords,tz,hour,frequency\n"
            b"w@example.org,W,gnn,UTC,7,weekly:sunday\nd@example.org,D,gnn,UTC,7,\n")
    with session_scope(engine) as s:
        import_csv(s, data, "people.csv")
    with session_scope(engine, readonly=True) as s:
        got = dict(s.execute(select(Subscriber.email, Subscriber.frequency).where(
            Subscriber.email.in_(["w@example.org", "d@example.org"]))).all())
        import io

        out = io.StringIO()
        export_csv(s.scalars(select(Subscriber).where(Subscriber.email == "w@example.org")),
                   out)
    assert got == {"w@example.org": "weekly:sun", "d@example.org": "daily"}
    assert out.getvalue().splitlines()[1].endswith(",active,weekly:sun")
    from newsletter.errors import InputError

    try:
        with session_scope(engine) as s:
            import_csv(s, b"email,keywords,frequency\nz@example.org,gnn,monthly\n", "p.csv")
    except InputError as exc:
        assert "p.csv:2: invalid frequency 'monthly'" in exc.message
    else:
        raise AssertionError("a bad frequency imported")


def test_view_in_browser_is_the_email_as_sent_after_the_profile_changes(
        world, smtp_sink: SmtpSink) -> None:  # type: ignore[no-untyped-def]
    """Sent through the sink, viewed through the real web server: after Ada changes her
    keywords, her view page still says what her email said; its record is small."""
    import re

    import httpx

    from .web_support import running_site

    settings, engine = world
    with running_site(settings, engine) as site:
        summary = run_send(via_sink(site.settings, smtp_sink), engine, dt.date(2026, 3, 4))
        assert summary.report.counts["sent"] >= 1
        [msg] = messages_to(smtp_sink, ADA)
        body, text = parts(msg)
        view = re.search(r"View in browser: (\S+)", text)
        assert view, text
        before = httpx.get(view.group(1), timeout=60)
        assert before.status_code == 200 and "matched: " in before.text
        opening = re.search(r"new papers? for you: (.*)", text)
        assert opening, text
        sections = re.findall(r"[^,]+ \(\d+\)", opening.group(1))
        assert sections, opening.group(1)
        for s_ in sections:
            assert s_.strip() in html.unescape(before.text)
        with session_scope(engine) as s:
            s.execute(update(Subscriber).where(Subscriber.email == ADA)
                      .values(keywords="point cloud, lidar"))
            record = s.scalars(select(Delivery.shown).join(Subscriber)
                               .where(Subscriber.email == ADA)).one()
            sizes = [len(x.encode()) for x in s.scalars(select(Delivery.shown)) if x]
        after = httpx.get(view.group(1), timeout=60)
        assert after.status_code == 200
        assert after.text == before.text  # the email as sent, not as it would be now
        assert "point cloud" not in after.text
        with session_scope(engine, readonly=True) as s:
            ada_id = s.scalars(select(Subscriber.id).where(Subscriber.email == ADA)).one()
        archive = html.unescape(httpx.get(site.links.preferences(ada_id, "archive")).text)
        assert all(s_.strip() in archive for s_ in sections), archive
        feed = html.unescape(httpx.get(site.links.feed(ada_id)).text)
        assert "matched: " in feed and "point cloud" not in feed
        assert record and "vision transformer" in record or "Mamba" in record
        print(f"record bytes per delivery: min {min(sizes)} max {max(sizes)} "
              f"mean {sum(sizes) / len(sizes):.0f} over {len(sizes)}")
        assert max(sizes) < 1500


def test_preview_says_nothing_to_send_once_the_day_is_sent(
        cli, world, smtp_sink: SmtpSink, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Preview shows what `send` would do now: after the day went out through the sink,
    nothing for that day (CLI and console); another day with --date still previews."""
    settings, engine = world
    env = {"NEWSLETTER_DATABASE__URL": settings.database.url}
    day = dt.date(2026, 3, 4)
    before = cli("preview", "--subscriber", ADA, "--date", day.isoformat(), "--out",
                 str(tmp_path / "p1"), env=env)
    assert before.code == 0 and (tmp_path / "p1" / "ada_example.org.html").exists() or any(
        (tmp_path / "p1").glob("*.html")), before.stderr
    assert run_send(via_sink(settings, smtp_sink), engine, day).report.counts["sent"] >= 1
    after = cli("preview", "--subscriber", ADA, "--date", day.isoformat(), "--out",
                str(tmp_path / "p2"), env=env)
    assert after.code == 0, after.stderr
    assert f"nothing to send for {day}" in after.stderr
    assert not list((tmp_path / "p2").glob("*.html")) if (tmp_path / "p2").exists() else True
    everyone = cli("preview", "--date", day.isoformat(), "--out", str(tmp_path / "p3"), env=env)
    assert f"nothing to send for {day}" in everyone.stderr
    send = cli("send", "--date", day.isoformat(), "--yes", env=env)
    assert "nobody" in send.stderr or "nothing" in send.stderr, send.stderr

    from .test_admin import start_console

    running = start_console(settings, engine)
    console = next(running)
    page = console.login().get("/preview", params={"subscriber": ADA, "day": day.isoformat()})
    assert page.status_code == 200 and f"nothing to send for {day}" in page.text
    running.close()


def test_two_strengths_of_match_on_the_judged_set() -> None:
    """"matched:" for clear matches, "related:" for weak ones (relevance under
    ``STRONG_MATCH`` × min_relevance), checked on bench/quality.py's judged profiles:
    few weak picks are relevant, most strong ones are."""
    from bench.quality import load
    from newsletter.config import RankingConfig
    from newsletter.ranking.engine import Corpus, Ranker
    from newsletter.ranking.related import RelatedTerms
    from newsletter.ranking.selection import load_acronyms

    entries, profiles = load()
    cfg = RankingConfig(trending="none")
    ranker = Ranker(Corpus(entries, load_acronyms(RankingConfig(), entries), cfg,
                           dt.date(2025, 12, 26), RelatedTerms.load()), cfg)
    strong: list[int] = []
    weak: list[int] = []
    for prof in profiles:
        if not prof["judgments"]:
            continue
        [chunk] = ranker.rank([(0, prof["profile"])], k=10)
        picks = [i for i in chunk.picks[0] if i >= 0]
        for i, ex in zip(picks, ranker.explain_many(prof["profile"], picks), strict=True):
            relevant = prof["judgments"].get(entries[i].id, 0) >= 1
            (strong if ex.strong else weak).append(relevant)
            assert ex.why.startswith("matched: " if ex.strong else "related: ") or not ex.matched
    assert len(weak) >= 5 and len(strong) >= 100
    assert sum(weak) / len(weak) <= 0.1 < 0.7 <= sum(strong) / len(strong)


def test_weekly_on_a_day_without_new_papers_still_gets_the_week(
        cli, tmp_path, smtp_sink: SmtpSink) -> None:  # type: ignore[no-untyped-def]
    """arXiv publishes nothing on weekends: a subscriber who chose Sunday gets the
    week's best on Sunday all the same, and the daily subscriber nothing that day."""
    import json

    daily, weekly = "daily@example.org", "sunday@example.org"
    env, papers = two_readers(cli, tmp_path / "sun.db", smtp_sink, daily, weekly,
                              "weekly:sunday")
    monday = dt.date(2026, 3, 2)
    for i in range(7):
        day = monday + dt.timedelta(days=i)
        if i < 5:  # Monday to Friday only
            chunk = tmp_path / f"day{i}.json"
            chunk.write_text(json.dumps(papers[i * 40:(i + 1) * 40]))
            assert cli("ingest", str(chunk), env=env).code == 0
        else:  # preview says what send will do: the weekly email, nobody else's
            out = tmp_path / f"preview{i}"
            shown = cli("preview", "--date", day.isoformat(), "--out", str(out), "--json",
                        env=env)
            assert shown.code == 0, shown.stderr
            emls = sorted(p.name for p in out.glob("*.eml")) if out.exists() else []
            assert [n for n in emls if "sunday" in n] == ([] if i == 5 else emls), emls
            assert len(emls) == (1 if i == 6 else 0), emls
        sent = cli("send", "--date", day.isoformat(), "--yes", "--force", env=env)
        assert sent.code == 0, sent.stderr
        if i == 6:  # what the run says matches what it does: the day had no new papers,
            # the weekly email goes out (not "no new papers since the last edition on"
            # the very edition this run opened)
            assert "1 weekly email due goes out with the week's papers" in sent.stderr, (
                sent.stderr)
            assert f"the last edition on {day}" not in sent.stderr, sent.stderr
    assert len(messages_to(smtp_sink, daily)) == 5
    [msg] = messages_to(smtp_sink, weekly)
    assert "this week" in str(msg["Subject"])
    with sqlite3_rows(tmp_path / "sun.db") as rows:
        by = rows("select s.email, d.day, d.status from deliveries d join subscribers s"
                  " on s.id = d.subscriber_id")
    assert sorted((e, d) for e, d, st in by if e == weekly) == [(weekly, "2026-03-08")]
    assert {st for _, _, st in by} == {"sent"}


def shift_stored_times(db: Any, delta: dt.timedelta) -> None:
    """Every time the database holds moved ``delta`` into the past: as if that much
    time had passed since (papers' arrivals, editions' cutoffs, rows' times alike)."""
    import sqlite3

    from newsletter.store.models import Base

    conn = sqlite3.connect(db)
    with conn:
        for table in Base.metadata.sorted_tables:
            for column in table.columns:
                if column.type.__class__.__name__ == "DateTime":
                    conn.execute(
                        f'UPDATE "{table.name}" SET "{column.name}" = strftime('
                        f"'%Y-%m-%d %H:%M:%f000', \"{column.name}\", '-{delta.total_seconds()} "
                        f"seconds') WHERE \"{column.name}\" IS NOT NULL")
    conn.close()


def ingest_titles(cli: Any, env: dict[str, str], path: Any, *titles: str) -> None:
    import json

    path.write_text(json.dumps([{"title": t, "abstract": f"We study diffusion models: {t}.",
                                 "authors": ["A. Author"], "published": "2026-03-01",
                                 "upvotes": 1} for t in titles]))
    done = cli("ingest", str(path), env=env)
    assert done.code == 0, done.stderr


def titles_sent(db: Any, address: str) -> dict[str, set[str]]:
    """Per newsletter day, the titles of the papers sent to ``address``."""
    import json

    with sqlite3_rows(db) as rows:
        by = rows("select d.day, d.entry_ids from deliveries d join subscribers s on "
                  "s.id = d.subscriber_id where d.status = 'sent' and s.email = "
                  f"'{address}'")
        title = dict(rows("select id, title from entries"))
    return {day: {title[i] for i in json.loads(ids)} for day, ids in by}


def test_a_weekly_run_later_in_its_hour_than_the_week_before_loses_no_paper(
        cli, tmp_path, smtp_sink: SmtpSink) -> None:  # type: ignore[no-untyped-def]
    """A paper that arrives just after a weekly reader's email, and next week's run 40
    minutes later in its hour (a daemon started late, a catch-up): the paper is in the
    next weekly email. The window was floored at exactly a week before the run, which
    left out the papers of those 40 minutes: in neither week's email."""
    db = tmp_path / "late.db"
    env = sink_env(db, smtp_sink)
    assert cli("db", "upgrade", env=env).code == 0
    weekly = "weekly@example.org"
    assert cli("subscribers", "add", weekly, "--keywords", "diffusion models", "--frequency",
               "weekly:monday", env=env).code == 0
    ingest_titles(cli, env, tmp_path / "a.json", "Diffusion models A")
    assert cli("send", "--date", "2026-03-02", "--yes", "--force", env=env).code == 0
    ingest_titles(cli, env, tmp_path / "b.json", "Diffusion models B")
    shift_stored_times(db, dt.timedelta(days=7, minutes=40))
    ingest_titles(cli, env, tmp_path / "c.json", "Diffusion models C")
    sent = cli("send", "--date", "2026-03-09", "--yes", "--force", env=env)
    assert sent.code == 0, sent.stderr
    assert titles_sent(db, weekly) == {"2026-03-02": {"Diffusion models A"},
                                       "2026-03-09": {"Diffusion models B",
                                                      "Diffusion models C"}}


def test_a_late_monday_run_still_brings_a_weekdays_reader_fridays_late_paper(
        cli, tmp_path, smtp_sink: SmtpSink) -> None:  # type: ignore[no-untyped-def]
    """The weekend's one paper came an hour after Friday's run; Monday's run is half
    an hour later than Friday's, so the paper came over three days before it. The
    daily reader had it on Saturday; the weekdays reader gets it on Monday. Whether a
    Monday email was due was asked of the last three days of the clock: none was sent,
    the run said "no new papers", and Tuesday's email started after the weekend."""
    db = tmp_path / "monday.db"
    daily, weekdays = "daily@example.org", "weekdays@example.org"
    env = sink_env(db, smtp_sink)
    assert cli("db", "upgrade", env=env).code == 0
    assert cli("subscribers", "add", daily, "--keywords", "diffusion models", env=env).code == 0
    assert cli("subscribers", "add", weekdays, "--keywords", "diffusion models",
               "--frequency", "weekdays", env=env).code == 0
    ingest_titles(cli, env, tmp_path / "f.json", "Diffusion models F")
    assert cli("send", "--date", "2026-03-06", "--yes", "--force", env=env).code == 0
    ingest_titles(cli, env, tmp_path / "p.json", "Diffusion models P")
    for day in ("2026-03-07", "2026-03-08"):
        assert cli("send", "--date", day, "--yes", "--force", env=env).code == 0
    shift_stored_times(db, dt.timedelta(days=3, minutes=30))
    monday = cli("send", "--date", "2026-03-09", "--yes", "--force", env=env)
    assert monday.code == 0, monday.stderr
    assert titles_sent(db, weekdays) == {"2026-03-06": {"Diffusion models F"},
                                         "2026-03-09": {"Diffusion models P"}}, monday.stderr
    assert titles_sent(db, daily) == {"2026-03-06": {"Diffusion models F"},
                                      "2026-03-07": {"Diffusion models P"}}
