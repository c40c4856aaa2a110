"""An executor loaded, run and closed on one thread of its own, whichever threads call it.

Why: ncnn and PyTorch parallelise with OpenMP, and libgomp keeps a team of worker threads for
each thread that calls into it. A model loaded on one thread and run on another leaves two
teams, more OpenMP threads than cores, and then libgomp stops spinning between parallel regions:
its workers sleep and wake through the kernel between the model's layers. A video job loads the
model on the main thread and runs it on its transform thread, so it paid that. Measured with
x4plus-anime on 320x180 frames, 2 threads on 2 cores, fresh processes: loaded on one thread and
run on another, 3,000 voluntary context switches per 4 frames and the cores 87% busy; loaded
and run on one thread, 66 switches, 98% busy and 6% less time.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import numpy as np

from upscaler.executors.base import Executor
from upscaler.pixels import run_pixels

T = TypeVar("T")


class ModelThreadExecutor:
    """`create()`'s executor, with every call into it made on one thread kept for it.

    Other attributes (precision, device, can_reshape...) read through to that executor. A call
    waits for its result; an interrupt of the waiting thread leaves the model's call to finish
    on its own thread, which the interpreter waits for at exit rather than tear the runtime
    down under it (that crashes ncnn and ONNX Runtime).
    """

    def __init__(self, create: Callable[[], Executor]) -> None:
        # One worker, never idle-timed-out: the same OS thread for the executor's whole life.
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")
        try:
            self._inner = self._call(create)
        except BaseException:
            self._thread.shutdown(wait=False)
            raise
        self.name: str = self._inner.name
        self.scale: int = self._inner.scale
        self._closed = False

    def _call(self, function: Callable[..., T], *args: Any) -> T:
        return self._thread.submit(function, *args).result()

    @property
    def fixed_tile(self) -> tuple[int, int] | None:
        return self._inner.fixed_tile  # changes when a reshapable executor is reshaped

    def __getattr__(self, attribute: str) -> Any:
        if attribute.startswith("_"):  # no read-through before __init__ has set _inner
            raise AttributeError(attribute)
        return getattr(self._inner, attribute)

    def run(self, batch: np.ndarray) -> np.ndarray:
        return self._call(self._inner.run, batch)

    def run_pixels(self, tiles: np.ndarray) -> np.ndarray:
        # The conversions run on the model's thread too: one call, one hop between threads.
        return self._call(run_pixels, self._inner, tiles)

    def reshape(self, height: int, width: int) -> None:
        self._call(self._inner.reshape, height, width)  # type: ignore[attr-defined]

    def release_memory(self) -> bool:
        """The executor's release_memory, on its own thread."""
        return self._call(self._inner.release_memory)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._call(self._inner.close)
        finally:
            self._thread.shutdown(wait=True)

    def __enter__(self) -> ModelThreadExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
