"""``scipy.sparse`` for the ranking, imported without the numpy tools it would drag in.

scipy (1.14 and later) carries its own copy of ``array_api_compat``, whose numpy
namespace is a clone of numpy made with ``from numpy import *`` and a ``getattr`` of
every name ``dir(numpy)`` lists. numpy loads its submodules on first use, so the clone
loads them all: ``f2py`` (and ``charset_normalizer`` when installed), ``testing`` (and
``unittest``), ``ma``, ``polynomial``, ``char``, ``rec``... On this project's machines
that was 0.11-0.2 s of every command that ranks (about 2% of sending an edition of
4,000), for modules the ranking never calls: it uses sparse matrices, nothing of the
array-API layer. So scipy.sparse is first imported while numpy's ``__all__`` and
``__dir__`` leave those names out; both are put back at once, and numpy still loads any
of them for whoever asks later (``np.testing``, ``import numpy.ma``).

The ranking modules import ``sparse`` from here, so the first of them decides."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

# numpy's lazily loaded submodules that the clone would load and the ranking never uses
UNUSED = ("f2py", "testing", "ma", "polynomial", "char", "rec", "strings", "ctypeslib",
          "matlib", "core")


@contextmanager
def numpy_without_unused() -> Iterator[None]:
    """numpy's ``__all__`` and ``dir()`` without the ``UNUSED`` submodules not yet
    loaded, for the duration; restored as they were however the block ends."""
    names = vars(np)
    hidden = {n for n in UNUSED if f"numpy.{n}" not in sys.modules}
    saved_all = names.get("__all__")
    saved_dir = names.get("__dir__")
    if not hidden or not isinstance(saved_all, list):
        yield
        return

    def listed() -> list[str]:
        full = saved_dir() if callable(saved_dir) else list(names)
        return [n for n in full if n not in hidden]

    names["__all__"] = [n for n in saved_all if n not in hidden]
    names["__dir__"] = listed
    try:
        yield
    finally:
        names["__all__"] = saved_all
        if saved_dir is None:
            del names["__dir__"]
        else:
            names["__dir__"] = saved_dir


def distinct(values: np.ndarray) -> np.ndarray:
    """``np.unique(values)``: the distinct values, sorted, as a flat array. Not
    ``np.unique`` itself, which asks ``numpy.ma`` whether the array is masked and so
    loads ``numpy.ma`` (``UNUSED`` above) in every command that plans an edition."""
    flat = np.sort(values, axis=None)
    if len(flat) < 2:
        return flat
    return flat[np.concatenate(([True], flat[1:] != flat[:-1]))]


if "scipy.sparse" in sys.modules:
    from scipy import sparse
else:
    with numpy_without_unused():
        from scipy import sparse

__all__ = ["distinct", "sparse"]
