"""The configuration reference, generated from the config model in ``newsletter/config.py``.

Two renderings of one source, so neither can drift from the code: the Markdown of
``docs/configuration.md`` (every key with its type, default, environment variable and
meaning) and the commented ``config.toml`` that ``newsletter init`` writes. A key's
meaning is its attribute docstring in ``config.py``; a section's is its class docstring.

Regenerate the reference after changing a key::

    python -m newsletter.config_reference > docs/configuration.md

``tests/test_config_reference.py`` fails when the file and the model disagree.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import textwrap
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from newsletter.config import DEFAULT_CONFIG, ENV_PREFIX, Settings, key_doc

REGENERATE = "python -m newsletter.config_reference > docs/configuration.md"
# Settings fields that are not keys a person sets.
INTERNAL = frozenset({"source_file"})
# What the commented [[sources]] example in ``newsletter init`` shows.
SOURCE_EXAMPLE = {"name": "cs.LG", "kind": "arxiv", "url": "https://rss.arxiv.org/rss/cs.LG"}


@dataclass(frozen=True)
class Key:
    """One config key as the reference shows it."""

    section: str
    name: str
    type: str  # "integer, 1 to 65535", "one of: none, starttls, tls", ...
    default: str | None  # as TOML; None: unset by default (or required)
    required: bool
    env: str | None  # None: not settable from the environment
    env_note: str  # how a list is written in the environment, else ""
    meaning: str


@dataclass(frozen=True)
class Section:
    """One ``[section]`` (or the ``[[sources]]`` array) with its keys."""

    name: str
    array: bool  # [[sources]]: a list of tables
    meaning: str
    keys: tuple[Key, ...]


def _one_line(text: str | None) -> str:
    """A docstring as one line of Markdown (reST's double backquotes made single)."""
    return " ".join((text or "").split()).replace("``", "`")


def toml_value(value: Any) -> str:
    """A default as it is written in TOML (strings in JSON's escapes, which TOML reads)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML form for {value!r}")


def _base_type(annotation: Any) -> tuple[str, bool]:
    """(words for the type, whether None is allowed)."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        text, _ = _base_type(inner[0]) if len(inner) == 1 else (" or ".join(
            _base_type(a)[0] for a in inner), False)
        return text, type(None) in args
    if origin is typing.Literal:
        return "one of: " + ", ".join(str(a) for a in args), False
    if origin is list:
        return f"list of {_base_type(args[0])[0]}s", False
    names = {str: "string", int: "integer", float: "number", bool: "boolean"}
    return names.get(annotation, getattr(annotation, "__name__", str(annotation))), False


def _bounds(info: FieldInfo) -> str:
    """The field's numeric and length limits, in words ("1 to 65535", "above 0")."""
    c: dict[str, Any] = {}
    for m in info.metadata:
        for name in ("ge", "gt", "le", "lt", "min_length", "max_length"):
            if getattr(m, name, None) is not None:
                c[name] = getattr(m, name)
    parts: list[str] = []
    if "ge" in c and "le" in c:
        parts.append(f"{c['ge']} to {c['le']}")
    else:
        parts += [f"{word} {c[name]}" for name, word in
                  (("ge", "at least"), ("gt", "above"), ("le", "at most"), ("lt", "below"))
                  if name in c]
    if "min_length" in c and "max_length" in c:
        parts.append(f"{c['min_length']} to {c['max_length']} characters")
    elif "min_length" in c or "max_length" in c:
        parts.append(f"at least {c['min_length']} characters" if "min_length" in c
                     else f"at most {c['max_length']} characters")
    return ", ".join(parts)


def _list_env_note(model: type[BaseModel], name: str) -> str:
    """How a list key is written in the environment: probed, not assumed, so the
    reference says what the loader really accepts."""
    try:
        model.model_validate({name: "a,b"})
    except ValidationError:
        return "a JSON list"
    return "comma-separated, or a JSON list"


def _key(model: type[BaseModel], section: str, name: str, info: FieldInfo,
         env: bool) -> Key:
    text, optional = _base_type(info.annotation)
    bounds = _bounds(info)
    if bounds:
        text = f"{text}, {bounds}"
    required = info.is_required()
    default = None if required else info.get_default(call_default_factory=True)
    is_list = typing.get_origin(info.annotation) is list
    return Key(
        section=section, name=name, type=text + (", optional" if optional else ""),
        default=None if default is None else toml_value(default), required=required,
        env=f"{ENV_PREFIX}{section.upper()}__{name.upper()}" if env else None,
        env_note=_list_env_note(model, name) if env and is_list else "",
        meaning=_one_line(key_doc(model, name)),
    )


def sections() -> list[Section]:
    """Every section of ``Settings`` in its order, then ``[[sources]]``."""
    out: list[Section] = []
    for name, info in Settings.model_fields.items():
        if name in INTERNAL:
            continue
        ann = info.annotation
        if typing.get_origin(ann) is list:  # [[sources]]: tables in the file only
            model: type[BaseModel] = typing.get_args(ann)[0]
            array = True
        else:
            assert isinstance(ann, type) and issubclass(ann, BaseModel), name
            model, array = ann, False
        keys = tuple(_key(model, name, k, f, env=not array)
                     for k, f in model.model_fields.items())
        out.append(Section(name, array, _one_line(model.__doc__), keys))
    return out


def _cell(text: str) -> str:
    """Text for a Markdown table cell: pipes escaped, angle brackets outside code
    spans made literal (``<token>`` would otherwise be read as an HTML tag)."""
    parts = text.replace("|", "\\|").split("`")
    for i in range(0, len(parts), 2):
        parts[i] = parts[i].replace("<", "&lt;")
    return "`".join(parts)


def render_markdown() -> str:
    """The whole of ``docs/configuration.md``."""
    lines = [
        "# Configuration reference",
        "",
        "Generated from the config model in `newsletter/config.py` (each key's docstring is",
        f"its meaning) by `{REGENERATE}`;",
        "do not edit by hand: `tests/test_config_reference.py` fails when this file and the",
        "model disagree. `newsletter init` writes the same keys and meanings as a commented",
        "`config.toml`.",
        "",
        "Where a setting comes from, lowest first: the built-in default; the config file",
        "(`--config PATH`, else `$NEWSLETTER_CONFIG`, else `./config.toml`; no file at all is",
        "fine); an environment variable `NEWSLETTER_<SECTION>__<KEY>`; a command-line option.",
        "Unknown keys and wrong types are errors naming the key and the file or variable.",
        "In the environment, booleans are `true`/`false`, lists as each row says. Keep",
        "secrets (passwords, API keys, `[web] secret_keys`, `[metrics] token`) in the",
        "environment, not in the file.",
        "",
    ]
    for sec in sections():
        lines += [f"## [[{sec.name}]]" if sec.array else f"## [{sec.name}]", ""]
        if sec.meaning:
            lines += [sec.meaning, ""]
        if sec.array:
            lines += ["A list of tables, in the config file only (none by default):",
                      "one `[[" + sec.name + "]]` table per entry.", ""]
        lines += ["| key | type | default | environment variable | meaning |",
                  "|---|---|---|---|---|"]
        for k in sec.keys:
            default = "required" if k.required else (
                "unset" if k.default is None else f"`{k.default}`")
            env = "-" if k.env is None else f"`{k.env}`" + (
                f" ({k.env_note})" if k.env_note else "")
            lines.append(f"| `{k.name}` | {_cell(k.type)} | {_cell(default)} | {env} "
                         f"| {_cell(k.meaning)} |")
        lines.append("")
    return "\n".join(lines)


def _comment(text: str, indent: str = "") -> list[str]:
    """``text`` as TOML comment lines of at most 88 characters."""
    return textwrap.wrap(text, width=88, initial_indent=f"# {indent}",
                         subsequent_indent=f"# {indent}  " if indent else "# ",
                         break_on_hyphens=False) or ["#"]


def _kind(k: Key) -> str:
    if k.required:
        return f"{k.type}, required"
    if k.default is None:
        return f"{k.type.removesuffix(', optional')}, unset by default"
    return k.type


def _array_section(sec: Section) -> list[str]:
    """``[[sources]]`` in the commented file: its keys' meanings, then an example table."""
    lines = ["", f"# [[{sec.name}]]", "#", *_comment(
        f"{sec.meaning} None by default; one [[{sec.name}]] table per entry, with these keys:")]
    for k in sec.keys:
        lines += _comment(f"{k.name} ({_kind(k)}): {k.meaning}", indent="  ")
    lines += ["#", "# For example:", "#", f"# [[{sec.name}]]"]
    lines += [f"# {name} = {toml_value(value)}" for name, value in SOURCE_EXAMPLE.items()]
    return lines


# Keys ``newsletter init`` writes uncommented: where the data lives. The built-in
# defaults are relative to the current folder, a value in the file to the file's
# (``config._anchored``): `newsletter --config /srv/digest/config.toml status` from
# another folder made a new, empty subscribers.db there.
WRITTEN_OUT = {("database", "url"), ("outbox", "path")}


def render_toml() -> str:
    """The commented ``config.toml`` that ``newsletter init`` writes: every section and
    key at its default, commented out but for ``WRITTEN_OUT``, so the file as written
    changes nothing for a command run in its folder."""
    lines = [
        "# newsletter configuration, written by `newsletter init`.",
        "#",
        *_comment("Every key is here at its built-in default, commented out but for where "
                  "the data lives ([database] url, [outbox] path): relative names in this "
                  "file are beside it, so a command run from another folder with --config "
                  "uses the same database rather than making one there. To change a key, "
                  "uncomment its line and edit the value; a key with no value shown is unset "
                  "by default."),
        *_comment("Any key can also be set from the environment as "
                  "NEWSLETTER_<SECTION>__<KEY> (e.g. NEWSLETTER_DATABASE__URL), which wins "
                  "over this file; keep secrets (passwords, API keys, [web] secret_keys, "
                  "[metrics] token) there, not here."),
        *_comment("Another file: --config PATH or NEWSLETTER_CONFIG. The same reference, "
                  "with each key's environment variable: docs/configuration.md."),
    ]
    for sec in sections():
        if sec.array:
            lines += _array_section(sec)
            continue
        lines += ["", f"[{sec.name}]", *(_comment(sec.meaning) if sec.meaning else [])]
        for k in sec.keys:
            lines += ["#", *_comment(f"{k.name} ({_kind(k)}): {k.meaning}")]
            live = (sec.name, k.name) in WRITTEN_OUT and k.default is not None
            lines.append(("" if live else "# ") + f"{k.name} ="
                         + (f" {k.default}" if k.default is not None else ""))
    return "\n".join(lines) + "\n"


def output_path(config_option: str | None, environ: typing.Mapping[str, str]) -> Path:
    """Where ``newsletter init`` writes: ``--config PATH``, else ``$NEWSLETTER_CONFIG``,
    else ``./config.toml`` (the file every command then reads)."""
    return Path(config_option or environ.get("NEWSLETTER_CONFIG") or DEFAULT_CONFIG)


def write_config(path: Path, *, force: bool = False) -> None:
    """Write :func:`render_toml` to ``path`` whole or not at all: through a temporary file
    in the same folder, linked in place (refusing an existing file unless ``force``,
    without a window in which another writer could slip in) or renamed over it."""
    text = render_toml()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; a config file is read by services
        if force:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)  # FileExistsError when path exists
            except FileExistsError:
                raise
            except OSError:  # a file system without hard links
                with open(path, "x", encoding="utf-8") as f:
                    f.write(text)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


if __name__ == "__main__":
    sys.stdout.write(render_markdown())
