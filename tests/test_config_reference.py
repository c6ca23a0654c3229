"""The configuration reference and `newsletter init`: both generated from the config model,
so docs/configuration.md, the commented config.toml and the code cannot disagree."""

from __future__ import annotations

import re
import typing
from pathlib import Path

import pytest
from pydantic import BaseModel

from newsletter import config_reference as ref
from newsletter.config import Settings, SourceConfig, load_settings

from .conftest import ROOT

DOC = ROOT / "docs" / "configuration.md"


def model_keys() -> dict[str, set[str]]:
    """Every section and its keys, read from the model itself (not through the generator)."""
    out: dict[str, set[str]] = {}
    for name, info in Settings.model_fields.items():
        if name == "source_file":
            continue
        ann = info.annotation
        model = typing.get_args(ann)[0] if typing.get_origin(ann) is list else ann
        assert isinstance(model, type) and issubclass(model, BaseModel)
        out[name] = set(model.model_fields)
    return out


def defaults() -> dict[str, typing.Any]:
    """The settings with no file and no environment (the built-in defaults)."""
    return Settings().model_dump(exclude={"source_file"})


def test_no_file_means_the_built_in_defaults(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert load_settings(None, environ={}).model_dump(exclude={"source_file"}) == defaults()


def test_docs_configuration_md_is_generated_from_the_model() -> None:
    assert DOC.read_text(encoding="utf-8") == ref.render_markdown(), (
        f"docs/configuration.md is stale: run `{ref.REGENERATE}`")


def test_every_key_is_in_the_reference_with_a_meaning() -> None:
    documented: dict[str, set[str]] = {}
    section = ""
    for line in DOC.read_text(encoding="utf-8").splitlines():
        if m := re.fullmatch(r"## \[\[?(\w+)\]\]?", line):
            section = m.group(1)
            documented[section] = set()
        elif m := re.match(r"\| `(\w+)` \|(.*)\|$", line):
            cells = [c.strip() for c in m.group(2).split(" | ")]
            assert len(cells) == 4 and all(cells), line  # type, default, env, meaning
            assert len(cells[3]) > 10, f"[{section}] {m.group(1)}: no meaning"
            documented[section].add(m.group(1))
    assert documented == model_keys()
    for sec in ref.sections():
        assert sec.meaning, f"[{sec.name}] has no docstring"
        for key in sec.keys:
            assert key.meaning, f"[{sec.name}] {key.name}: no docstring in config.py"


def test_the_environment_variables_named_are_the_ones_the_loader_reads(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no config.toml
    base = defaults()
    for sec in ref.sections():
        for key in sec.keys:
            if key.env is None:
                assert sec.array  # only [[sources]] is file-only
                continue
            value = getattr(getattr(Settings(), sec.name), key.name)
            if value is None and key.name == "reply_to":
                continue  # an address; its checks are test_cli's
            if value is None:
                raw = "x.pem"  # any string: the variable must set this key and no other
            elif isinstance(value, bool):
                raw = "true" if value else "false"
            elif isinstance(value, list):
                raw = "[]"
            else:
                raw = str(value)
            got = load_settings(None, environ={key.env: raw}).model_dump(
                exclude={"source_file"})
            want = {**base, sec.name: {**base[sec.name],
                                       key.name: raw if value is None else value}}
            assert got == want, key.env


def test_list_keys_take_what_the_reference_says_from_the_environment(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no config.toml
    got = load_settings(None, environ={"NEWSLETTER_WEB__SECRET_KEYS": "new-key, old-key"})
    assert got.web.secret_keys == ["new-key", "old-key"]
    got = load_settings(None, environ={"NEWSLETTER_WEB__SECRET_KEYS": '["a,b", "c"]'})
    assert got.web.secret_keys == ["a,b", "c"]
    rows = {k.name: k for s in ref.sections() for k in s.keys if s.name == "web"}
    assert rows["secret_keys"].env_note == "comma-separated, or a JSON list"


def test_the_init_example_source_is_a_valid_source() -> None:
    SourceConfig.model_validate(ref.SOURCE_EXAMPLE)
    assert set(ref.SOURCE_EXAMPLE) <= set(SourceConfig.model_fields)

