"""A folder's next picture read on a thread of its own while the model works on this one.

Why: with a fast model and writes on threads of their own (writes.py), reading and decoding
each picture was what the model's thread still did one after another with the model: a 1080p
PNG takes about 30 ms to read here, more than the instant model's upscale of it. Pillow's
decoders and zlib release the GIL, so the read of the next picture runs beside the model on
another core. One picture is read ahead, not more: inputs are a sixteenth of a 4x output's
size, but a folder of large scans should not hold many of them at once.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


@contextlib.contextmanager
def read_ahead(items: Iterable[T], read: Callable[[T], R]
               ) -> Iterator[Iterator[tuple[T, Future[R]]]]:
    """Yields an iterator of (item, future of `read(item)`), in order, the next item's read
    started before the current one is handed out. `future.result()` raises what the read
    raised, so each item's failure is the caller's to report where it stands in the order.

    Leaving the `with` block, early too (a full disk, an interrupt), drops a read not yet
    started and waits for the one under way.
    """
    pool = ThreadPoolExecutor(1, thread_name_prefix="read")

    def ordered() -> Iterator[tuple[T, Future[R]]]:
        started = ((item, pool.submit(read, item)) for item in items)  # lazily, one by one
        current = next(started, None)
        while current is not None:
            following = next(started, None)  # its read begins before `current` is handed out
            yield current
            current = following

    try:
        yield ordered()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
