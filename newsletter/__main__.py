"""``python -m newsletter`` and the ``newsletter`` command run the CLI."""

import atexit
import gc
import os
import sys
import threading


def run() -> None:
    """The CLI in a process of its own, started without the garbage collector's full
    passes over the imported modules: loading them allocates a few hundred thousand
    objects that live as long as the process, and each full pass the allocations
    trigger walks all of them (~20-60 ms each) to free next to nothing. Frozen once
    loaded, later passes skip them too (and forked delivery processes share their
    pages). Not in ``cli.main``, which tests call in one long process."""
    gc.disable()
    try:
        from newsletter.cli import main
    except KeyboardInterrupt:  # Ctrl-C while loading: nothing was begun, nothing to
        sys.stderr.flush()      # close, no traceback to show; 130 as for a stopped send
        os._exit(130)
    finally:
        gc.freeze()
        gc.enable()
    try:
        main()
    except SystemExit as exc:
        finish(exc.code)
    finish(0)


def finish(code: object) -> None:
    """End the process as the interpreter would, without its last step: freeing every
    object one by one. After sending an edition that step took 0.25-0.45 s (the
    opened edition, the ranking's caches, every imported module), for memory the
    operating system takes back at once. What the interpreter's exit does that
    matters is done first: databases closed (SQLite folds its write-ahead log into
    the file, so a plain copy of ``subscribers.db`` has everything), the exit handlers
    (logging's flush among them), the output flushed. A thread still running (none of
    ours is) gets the ordinary exit, which waits for it."""
    if code is None:  # as ``sys.exit`` takes them
        code = 0
    elif not isinstance(code, int):
        print(code, file=sys.stderr)
        code = 1
    if any(t is not threading.main_thread() and not t.daemon and t.is_alive()
           for t in threading.enumerate()):
        sys.exit(code)
    from newsletter.store.db import dispose_all

    dispose_all()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (`| head`): nothing more to say
            code = code or 120
    os._exit(int(code))


if __name__ == "__main__":
    run()
