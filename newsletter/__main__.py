"""``python -m newsletter`` and the ``newsletter`` command run the CLI."""

import gc


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
    finally:
        gc.freeze()
        gc.enable()
    main()


if __name__ == "__main__":
    run()
