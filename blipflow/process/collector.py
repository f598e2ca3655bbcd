"""How a long-running process keeps Python's cyclic garbage collector off what it loaded at start."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def collector_spares_what_is_already_there() -> Iterator[None]:
    """The collector leaves out the objects that exist now (the imports: ~90k objects in ingest) until the
    end. Ingest holds batches between flushes, which makes the collector run full passes now and then, on
    the reader's thread with the GIL held, and each went through every object of the process: 0.7 s per
    200k events (measured, `bench/ingest.py`), where the reader's own work is ~2.3 s."""
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
