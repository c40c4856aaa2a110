"""Finished pictures written on threads of their own while the model works on the next.

Why: a folder job read, upscaled and wrote one picture after another, so with a fast model the
encoder set the pace: a 3840x2160 drawn PNG takes 0.19 s to write on one core here, where the
instant model's upscale of it takes 0.04 s. Pillow's encoders and zlib release the GIL, so a
write on another thread runs beside the model on another core, and with several cores several
writes run at once. Each write owns its picture (a copy the model's next call cannot touch);
how many run at once, and how many bytes of pictures wait, are bounded.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Hashable
from concurrent.futures import Future, ThreadPoolExecutor
from types import TracebackType

# Pictures waiting to be written, in bytes, beyond the one being made: a picture larger than
# this is written in the foreground, without a copy (a 12000x8000 output is 288 MB).
WAITING_BYTES = 256 << 20


def writer_threads() -> int:
    """Threads for writing: one per core, up to 8. With a fast model the writes are most of
    the CPU's work (24 3840x2160 PNGs of the instant model here: 4.8-5.1 s with one thread
    beside the model, 3.0-3.2 s with two on the two cores, 3.0 with three); with a slow one
    they take turns with it on the cores, work that had to be done anyway."""
    return max(1, min(8, os.cpu_count() or 1))


class BackgroundWrites:
    """Runs write callables on `threads` threads, at most `threads` at once and at most
    WAITING_BYTES of pictures held; reports each one's outcome in the order they were given.

    `submit` and `finish` return (key, error) for writes that have ended, error None for one
    that succeeded. Leaving the `with` block, after an error or an interrupt too, waits for the
    writes running (at most `threads`; each writes its file whole or not at all).
    """

    def __init__(self, threads: int, waiting_bytes: int = WAITING_BYTES) -> None:
        self.threads = threads
        self.waiting_bytes = waiting_bytes
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="write")
        self._pending: deque[tuple[Hashable, Future[None], int]] = deque()

    def fits(self, nbytes: int) -> bool:
        """Whether a picture of `nbytes` may be written in the background at all."""
        return nbytes <= self.waiting_bytes

    def submit(self, key: Hashable, write: Callable[[], None], nbytes: int
               ) -> list[tuple[Hashable, BaseException | None]]:
        """Start `write`, first waiting for earlier ones until it fits beside them."""
        ended = []
        while self._pending and (len(self._pending) >= self.threads
                                 or self._held() + nbytes > self.waiting_bytes):
            ended.append(self._collect())
        self._pending.append((key, self._pool.submit(write), nbytes))
        return ended + self._ended()

    def finish(self) -> list[tuple[Hashable, BaseException | None]]:
        """Wait for every write given so far."""
        return [self._collect() for _ in range(len(self._pending))]

    def _held(self) -> int:
        return sum(nbytes for _, _, nbytes in self._pending)

    def _ended(self) -> list[tuple[Hashable, BaseException | None]]:
        ended = []
        while self._pending and self._pending[0][1].done():
            ended.append(self._collect())
        return ended

    def _collect(self) -> tuple[Hashable, BaseException | None]:
        key, future, _ = self._pending.popleft()
        return key, future.exception()

    def __enter__(self) -> BackgroundWrites:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._pool.shutdown(wait=True)
