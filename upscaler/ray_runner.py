"""Run a batch on a Ray cluster: video segments and image files become Ray tasks.

Only the upscaling moves. The driver (the `upscale` process) plans every job, keeps each
video's work folder and manifest, and joins and muxes the segments, as a local run does
(video.upscale_video, with this module's segment encoder). A segment task needs nothing but the
source's path, its frame range and the settings: it reads the source itself and writes its
segment atomically into the work folder, so that folder and the source must be on storage
every node sees at the same path. Each worker process keeps the last Upscaler it built, so a
model loads once per worker, not once per task.

Ray schedules and retries; we add no scheduler. A task whose worker or node dies is run again
(MAX_RETRIES times); an error of the task's own (an unreadable frame) is not retried and fails
its job with its reason, and the batch goes on with the next job.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from upscaler.config import Options, RaySettings
from upscaler.errors import (
    ClusterError,
    MediaError,
    OutputExistsError,
    UpscalerError,
    UsageError,
)
from upscaler.executors.registry import canonical_name
from upscaler.heap import environment, keep_frame_buffers
from upscaler.job.plan import Task, video_settings
from upscaler.media.video.encoding import VideoSettings
from upscaler.media.video.probe import VideoInfo
from upscaler.media.video.segments import Segment, encode_segments
from upscaler.pipeline import (
    FolderOutcomes,
    Progress,
    ProgressCallback,
    Upscaler,
    Upscalers,
    file_todo,
    folder_todo,
    stage_watch,
    upscale_file,
)

INSTALL_HINT = '--ray needs Ray, which is not installed: pip install "upscaler[ray]"'
MAX_RETRIES = 3
CONNECT_TIMEOUT = 5.0  # seconds to wait for a cluster's address to answer
# Fault injection for the tests: where this names a folder, a segment task that has upscaled a
# frame takes one file out of it, if one is left, and ends its worker process on the spot, as a
# crash would. Each file is one crash.
CRASHES = "UPSCALER_RAY_CRASHES"
# Executors that run on CUDA when Ray gives their task a GPU.
_GPU_EXECUTORS = ("auto", "onnxruntime", "torch")
# The options an Upscaler is built from; a worker reuses its model while these stay the same.
def require_ray() -> None:
    """UsageError (exit 2) with the install command when Ray cannot be imported."""
    try:
        import ray  # noqa: F401
    except ImportError as e:
        raise UsageError(INSTALL_HINT) from e


class RayRunner:
    """A run's connection to Ray, as a context manager; called like pipeline.run_task.

    Joins `settings.address`, or starts a local Ray (and stops it at the end) without one. In a
    process already connected (a notebook, the tests) it uses that connection and leaves it.
    """

    def __init__(self, settings: RaySettings) -> None:
        self.settings = settings
        self._started = False
        self._gpus = 0.0
        self._remote: dict[Callable[..., Any], Any] = {}

    def __enter__(self) -> RayRunner:
        import ray

        if not ray.is_initialized():
            where = self.settings.address or "a local Ray"
            local = {} if self.settings.address else {"include_dashboard": False}
            # Ray sets a SIGTERM handler of its own; ours stops the job as for Ctrl-C, says
            # what it kept, and leaves by __exit__, which stops a local Ray.
            sigterm = signal.getsignal(signal.SIGTERM)
            try:
                _check_reachable(self.settings.address)
                ray.init(address=self.settings.address or _local(), log_to_driver=False,
                         logging_level=logging.ERROR, **local)
            except (ConnectionError, RuntimeError, ValueError) as e:
                raise ClusterError(f"cannot start or join {where}: {_first_line(e)}") from e
            finally:
                if threading.current_thread() is threading.main_thread():
                    signal.signal(signal.SIGTERM, sigterm)
            self._started = True
        self._gpus = ray.cluster_resources().get("GPU", 0.0)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._started:
            import ray

            ray.shutdown()

    def __call__(self, task: Task, progress: ProgressCallback) -> Progress:
        """Run one planned task on the cluster and return its counters, as run_task does."""
        if task.kind == "folder":
            return self._folder(task, progress)
        state = file_todo(task)
        if state.skipped:
            return state
        if task.kind == "video":
            return self._video(task, state, progress)
        for _, result in self._each([self._call(_upscale_file, task.options,
                                                task.input.resolve(), task.output.resolve())]):
            if isinstance(result, BaseException):
                raise _reason(result, str(task.input))
        state.done = 1
        progress(state)
        return state

    def _folder(self, task: Task, progress: ProgressCallback) -> Progress:
        todo, state = folder_todo(task)
        if not todo:  # no bar for nothing to do: the summary says what was skipped
            return state
        progress(state)
        calls = [self._call(_upscale_file, task.options, src.resolve(), dst.resolve())
                 for src, dst in todo]
        outcomes = FolderOutcomes(state, task.output)
        # A full disk starts no more pictures; those being written end on their own (a
        # cancelled worker killed mid-write would leave its temporary file).
        for n, result in self._each(calls, enough=lambda: outcomes.full is not None):
            error = None
            if isinstance(result, BaseException):
                error = _reason(result, str(todo[n][0]))
                if not isinstance(error, MediaError | OutputExistsError | ClusterError):
                    raise error  # the model or executor: it would fail every file alike
            outcomes.add(error)
            progress(state)
        return outcomes.finish()

    def _video(self, task: Task, state: Progress, progress: ProgressCallback) -> Progress:
        from upscaler.video import upscale_video

        settings = video_settings(task.options)
        # One worker builds the model first: the segments' identity (for resume) and the
        # scale are the workers', not this machine's, which may have no GPU or another RAM.
        (_, described), = self._each([self._call(_describe, task.options)])
        if isinstance(described, BaseException):
            raise _reason(described, f"loading the model for {task.input}")
        identity, scale = described

        def report(done: int, total: int) -> None:
            state.done, state.total = done, total
            progress(state)

        def encode(info: VideoInfo, segments: Sequence[Segment], paths: Sequence[Path],
                   container: str, on_frames: Callable[[int], None],
                   on_segment: Callable[[Segment, Path], None]) -> None:
            # Paths as every node sees them, not relative to this process's folder.
            info = dataclasses.replace(info, path=info.path.resolve())
            calls = [self._call(_make_segment, task.options, info, segment, settings, container,
                                path.resolve()) for segment, path in zip(segments, paths,
                                                                         strict=True)]
            for n, result in self._each(calls):
                segment = segments[n]
                if isinstance(result, BaseException):
                    raise _reason(result, f"segment {segment.index + 1} of {task.input}")
                _check_same(identity, result["identity"], task.input)
                state.frames_reused += result["frames_reused"]
                state.tiles_reused += result["tiles_reused"]
                state.tiles += result["tiles"]
                state.model_pixels += result["model_pixels"]
                state.full_pixels += result["full_pixels"]
                on_frames(segment.count)
                on_segment(segment, paths[n])

        upscale_video(task.input, task.output, None, settings, progress=report,
                      identity=identity, scale=scale, encode=encode,
                      watch=stage_watch(task.input, progress))
        return state

    def _call(self, fn: Callable[..., Any], options: Options, *args: Any) -> Callable[[], Any]:
        """A call of `fn` as a Ray task with the resources `options`' executor needs; it starts
        when the returned function is called."""
        import ray

        if fn not in self._remote:
            self._remote[fn] = ray.remote(fn)
        device = (options.device or "").lower()
        gpu = device.startswith("cuda") or (not device and self._gpus > 0 and
                                            canonical_name(options.executor) in _GPU_EXECUTORS)
        cpus = 1 if gpu else self.settings.cpus
        if not gpu and options.threads is None:
            options = dataclasses.replace(options, threads=cpus)  # no more than it was given
        # The worker processes start with one heap for all their threads (heap.py); Ray adds
        # these to the job's own environment variables.
        remote = self._remote[fn].options(num_cpus=cpus, num_gpus=1 if gpu else 0,
                                          max_retries=MAX_RETRIES,
                                          runtime_env={"env_vars": environment()})
        return lambda: remote.remote(options, *args)

    def _each(self, calls: Sequence[Callable[[], Any]],
              enough: Callable[[], bool] = lambda: False) -> Iterator[tuple[int, Any]]:
        """Start `calls` (at most settings.workers at a time) and yield (index, result) as each
        ends; the result is the Ray error where the task failed. Once `enough()` is true no
        more are started, and those running end on their own. What is still running when the
        caller stops (an error, Ctrl-C) is cancelled."""
        import ray
        from ray.exceptions import RayError

        limit = self.settings.workers or len(calls)
        pending: dict[Any, int] = {}
        started = 0
        try:
            while (started < len(calls) and not enough()) or pending:
                while started < len(calls) and len(pending) < limit and not enough():
                    pending[calls[started]()] = started
                    started += 1
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=0)
                if not ready:
                    # Waiting here, not in Ray: a signal that comes while Ray waits turns into
                    # a bare KeyboardInterrupt, and SIGTERM's exit code would be lost.
                    time.sleep(0.05)
                for ref in ready:
                    n = pending.pop(ref)
                    try:
                        result = ray.get(ref)
                    except RayError as e:
                        result = e
                    yield n, result
        finally:
            for ref in pending:
                ray.cancel(ref, force=True)
            for ref in pending:
                # Read, so that Ray does not print the errors of the stopped tasks as unhandled.
                with contextlib.suppress(RayError):
                    ray.get(ref, timeout=5)


def _local() -> str | None:
    """ray.init's address for a run without one: RAY_ADDRESS where the user set it, else a new
    local Ray. (Without an address ray.init joins any Ray it finds running on this machine,
    another user's or another run's, which `--ray` alone does not promise.)"""
    return None if os.environ.get("RAY_ADDRESS") else "local"


def _check_reachable(address: str | None) -> None:
    """ClusterError at once where a HOST:PORT address does not answer: Ray itself would retry
    for minutes, deaf to Ctrl-C."""
    host, _, port = (address or "").rpartition(":")
    if not host or "://" in address or not port.isdigit():
        return  # none (a local Ray), "auto", or a ray:// client address, which Ray times out
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT).close()
    except OSError as e:
        raise ClusterError(f"cannot reach Ray at {address}: {e.strerror or e}") from e


def _reason(error: BaseException, what: str) -> UpscalerError:
    """The error a failed task stands for: its own where it raised one of ours."""
    from ray.exceptions import RayTaskError

    if isinstance(error, RayTaskError):
        cause = error.cause
        if isinstance(cause, UpscalerError):
            return cause
        return ClusterError(f"{what} failed on a worker: {type(cause).__name__}: "
                            f"{_first_line(cause)}")
    return ClusterError(f"{what} failed on each of {MAX_RETRIES + 1} tries: "
                        f"{_first_line(error)}")


def _check_same(identity: Mapping[str, str], worker: Mapping[str, str], src: Path) -> None:
    """ClusterError where a worker's model differs from the one the job's identity describes:
    segments of one output must not come from two executors or precisions."""
    differ = sorted(k for k in set(identity) | set(worker) if identity.get(k) != worker.get(k))
    if differ:
        shown = ", ".join(f"{k} {identity.get(k)} vs {worker.get(k)}" for k in differ)
        raise ClusterError(f"the workers do not all run the same model ({shown}); give "
                           "--executor, --precision and --tile to make them agree", src)


def _first_line(error: BaseException) -> str:
    return next((line.strip() for line in str(error).splitlines() if line.strip()),
                type(error).__name__)


# What runs on the workers. Module-level functions, so that Ray ships them by name.

# This worker process's upscaler, kept for its next task with the same model options.
_UPSCALERS = Upscalers()


def _upscaler(options: Options, video: bool) -> Upscaler:
    """This worker process's Upscaler for `options`, built once and kept for the next task."""
    keep_frame_buffers()  # what its environment set at start (heap.environment), again
    return _UPSCALERS.get(options, "video" if video else "image")


def _describe(options: Options) -> tuple[dict[str, str], float]:
    """(Worker) The identity and scale of the video Upscaler for `options`."""
    up = _upscaler(options, video=True)
    return up.identity(), options.scale or up.model_scale


def _make_segment(options: Options, info: VideoInfo, segment: Segment,
                  settings: VideoSettings, container: str, path: Path) -> dict[str, Any]:
    """(Worker) Upscale one segment of the source into `path`, written atomically; returns
    the worker's identity and what held-tile reuse saved in the segment."""
    up = _upscaler(options, video=True)
    frames = up.frames
    before = frames.frames_reused, frames.tiles_reused, frames.tiles_run
    pixels_before = frames.pixels_run, frames.full_pixels
    transform = up.upscale_frame
    crashes = os.environ.get(CRASHES)
    if crashes:
        transform = _crashing(transform, Path(crashes))
    encode_segments(info, [segment], transform, settings, [path], container,
                    on_segment_start=up.start_segment)
    reused = frames.tiles_reused - before[1]
    return {"identity": up.identity(), "frames_reused": frames.frames_reused - before[0],
            "tiles_reused": reused,
            "tiles": reused + frames.tiles_run - before[2] if frames.reuse else 0,
            "model_pixels": frames.pixels_run - pixels_before[0],
            "full_pixels": frames.full_pixels - pixels_before[1]}


def _upscale_file(options: Options, src: Path, dst: Path) -> None:
    """(Worker) Upscale the image `src` to `dst`."""
    upscale_file(lambda: _upscaler(options, video=False), src, dst, options)


def _crashing(transform: Callable[[np.ndarray], np.ndarray],
              crashes: Path) -> Callable[[np.ndarray], np.ndarray]:
    def crash_after(frame: np.ndarray) -> np.ndarray:
        out = transform(frame)
        for token in sorted(crashes.glob("*")):
            try:
                token.unlink()  # of workers racing for one token, one wins
            except FileNotFoundError:
                continue
            os._exit(1)
        return out

    return crash_after
