"""Compiled templates kept between runs, in Jinja's own bytecode cache.

Every command that renders compiles the templates again: Jinja parses each one and
generates and compiles Python from it, about 60 ms of the 80 ms that opening the
templates takes, on every ``send`` before its first message. What Jinja makes of a
given source, under given settings, never changes, so its code is kept where Jinja's
``FileSystemBytecodeCache`` keeps it for templates loaded from files: a directory of
the system's temporary directory that only this user may use (Jinja makes it with mode
0700 and refuses one that is not this user's). A source is found by its digest and the
settings of its environment, and Jinja checks both the source and its own and
Python's bytecode versions before it uses an entry; anything wrong with the directory
means compiling as before, never an error.
"""

from __future__ import annotations

import contextlib
import hashlib

import jinja2
from jinja2.bccache import Bucket, FileSystemBytecodeCache

# What the generated code depends on besides the source.
_SETTINGS = ("block_start_string", "block_end_string", "variable_start_string",
             "variable_end_string", "comment_start_string", "comment_end_string",
             "line_statement_prefix", "line_comment_prefix", "trim_blocks", "lstrip_blocks",
             "newline_sequence", "keep_trailing_newline", "optimized", "is_async")


def _cache() -> FileSystemBytecodeCache | None:
    """Jinja's cache in its directory, checked again at each use (this user's own,
    mode 0700): a long-running process must not trust a directory that was removed
    and made again by someone else since it last looked."""
    try:
        return FileSystemBytecodeCache()
    except (OSError, RuntimeError):  # no safe directory: compile every time
        return None


def _key(env: jinja2.Environment, source: str) -> str:
    # Jinja's own check of an entry covers its bytecode format and Python's version,
    # not Jinja's: the generated code may change with it.
    settings = [jinja2.__version__, type(env).__qualname__]
    settings += [repr(getattr(env, name, None)) for name in _SETTINGS]
    settings += [repr(env.autoescape), env.undefined.__qualname__,
                 repr(env.finalize is not None), *sorted(map(repr, env.extensions))]
    digest = hashlib.sha256("\0".join([*settings, source]).encode("utf-8", "surrogatepass"))
    return "newsletter-" + digest.hexdigest()


def from_source(env: jinja2.Environment, source: str) -> jinja2.Template:
    """``env.from_string(source)``, the same template (and the same syntax errors),
    compiled once per source and settings on this machine rather than once per run."""
    cache = _cache()
    if cache is None:
        return env.from_string(source)
    name = _key(env, source)
    try:
        bucket = cache.get_bucket(env, name, None, source)
    except Exception:  # noqa: BLE001 - a damaged entry (Jinja unpickles its checksum):
        # compiled again and written over, never an error of the render
        bucket = Bucket(env, cache.get_cache_key(name), cache.get_source_checksum(source))
    code = bucket.code
    if code is None:
        code = bucket.code = env.compile(source)  # raises as from_string does
        with contextlib.suppress(OSError):
            cache.set_bucket(bucket)
    return env.template_class.from_code(env, code, env.make_globals(None), None)
