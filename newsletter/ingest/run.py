"""Ingest: fetch every SOURCE and parse it into normalized papers (``Paper``).

Everything is loaded before anything is stored (``newsletter.service.ingest``
stores it, in one transaction): that is what makes a bad file harmless, since one
malformed source among five stores nothing, and the error names the file and line.
This stage reads no database: what the last fetch of a URL sent (its validators)
is passed in.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from newsletter.config import SourceConfig
from newsletter.errors import InputError, NewsletterError, SourceError, first_line
from newsletter.ingest import encoding
from newsletter.ingest.fetch import MAX_BYTES, Fetcher, Validators
from newsletter.ingest.formats import BY_KIND, SOURCES, Skipped
from newsletter.ingest.papers import Paper, merge_duplicates


def decode(data: bytes, origin: str, content_type: str = "") -> str:
    """Text from bytes as feed readers do it (BOM, HTTP charset, XML prolog), else
    strict UTF-8; junk is refused with the line it starts on. See ``encoding``."""
    return encoding.decode(data, origin, content_type)


def parse_text(
    text: str, origin: str, kind: str = "auto", skipped: list[Skipped] | None = None
) -> list[Paper]:
    """Papers in ``text``; the format is told from the content unless ``kind`` says.

    With a ``skipped`` list, unusable items are recorded there and the rest kept;
    without one, the first unusable item is an error (``ingest --strict``).
    """
    if kind != "auto":
        return BY_KIND[kind].parse(text, origin, skipped)
    for source in SOURCES:
        if source.sniff(text):
            return source.parse(text, origin, skipped)
    head = text.lstrip()[:200].lower()
    if head.startswith(("<!doctype html", "<html")) or "<body" in text[:4000].lower():
        raise SourceError(origin, "this is an HTML page, not a feed: expected RSS/Atom XML")
    raise SourceError(
        origin,
        "unrecognised format: expected daily-papers JSON, entries JSON/JSONL, RSS/Atom, "
        "JSON Feed, or a page dump",
    )


@dataclass
class Parsed:
    """What one source yields: the usable papers and the items it could not use."""

    papers: list[Paper]
    skipped: list[Skipped]


def parse_bytes(
    data: bytes, origin: str, kind: str = "auto", content_type: str = "", strict: bool = False
) -> Parsed:
    """Decode and parse one payload (a file's bytes or an HTTP body)."""
    skipped: list[Skipped] | None = None if strict else []
    papers = parse_text(decode(data, origin, content_type), origin, kind, skipped)
    if skipped and not papers:  # items, none usable: nothing to keep, so say why
        more = f" (and {len(skipped) - 1} more unusable items)" if len(skipped) > 1 else ""
        raise SourceError(origin, f"{skipped[0]}{more} (no usable item)")
    return Parsed(papers, skipped or [])


@dataclass
class Loaded:
    """One source fetched and parsed: its papers (duplicates folded), the items it
    could not use, and the validators to send next time; ``new`` and ``updated`` are
    filled in when the papers are stored."""

    origin: str
    papers: list[Paper]
    folded: int = 0
    validators: Validators | None = None
    not_modified: bool = False
    skipped: list[Skipped] = field(default_factory=list)
    name: str = ""  # the SOURCE as given: a [[sources]] name, a URL or a path
    new: int = 0
    updated: int = 0


def resolve(spec: str, configured: Sequence[SourceConfig]) -> SourceConfig:
    """A SOURCE argument: a ``[[sources]]`` name (of ``configured``), a URL, or a path."""
    for src in configured:
        if src.name == spec:
            if not (src.url or src.path):
                raise InputError(f"[[sources]] {spec}: needs url or path")
            return src
    if spec.startswith(("http://", "https://")):
        return SourceConfig(name=spec, url=spec)
    return SourceConfig(name=spec, path=spec)


def fetch_bytes(
    src: SourceConfig, fetcher: Fetcher | None, validators: Validators | None = None
) -> tuple[str, bytes | None, str, Validators | None]:
    """(origin, body or None when not modified, content type, validators) of one source."""
    if src.url:
        assert fetcher is not None
        got = fetcher.get(src.url, validators)  # (its body at most ``MAX_BYTES``)
        return src.url, got.body, got.content_type, got.validators
    path = Path(src.path or "")
    origin = str(path)
    try:
        size = path.stat().st_size
        if path.is_dir():
            raise SourceError(origin, "is a directory: expected a file")
        if size > MAX_BYTES:
            raise SourceError(origin, f"file larger than {MAX_BYTES // 2**20} MB")
        data = path.read_bytes()
    except FileNotFoundError:
        raise SourceError(origin, "no such file (nor a [[sources]] name or URL)") from None
    except OSError as exc:
        raise SourceError(origin, f"cannot read: {exc.strerror}") from None
    return origin, data, "", None


def load(src: SourceConfig, fetcher: Fetcher | None, validators: Validators | None = None,
         strict: bool = False) -> Loaded:
    """Fetch (conditionally, with ``validators``) and parse one source."""
    origin, body, content_type, got = fetch_bytes(src, fetcher, validators)
    if body is None:
        return Loaded(origin, [], validators=got, not_modified=True, name=src.name)
    parsed = parse_bytes(body, origin, src.kind, content_type, strict)
    merged, folded = merge_duplicates(parsed.papers)
    return Loaded(origin, merged, folded, validators=got, skipped=parsed.skipped,
                  name=src.name)


def sources_of(configured: Sequence[SourceConfig], specs: list[str]) -> list[SourceConfig]:
    """The sources ``specs`` name (``resolve``); none: every ``configured`` one."""
    sources = [resolve(s, configured) for s in specs] or list(configured)
    if not sources:
        raise InputError("nothing to ingest: name a file, URL or [[sources]] entry")
    return sources


@contextmanager
def reading(src: SourceConfig) -> Iterator[None]:
    """Whatever a source's data breaks while it is fetched and parsed (an author list
    thousands of "and"s long, a number Python will not read, an answer httpx gives up
    on) is that source's failure, said in one line (``SourceError``), never a traceback
    that also loses every other source's papers."""
    try:
        yield
    except NewsletterError:
        raise
    except Exception as exc:
        raise SourceError(src.url or src.path or src.name,
                          f"could not be read: {type(exc).__name__}: "
                          f"{first_line(exc)[:200]}") from exc


def load_all(sources: Sequence[SourceConfig],
             validators_of: Callable[[str], Validators | None],
             strict: bool = False,
             failed: list[NewsletterError] | None = None) -> list[Loaded]:
    """Fetch and parse every source (a URL with what ``validators_of`` it gives); the
    first source-level error stops it, naming the source (``source_name``), unless
    ``failed`` is given: each source's error is then added there and the others load.

    Unusable items inside a usable source are skipped and listed, unless ``strict``,
    when the first one is an error like any other."""
    fetcher = Fetcher() if any(s.url for s in sources) else None
    loaded: list[Loaded] = []
    try:
        for src in sources:
            try:
                with reading(src):
                    validators = validators_of(src.url) if src.url else None
                    loaded.append(load(src, fetcher, validators, strict))
            except NewsletterError as exc:
                exc.source_name = src.name  # type: ignore[attr-defined]
                if failed is None:
                    raise
                failed.append(exc)
    finally:
        if fetcher:
            fetcher.close()
    return loaded
