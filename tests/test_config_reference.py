"""The configuration reference and `newsletter init`: both generated from the config model,
so docs/configuration.md, the commented config.toml and the code cannot disagree."""

from __future__ import annotations

import re
import tomllib
import typing
from pathlib import Path
from urllib.parse import quote

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
            cells = [c.strip() for c in re.split(r"(?<!\\) \| ", m.group(2))]
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
            if value is None and key.name in ("reply_to", "return_path"):
                continue  # an address (checked at load); their checks are elsewhere
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


# ---- newsletter init ---------------------------------------------------------------------


def uncommented(text: str) -> str:
    """The file with every `# key = value` line of a section uncommented (the [[sources]]
    example at the end stays a comment: it is an example, not a default)."""
    head = text.split("\n# [[sources]]\n")[0]
    return re.sub(r"(?m)^# (\w+ = .+)$", r"\1", head)


def test_init_writes_every_key_and_loads_back_to_the_defaults(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    result = cli("init")
    assert result.code == 0, result.stderr
    written = tmp_path / "config.toml"
    text = written.read_text(encoding="utf-8")
    assert text == ref.render_toml()
    loaded = load_settings(written, environ={})
    assert loaded.source_file == str(written)
    assert loaded.model_dump(exclude={"source_file"}) == beside(tmp_path)
    # Every section is a table already; every key is there, commented (but where the
    # data lives, written out), with its meaning.
    tables = tomllib.loads(text)
    assert set(tables) == set(model_keys()) - {"sources"}
    assert {(s, k) for s, keys in tables.items() for k in keys} == ref.WRITTEN_OUT
    for section, keys in model_keys().items():
        for key in keys:
            assert (re.search(rf"(?m)^# {key} =", text) or section == "sources"
                    or (section, key) in ref.WRITTEN_OUT), key
            assert re.search(rf"(?m)^#(   )? ?{key} \(", text), f"{key}: no meaning line"


def beside(folder: Path) -> dict[str, typing.Any]:
    """The built-in defaults, with the data's places (what `init` writes out) in
    ``folder``: where a config file there puts them, whatever the current folder."""
    out = defaults()
    out["database"]["url"] = f"sqlite:///{quote(str(folder), safe='/')}/subscribers.db"
    out["outbox"]["path"] = str(folder / "outbox")
    return out


def test_a_written_config_keeps_its_data_beside_it_from_any_folder(  # type: ignore[no-untyped-def]
        cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`newsletter --config DIR/config.toml` run from another folder, with the file
    `init` wrote: the database and the outbox are the ones beside the file (left as
    commented defaults, they were the current folder's: a command made a new, empty
    database there)."""
    site = tmp_path / "site?2 %41"  # (quoted into the URL: the database went elsewhere)
    site.mkdir()
    assert cli("--config", str(site / "config.toml"), "init").code == 0
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    loaded = load_settings(site / "config.toml", environ={})
    assert loaded.model_dump(exclude={"source_file"}) == beside(site)
    assert cli("--config", str(site / "config.toml"), "demo", cwd=elsewhere).code == 0
    assert (site / "subscribers.db").exists() and list((site / "outbox").glob("*.eml"))
    assert not list(elsewhere.iterdir())


def test_uncommenting_the_written_defaults_changes_nothing(cli, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                           monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    monkeypatch.chdir(tmp_path)  # read from its own folder (elsewhere, relative files in
    # it name files beside it: the same files, written as absolute paths)
    assert cli("init").code == 0
    text = (tmp_path / "config.toml").read_text(encoding="utf-8")
    live = tmp_path / "live.toml"
    live.write_text(uncommented(text), encoding="utf-8")
    data = tomllib.loads(live.read_text(encoding="utf-8"))
    set_keys = {(s, k) for s, keys in data.items() for k in keys}
    unset = {(s.name, k.name) for s in ref.sections() if not s.array
             for k in s.keys if k.default is None}
    every = {(s, k) for s, keys in model_keys().items() if s != "sources" for k in keys}
    assert set_keys == every - unset  # all keys with a default value were uncommented
    assert load_settings(live, environ={}).model_dump(exclude={"source_file"}) == defaults()


def test_init_refuses_to_overwrite_without_force(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    mine = tmp_path / "config.toml"
    mine.write_text('[sender]\nfrom_name = "Mine"\n', encoding="utf-8")
    result = cli("init")
    assert result.code != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "config.toml: already exists" in lines[0] and "--force" in lines[0]
    assert mine.read_text(encoding="utf-8") == '[sender]\nfrom_name = "Mine"\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.toml"]  # no leftovers
    assert cli("init", "--force").code == 0
    assert mine.read_text(encoding="utf-8") == ref.render_toml()


def test_init_writes_to_the_config_path_given(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    assert cli("--config", "etc/newsletter.toml", "init").code != 0  # no such folder
    assert not (tmp_path / "etc").exists()
    (tmp_path / "etc").mkdir()
    result = cli("--config", "etc/newsletter.toml", "init")
    assert result.code == 0, result.stderr
    assert "etc/newsletter.toml" in result.stderr
    assert not (tmp_path / "config.toml").exists()
    assert (tmp_path / "etc" / "newsletter.toml").read_text(encoding="utf-8") == ref.render_toml()
    env = {"NEWSLETTER_CONFIG": str(tmp_path / "from-env.toml")}
    assert cli("init", env=env).code == 0
    assert (tmp_path / "from-env.toml").exists()
    # The file written is the one every other command then reads.
    status = cli("--config", "etc/newsletter.toml", "sources", "list", "--json")
    assert status.code == 0, status.stderr


def test_init_as_a_process(cli_process, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    result = cli_process("init")
    assert result.code == 0, result.stderr
    assert result.stdout == ""
    assert load_settings(tmp_path / "config.toml", environ={}).model_dump(
        exclude={"source_file"}) == beside(tmp_path)


URL_DOC = "A URL to fetch it from (this or `path`, not both)."


def test_key_meanings_come_from_the_source_and_are_empty_without_it(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Each key's meaning is the docstring under it in config.py (read once, only for
    the reference); an install without that source gives empty meanings, not a crash."""
    from newsletter import config

    assert config.key_doc(SourceConfig, "url") == URL_DOC
    assert config.key_doc(SourceConfig, "kind") == (
        "auto (tell the format from the content), dailypapers, arxiv, feed, json, jsonfeed\n"
        "or pagedump.")
    assert config.key_doc(SourceConfig, "no_such_key") is None
    config._key_docs.cache_clear()
    monkeypatch.setattr(config, "__file__", str(tmp_path / "config.pyc"))
    try:
        assert config.key_doc(SourceConfig, "url") is None
    finally:
        monkeypatch.undo()
        config._key_docs.cache_clear()
    assert config.key_doc(SourceConfig, "url") == URL_DOC
