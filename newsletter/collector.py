"""How the garbage collector runs while a large piece of work allocates: planning and
ranking thousands of profiles, and delivering thousands of messages.

Both make millions of short-lived objects beside a large, long-lived state (the
opened edition's corpus, matrices and caches). At the interpreter's defaults, the
collections those allocations trigger walk the long-lived objects again and again
to free next to nothing: a sixth of a delivery's CPU at 4,000 subscribers, and 1.9 s
of 14.8 s when ranking a million profiles with votes. One policy, shared by the
ranking and the delivery stages, so nesting them (planning inside ``send``) and
running them at once (threads of a web process) never leaves the collector set the
wrong way.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

GC_YOUNG = 50_000  # objects allocated between young collections while working (10,000
# let the caches that fill during a delivery reach the middle generation, whose passes
# over them were 40% of the collector's time: 0.15 s a process at 2,000 messages)

_gc_lock = threading.Lock()
_gc_users = 0
_gc_saved: tuple[int, ...] = ()


@contextmanager
def fewer_collections() -> Iterator[None]:
    """While the block runs: what exists already is moved out of the collector's way
    (``gc.freeze``), and young collections come every ``GC_YOUNG`` allocations instead
    of 700. The collector stays on, so cycles made meanwhile are still freed. Blocks
    running at once or nested share it: the first one in sets it, the last one out
    puts the thresholds back and unfreezes."""
    global _gc_users, _gc_saved
    with _gc_lock:
        if _gc_users == 0:
            _gc_saved = gc.get_threshold()
            gc.set_threshold(max(GC_YOUNG, _gc_saved[0]), *_gc_saved[1:])
        gc.freeze()  # (again when nested: what the outer one made since is kept too)
        _gc_users += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_users -= 1
            if _gc_users == 0:
                gc.set_threshold(*_gc_saved)
                gc.unfreeze()
