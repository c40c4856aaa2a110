"""The pipeline's executor runs on one thread of its own, whichever thread calls it.

ncnn's OpenMP runtime (libgomp) starts a team of workers for each thread that calls into it;
two teams on a 2-core machine stop its workers spinning and cost 6% (model_thread.py). These
tests count the process's OS threads around real ncnn runs.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from upscaler.config import Options
from upscaler.errors import ExecutorError
from upscaler.executors.base import ExecutorOptions
from upscaler.executors.model_thread import ModelThreadExecutor
from upscaler.executors.registry import create_executor, unavailable_reason
from upscaler.models.registry import resolve_model
from upscaler.pipeline import Upscaler

pytestmark = [
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="counts /proc/self/task"),
    pytest.mark.skipif(unavailable_reason("ncnn") is not None, reason="needs ncnn"),
]
FAST = "realesr-animevideov3"


def os_threads() -> int:
    return len(list(Path("/proc/self/task").iterdir()))


def settled_threads() -> int:
    """The thread count once threads that earlier tests ended are gone."""
    count = os_threads()
    for _ in range(25):
        time.sleep(0.2)
        if os_threads() == count:
            break
        count = os_threads()
    return count


def threads_left(at_most: int) -> int:
    """The thread count, given up to 5 s to fall to `at_most`: a team's workers exit shortly
    after the thread they worked for."""
    deadline = time.monotonic() + 5
    while os_threads() > at_most and time.monotonic() < deadline:
        time.sleep(0.05)
    return os_threads()


def threads_added_by_a_second_caller(run: Callable[[], object]) -> int:
    """OS threads that exist while another thread, which has just called `run`, still lives
    (libgomp frees a team when its calling thread ends), less that thread itself."""
    run()  # the first caller's team, if any, is made here
    before = os_threads()
    called, finish = threading.Event(), threading.Event()

    def second() -> None:
        run()
        called.set()
        finish.wait(30)

    worker = threading.Thread(target=second)
    worker.start()
    try:
        assert called.wait(60)
        return os_threads() - before - 1
    finally:
        finish.set()
        worker.join()


def tile() -> np.ndarray:
    return np.random.default_rng(1).random((1, 3, 24, 32), dtype=np.float32)


def test_a_bare_ncnn_called_from_a_second_thread_starts_a_second_team() -> None:
    # What the fix is for: without it the second caller brings its own OpenMP worker.
    executor = create_executor("ncnn", resolve_model(FAST), ExecutorOptions(threads=2))
    with executor:
        assert threads_added_by_a_second_caller(lambda: executor.run(tile())) == 1


def test_the_model_thread_keeps_one_team_and_the_same_output() -> None:
    model = resolve_model(FAST)
    with create_executor("ncnn", model, ExecutorOptions(threads=2)) as bare:
        expected = bare.run(tile())
    with ModelThreadExecutor(
            lambda: create_executor("ncnn", model, ExecutorOptions(threads=2))) as executor:
        assert (executor.name, executor.scale, executor.fixed_tile) == ("ncnn", 4, None)
        assert executor.precision == "fp16"  # read through to the executor
        assert threads_added_by_a_second_caller(lambda: executor.run(tile())) == 0
        np.testing.assert_array_equal(executor.run(tile()), expected)


def test_the_pipelines_upscaler_runs_its_model_on_one_thread() -> None:
    frame = np.random.default_rng(2).integers(0, 256, (24, 32, 3), dtype=np.uint8)
    with Upscaler(Options(executor="ncnn", model=FAST, threads=2), "video") as upscaler:
        assert threads_added_by_a_second_caller(lambda: upscaler.upscale_frame(frame)) == 0
        assert upscaler.upscale_frame(frame).shape == (96, 128, 3)


def test_errors_come_back_to_the_caller_and_close_ends_the_thread() -> None:
    before = settled_threads()
    onnx_model = replace(resolve_model(FAST), kind="onnx", path=Path("x.onnx"))
    with pytest.raises(ExecutorError, match=r"needs ncnn \.param/\.bin"):
        ModelThreadExecutor(lambda: create_executor("ncnn", onnx_model, ExecutorOptions()))
    assert threads_left(before) <= before  # a failed load leaves no thread behind
    executor = ModelThreadExecutor(
        lambda: create_executor("ncnn", resolve_model(FAST), ExecutorOptions(threads=2)))
    executor.run(tile())
    assert os_threads() > before
    executor.close()
    executor.close()  # a second close does nothing
    assert threads_left(before) <= before  # the model thread, its team: gone
