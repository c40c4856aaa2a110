"""Large frames converted in row bands, one per core.

OpenCV runs the conversions at the model's edge and at the encoder's (float planes to pixels,
RGB to Y'CbCr) on one core: `cv2.setNumThreads(1)` timed them the same. With a fast model
(a GPU, the Neural Engine) they sit between its calls, so a host's other cores should share
them. `in_bands` cuts a frame into horizontal bands, at most one per core, and converts them
side by side: the calling thread takes one band and worker threads the process shares take
the others (OpenCV lets go of the GIL while it works).

Only where there are cores to spare: the job's own threads (decoding, the model, encoding) and
ffmpeg's already keep two or three busy. On the 2-core development machine bands gave nothing
in whole jobs (bench_fast_path.py, three rounds each: 540p -> 4K 14.5-14.7 frames/s without,
13.6-13.9 with; 1080p -> 4K 9.1-9.4 against 9.0-9.7), though a conversion alone on idle cores
took 6.6 ms instead of 8.9 (4K RGB to Y'CbCr) and 3.7 instead of 4.7 (fp16 planes to uint8).
So hosts of fewer than MIN_CORES run every frame in one piece, as do small frames and any
process where no worker thread could start (an address-space limit leaves no room for their
stacks): a frame is never held up for one.
"""

from __future__ import annotations

import functools
import os
import queue
import threading
from collections.abc import Callable
from itertools import pairwise

MIN_CORES = 4
# The conversions stream memory, which a few cores saturate; more bands would only add threads
# to every process (a Ray worker per core, each with a worker thread per core).
MAX_BANDS = 8
BAND_MIN_PIXELS = 1 << 20  # below a megapixel a frame's conversion is a millisecond or two
BAND_MIN_ROWS = 64  # fewer rows a band and the hand-offs between threads start to show

_worker = threading.local()


def cores() -> int:
    """The cores this process may run on (its affinity, where the OS tells)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


class _Workers:
    """Threads that run bands, started once per process; as many as could start."""

    def __init__(self, wanted: int) -> None:
        self._jobs: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self.count = 0
        for _ in range(wanted):
            thread = threading.Thread(target=self._serve, name=f"bands-{self.count}",
                                      daemon=True)
            try:
                thread.start()
            except RuntimeError:  # no room for another thread's stack
                break
            self.count += 1

    def _serve(self) -> None:
        _worker.active = True
        while True:
            self._jobs.get()()

    def submit(self, job: Callable[[], None]) -> None:
        self._jobs.put(job)


@functools.cache
def _workers(pid: int) -> _Workers:
    """This process's workers (a forked child starts its own: it inherits none of the threads);
    none below MIN_CORES."""
    return _Workers(min(cores(), MAX_BANDS) - 1 if cores() >= MIN_CORES else 0)


def band_edges(rows: int, width: int, step: int = 1, most: int | None = None) -> list[int]:
    """Where the bands of a `rows` x `width` frame begin and end: [0, ..., rows], every inner
    edge a multiple of `step` (a chroma block's height, for one); at most `most` bands
    (default: one per core, at most MAX_BANDS)."""
    if rows * width < BAND_MIN_PIXELS:
        return [0, rows]
    most = min(cores(), MAX_BANDS) if most is None else most
    count = max(1, min(most, rows // BAND_MIN_ROWS))
    inner = sorted({round(rows * k / count / step) * step for k in range(1, count)})
    return [0, *(edge for edge in inner if 0 < edge < rows), rows]


def in_bands(rows: int, width: int, work: Callable[[int, int], object], step: int = 1) -> None:
    """work(top, bottom) over bands that cover rows [0, rows), side by side where it pays.

    `work` must write only its own rows, and may run twice on them: a band that fails on a
    worker thread is done again on the calling thread, whose error, if it fails there too, is
    raised after every band has ended. A band that bands again runs in one piece.
    """
    if rows * width < BAND_MIN_PIXELS or getattr(_worker, "active", False):
        work(0, rows)
        return
    workers = _workers(os.getpid())  # started by the first large frame
    if workers.count == 0:
        work(0, rows)
        return
    spans = list(pairwise(band_edges(rows, width, step, most=workers.count + 1)))
    failed: list[tuple[int, int]] = []
    left = len(spans) - 1
    all_done = threading.Event()
    lock = threading.Lock()

    def band(top: int, bottom: int) -> None:
        nonlocal left
        try:
            work(top, bottom)
        except BaseException:  # done again on the calling thread
            failed.append((top, bottom))
        finally:
            with lock:
                left -= 1
                if left == 0:
                    all_done.set()

    for top, bottom in spans[1:]:
        workers.submit(functools.partial(band, top, bottom))
    try:
        work(*spans[0])
    finally:
        if len(spans) > 1:
            all_done.wait()
    for top, bottom in sorted(failed):
        work(top, bottom)
        # It failed on a worker only: under a limit on address space a new thread's first
        # allocation can find no room (glibc gives each thread's heap 64 MB of it) where this
        # thread's heap has some. Such workers would fail every frame: none from now on.
        workers.count = 0
