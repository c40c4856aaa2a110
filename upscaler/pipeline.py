"""Jobs end to end: reader -> channels -> tiler/executor/stitcher -> resize -> writer.

This module only wires the stages together; each stage lives in its own module and knows nothing
of the others. Progress is reported through a callback so that the library never draws anything.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import itertools
import os
from collections.abc import Callable, Hashable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from upscaler.channels import from_model_output, resize_to_scale, settle_alpha, to_model_input
from upscaler.config import Job, Options, parse_colour
from upscaler.errors import (
    DiskFilledError,
    Interrupted,
    MediaError,
    OutputExistsError,
    PlanError,
    UpscalerError,
    is_out_of_memory,
    ran_out,
)
from upscaler.executors.base import Executor, ExecutorOptions
from upscaler.executors.model_thread import ModelThreadExecutor
from upscaler.executors.registry import create_executor, tile_budget
from upscaler.executors.tta import TTAExecutor
from upscaler.frame_upscaler import FrameUpscaler
from upscaler.job.plan import Task, plan_jobs, video_settings
from upscaler.job.space import is_disk_full
from upscaler.media.images import (
    Image,
    check_size,
    check_storable,
    read_image,
    remove_unfinished,
    write_image,
    write_pages,
)
from upscaler.media.video.stage_times import StageTimes
from upscaler.models.registry import MediaKind, ModelRef, model_for, resolve_model
from upscaler.picture_share import PictureShare
from upscaler.reads import read_ahead
from upscaler.reuse import TileReuse
from upscaler.version import __version__
from upscaler.writes import BackgroundWrites, writer_threads


@dataclass
class Progress:
    """What a job reports: `unit` is "image" or "frame"; `total` may be 0 when unknown.

    With held-frame reuse (video): `frames_reused` frames and `tiles_reused` of `tiles` tiles
    took stored outputs instead of a model pass; `tiles` stays 0 when reuse is off. The model
    ran on `model_pixels` input pixels where it would have on `full_pixels` without reuse
    (dirty regions recompute parts of tiles): `computed_share`.
    """

    unit: str
    total: int
    done: int = 0
    skipped: int = 0
    label: str = ""
    failures: list[UpscalerError] = field(default_factory=list)
    frames_reused: int = 0
    tiles_reused: int = 0
    tiles: int = 0
    # Where the time went, for reports and benchmarks (bench/bench_job.py): each video stage's
    # busy and waiting seconds, and the model's work (see FrameUpscaler's counters).
    stages: StageTimes | None = None
    frame_pixels: int = 0
    planned_pixels: int = 0
    model_pixels: int = 0
    model_seconds: float = 0.0
    full_pixels: int = 0
    # How far the work has come beyond `finished`, in units: the share (0 to 1) of the picture
    # or frame under way that the model has done (one that takes minutes moves its bar before
    # it ends), and a folder's pictures past the model that wait for their writes.
    part: float = 0.0
    # A step before the work itself, whose own counters these are (a video's decoding pass
    # and disk space trial, in frames: scan.CHECKING, space.ESTIMATING); "" for the work.
    stage: str = ""

    def count_work(self, frames: FrameUpscaler) -> None:
        self.frame_pixels, self.planned_pixels = frames.frame_pixels, frames.planned_pixels
        self.model_pixels, self.model_seconds = frames.pixels_run, frames.executor_seconds
        self.full_pixels = frames.full_pixels

    def count_reuse(self, frames: FrameUpscaler) -> None:
        self.frames_reused, self.tiles_reused = frames.frames_reused, frames.tiles_reused
        self.tiles = frames.tiles_run + frames.tiles_reused
        self.model_pixels, self.full_pixels = frames.pixels_run, frames.full_pixels

    @property
    def computed_share(self) -> float:
        """The model's work done over what it would have been without reuse (1.0 before any
        frame; above 1 after retries for memory)."""
        return self.model_pixels / self.full_pixels if self.full_pixels else 1.0

    @property
    def finished(self) -> int:
        """Units done or failed: how far a progress bar has come."""
        return self.done + len(self.failures)


ProgressCallback = Callable[[Progress], None]


def _ignore(_: Progress) -> None:
    pass


class Upscaler:
    """One model on one executor, applied to whole frames: the stages between reader and writer.

    Holds the executor (and so the loaded model) for the life of a job, so that a folder of images
    or the frames of a video pay for loading once.
    """

    def __init__(self, options: Options, media: MediaKind = "image", *,
                 reuse: bool = False) -> None:
        """media: what the frames are, which picks the default model; reuse: give held tiles
        their stored output, and recompute only the dirty regions of changed ones, within a
        video segment or the frames of an animated picture (see reuse.py, dirty.py)."""
        self.options = options
        self.model = model = resolve_model(model_for(options.model, media))
        exec_opts = ExecutorOptions(
            precision=options.precision,  # type: ignore[arg-type]  # validated in config
            tile=options.tile or 0, batch=options.batch or 1, threads=options.threads,
            device=options.device,
        )
        # Loaded, run and closed on a thread of its own: a video runs the model from a thread
        # of the pipeline's, and OpenMP runtimes slow down when called from a second thread.
        self.executor: Executor = ModelThreadExecutor(
            lambda: _executor(options, model, exec_opts))
        # --tile caps the tile side (0: whole frames); without it the memory budget decides.
        budget = None if options.tile is not None else tile_budget(
            self.executor.name, model, device=options.device, batch=options.batch or 1,
            precision=options.precision, tta=options.tta)
        self.frames = FrameUpscaler(self.executor, tile=options.tile or 0,
                                    overlap=_overlap(options, model), batch=options.batch,
                                    max_pixels=budget, border=model.border,
                                    reuse=TileReuse() if reuse else None,
                                    reach=model.dirty_reach() if reuse else None)
        self.passes = model.passes(options.scale)
        self._share: PictureShare | None = None  # the picture under way's, while one reports

    @property
    def model_scale(self) -> int:
        return self.executor.scale

    def release_memory(self) -> bool:
        """Have the executor free the memory its runtime keeps between calls (ncnn's pools,
        ONNX Runtime's arena); False where it keeps none."""
        return self.executor.release_memory()

    def identity(self) -> dict[str, str]:
        """What makes this upscaler's output what it is, as strings: a video's finished
        segments are reused only while it stays the same. The model file counts by size and
        modification time; the tile cap and memory budget are those the job starts with. The
        upscaler's version counts too: another version may compute other pixels (reuse, dirty
        regions, borders), and one output must not mix them."""
        files = [self.model.path, self.model.bin_path] if self.model.kind == "ncnn" else [
            self.model.path]
        stamps = [f"{p.resolve()}:{p.stat().st_size}:{p.stat().st_mtime_ns}"
                  for p in files if p.exists()]
        precision = getattr(self.executor, "precision", None) or self.options.precision
        return {"model": self.model.name, "model_files": " ".join(stamps),
                "executor": self.executor.name, "precision": str(precision),
                "device": str(self.options.device),
                # The user's cap only: the memory budget moves with free RAM between runs, and
                # the plans it picks differ only slightly, at tile seams (bench/tile_quality.py).
                "tile": str(self.options.tile),
                "overlap": str(self.frames.overlap), "border": str(self.frames.border),
                "scale": str(self.options.scale or self.model_scale),
                "reuse": str(self.frames.reuse is not None),
                "tta": str(self.options.tta),
                "upscaler version": __version__}

    def start_segment(self, _segment: object = None) -> None:
        """A video segment starts: held-tile reuse starts afresh, so that a segment comes out
        the same whether it follows the one before, is redone on resume, or runs on a worker of
        its own (see encode_segments' on_segment_start)."""
        if self.frames.reuse is not None:
            self.frames.reuse.reset()

    def close(self) -> None:
        self.executor.close()

    def __enter__(self) -> Upscaler:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def out_size(self, height: int, width: int) -> tuple[int, int]:
        scale = self.options.scale or self.model_scale
        return max(1, round(height * scale)), max(1, round(width * scale))

    def _model_output(self, rgb: np.ndarray, stream: str = "") -> np.ndarray:
        """The model's output for `rgb`: run `passes` times, each pass on the one before's
        output (waifu2x's way to 4x and beyond, ModelRef.passes)."""
        up = self.frames.upscale(rgb, stream=stream)
        self._call_ended()
        for n in range(2, self.passes + 1):
            up = self.frames.upscale(up, stream=f"{stream}pass {n}")
            self._call_ended()
        return up

    def _call_ended(self) -> None:
        if self._share is not None:
            self._share.call_ended()

    def _calls(self, height: int, width: int, streams: int) -> list[int]:
        """The input pixels of each model call a frame of `height` x `width` makes."""
        one = [height * width * self.model_scale ** (2 * n) for n in range(self.passes)]
        return one * streams

    def _finish(self, up: np.ndarray, height: int, width: int) -> np.ndarray:
        out_h, out_w = self.out_size(height, width)
        if up.shape[:2] != (out_h, out_w):
            up = resize_to_scale(up, out_h, out_w)
        return up

    def upscale_image(self, image: Image, *, copy: bool = True,
                      on_share: Callable[[float], None] | None = None) -> Image:
        """Every frame of `image` (one for a still picture) upscaled; its metadata kept.

        copy=False, for a still picture only, may give a read-only view of this upscaler's
        buffers, valid until its next call: what a writer that reads it once needs, without a
        second copy of a large output (288 MB for a 12000x8000 picture). `on_share`, where
        given, is told the share of the picture done (0 to 1) as its tiles end.
        """
        done = list(self.upscale_pages(image, copy=copy, on_share=on_share))
        return dataclasses.replace(done[0], pages=tuple(done[1:]))

    def upscale_pages(self, image: Image, *, copy: bool = True,
                      on_share: Callable[[float], None] | None = None) -> Iterator[Image]:
        """`image` and each of its pages after it (a TIFF's: pictures of their own) upscaled,
        one at a time as they are asked for, without `pages`; see upscale_image."""
        own = copy or len(image.pages) > 0 or len(image.frames) != 1
        # A TIFF's pages are still pictures, decoded one at a time as they come (TiffPages).
        with self._sharing(len(image.frames) + len(image.pages), on_share):
            for picture in itertools.chain((image,), image.pages):
                upscaled = picture.with_frames(list(self._sequence(picture.frames, copy=own)))
                yield dataclasses.replace(upscaled, pages=())

    @contextlib.contextmanager
    def _sharing(self, frames: int, on_share: Callable[[float], None] | None
                 ) -> Iterator[None]:
        """`on_share` told the share done of the `frames` frames upscaled inside the block,
        from their calls' tiles (PictureShare), or nothing told without one. Set afresh on
        entry: a block that was left unfinished (a generator not run to its end) leaves no
        earlier picture's reporting behind."""
        self._share = None if on_share is None else PictureShare(frames, on_share)
        self.frames.on_tiles = None if self._share is None else self._share.tiles
        try:
            yield
        finally:
            self._share, self.frames.on_tiles = None, None

    def upscale_frames(self, pictures: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """Pictures in the layouts to_model_input takes, upscaled one by one as a sequence:
        with reuse, each is compared with the ones before it (an animation's frames), and
        nothing is carried from an earlier sequence or into a later one."""
        return self._sequence(pictures, copy=True)

    def _sequence(self, pictures: Iterable[np.ndarray], copy: bool) -> Iterator[np.ndarray]:
        self.start_segment()
        try:
            for pixels in pictures:
                yield self._upscale_pixels(pixels, copy)
        finally:
            self.start_segment()  # held frames are not kept past the sequence

    def _upscale_pixels(self, pixels: np.ndarray, copy: bool = True) -> np.ndarray:
        src = to_model_input(pixels)
        height, width = src.rgb.shape[:2]
        flat = src.alpha is None or src.alpha.min() == src.alpha.max()
        if self._share is not None:
            self._share.start_frame(self._calls(height, width, 1 if flat else 2))
        rgb = self._finish(self._model_output(src.rgb), height, width)
        alpha = None
        if src.alpha is not None and flat:
            # settle_alpha would give every pixel back as it was (all of it is flat), so the
            # model's run would be thrown away: opaque RGBA pictures cost one run, not two.
            alpha = np.full(rgb.shape[:2], src.alpha[0, 0], src.dtype)
        elif src.alpha is not None:
            # Alpha goes through the model too: its edges are line art, which a resampler blurs.
            # Reuse keeps it apart from the colours ("alpha"), at the same tile positions.
            gray = np.repeat(src.alpha[..., None], 3, axis=2)
            mean = self._model_output(gray, stream="alpha").mean(axis=2)
            alpha = self._finish(np.rint(mean).astype(src.dtype), height, width)
            alpha = settle_alpha(alpha, src.alpha)
        # The caller owns what it gets: a contiguous array of its own, not a view.
        out = from_model_output(rgb, alpha, like=src)
        return np.ascontiguousarray(out) if copy else out

    def upscale_frame(self, frame: np.ndarray,
                      on_share: Callable[[float], None] | None = None) -> np.ndarray:
        """A video frame, (H, W, 3) uint8 or uint16 RGB, to the same dtype at the output size
        (a view, possibly read-only: see FrameUpscaler.upscale); (H, W, 4) RGBA, from a
        source whose alpha the output keeps, as an animation's frame is. `on_share` is told
        the share of the frame done as its tiles end (a 4K frame on a CPU: minutes)."""
        with self._sharing(1, on_share):
            if frame.shape[2] == 4:
                return self._upscale_pixels(frame, copy=False)
            height, width = frame.shape[:2]
            if self._share is not None:
                self._share.start_frame(self._calls(height, width, 1))
            return self._finish(self._model_output(frame), height, width)


def _executor(options: Options, model: ModelRef, exec_opts: ExecutorOptions) -> Executor:
    """The executor `options` ask for, averaging the eight flips of each tile with --tta."""
    executor = create_executor(options.executor, model, exec_opts)
    if not options.tta:
        return executor
    try:
        return TTAExecutor(executor)
    except BaseException:
        executor.close()
        raise


def _overlap(options: Options, model: ModelRef) -> int:
    """The least overlap of tiles: the user's or the model's, and at least twice the border.

    A tile's edge is the model's zero padding, which disturbs about `border` pixels in from it
    (borders.py); the feathered blend hides that only when both tiles' disturbed bands lie
    inside their overlap: on flat colour, 2x the border keeps seams within 1 level, 8-16 px of
    animevideov3's 10-px border left them 2 levels off. A --tile too small for that keeps what
    the user asked, or half a tile.
    """
    asked = options.overlap
    overlap = max(model.overlap if asked is None else asked, 2 * model.border)
    if options.tile and 2 * overlap > options.tile:
        overlap = asked if asked is not None else options.tile // 2
    return overlap


# What makes an Upscaler what it is; the other options (outputs, the encoder) do not touch it.
MODEL_OPTIONS = ("model", "executor", "precision", "device", "threads", "tile", "overlap",
                 "batch", "scale", "reuse", "tta")


class Upscalers:
    """The last task's upscaler, kept for the next task that asks for the same model options
    (MODEL_OPTIONS) and media: a batch of pictures given one by one (`upscale *.png -o out/`, a
    job file) loads its model once, not once a picture (a session on a GPU, a Core ML package:
    a second or more), and a Ray worker once for its segments and files.

    One is kept at a time, so a batch that changes models holds one in memory. Leaving the
    `with` block closes it, but not on Ctrl-C: a model call may still be running on the model's
    thread, and closing would wait for it before the user hears what was kept; the process is
    ending, which frees the model.
    """

    def __init__(self) -> None:
        self._key: tuple[object, ...] | None = None
        self._upscaler: Upscaler | None = None

    def get(self, options: Options, media: MediaKind) -> Upscaler:
        """An upscaler for a new task, its work counters at zero."""
        key = (media, *(getattr(options, name) for name in MODEL_OPTIONS))
        if self._upscaler is None or key != self._key:
            self.close()
            self._upscaler = Upscaler(options, media, reuse=options.reuse)
            self._key = key
        self._upscaler.frames.reset_counts()
        return self._upscaler

    def close(self) -> None:
        if self._upscaler is not None:
            upscaler, self._upscaler, self._key = self._upscaler, None, None
            upscaler.close()

    def __enter__(self) -> Upscalers:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        if exc_type is None or not issubclass(exc_type, KeyboardInterrupt):
            self.close()


@contextlib.contextmanager
def _upscaler_for(upscalers: Upscalers | None, options: Options, media: MediaKind
                  ) -> Iterator[Upscaler]:
    """A task's upscaler: from `upscalers`, which keeps it, else one of its own, closed after
    the task (but not on Ctrl-C, see Upscalers)."""
    if upscalers is not None:
        yield upscalers.get(options, media)
        return
    with Upscalers() as own:
        yield own.get(options, media)


def run_job(job: Job, progress: ProgressCallback = _ignore) -> Progress:
    """Check one job as a batch of one, then run it. What is wrong is raised as its own error
    (a MediaError, a UsageError that is a ValueError...), not wrapped in a PlanError."""
    try:
        (task,) = plan_jobs([job])
    except PlanError as e:
        if len(e.errors) == 1:
            raise e.errors[0] from None
        raise
    return run_task(task, progress)


def run_task(task: Task, progress: ProgressCallback = _ignore,
             upscalers: Upscalers | None = None) -> Progress:
    """Run one planned task and return its final counters.

    An output that exists is skipped (counted in `skipped`) unless options.overwrite, so a
    rerun of a batch does only what is left. `upscalers`, where given, keeps the model loaded
    for the batch's next task (see Upscalers); else the task loads and closes its own.
    """
    if task.kind == "folder":
        return _run_folder(task, progress, upscalers)
    video = task.kind == "video"
    state = file_todo(task)
    if state.skipped:
        return state
    if video:
        make_folder(task.output.parent)
        return _run_video(task.input, task.output, task.options, progress, upscalers)
    with contextlib.ExitStack() as stack:
        upscale_file(lambda: stack.enter_context(_upscaler_for(upscalers, task.options,
                                                               "image")),
                     task.input, task.output, task.options, counts=state,
                     on_share=_Ahead(state, progress).share)
    state.done, state.part = 1, 0.0
    progress(state)
    return state


@dataclass
class _Ahead:
    """Reports how far pictures have come beyond `state.finished` (as `state.part`): those
    past the model but not yet counted (a folder's, waiting for their writes) and the share of
    the one under way, so that a bar moves while a large picture is upscaled."""

    state: Progress
    progress: ProgressCallback
    past_model: int = 0
    current: float = 0.0

    def share(self, part: float) -> None:
        """The picture under way's share done: an on_share."""
        self.current = part
        self.report()

    def passed(self) -> None:
        """A picture has left the model, upscaled or failed."""
        self.past_model += 1
        self.current = 0.0

    def report(self) -> None:
        self.state.part = max(0.0, self.past_model + self.current - self.state.finished)
        self.progress(self.state)


def upscale_file(upscaler: Callable[[], Upscaler], src: Path, dst: Path,
                 options: Options, counts: Progress | None = None,
                 on_share: Callable[[float], None] | None = None) -> None:
    """Read the image `src`, upscale it and write it to `dst` (folders made as needed).

    `upscaler` is called for the model only once the image is known to fit `dst`'s format, so
    that an image refused (transparency to JPEG) costs no model load. `counts`, where given,
    takes what held frames saved in an animation; `on_share` is told the share of the
    picture the model has done, from 0 as it starts.
    """
    with _memory_named(src):
        image, background = _read_storable(src, dst, options)
        make_folder(dst.parent)
        up = upscaler()
        check_size(image, dst, options.format, up.out_size(*image.pixels.shape[:2]))
        if on_share is not None:
            on_share(0.0)
        _upscale_and_write(up, image, dst, options, background, on_share)
        if counts is not None and len(image.frames) > 1 and up.frames.reuse is not None:
            counts.count_reuse(up.frames)


def _upscale_and_write(up: Upscaler, image: Image, dst: Path, options: Options,
                       background: tuple[int, int, int] | None,
                       on_share: Callable[[float], None] | None) -> None:
    """`image` upscaled and written here, from the model's buffers: a still picture as a view
    of them, a TIFF's pages each as it is upscaled (a scanned book is never whole in memory
    at 4x)."""
    if image.pages:
        write_pages(up.upscale_pages(image, on_share=on_share), dst, background=background,
                    replace=options.overwrite)
        return
    upscaled = up.upscale_image(image, copy=False, on_share=on_share)  # read once, no copy
    _write_upscaled(up, upscaled, dst, options, background)


def _write_upscaled(up: Upscaler, upscaled: Image, dst: Path, options: Options,
                    background: tuple[int, int, int] | None) -> None:
    def write() -> None:
        write_image(upscaled, dst, options.format, quality=options.quality,
                    background=background, replace=options.overwrite)

    try:
        write()
    except Exception as e:
        # The model ran, but its runtime still holds the memory of its largest call
        # (ONNX Runtime's arena, ncnn's pools): freed, the writer's buffers may fit.
        if not is_out_of_memory(e) or not up.release_memory():
            raise
        write()


@contextlib.contextmanager
def _memory_named(src: Path) -> Iterator[None]:
    """Our own buffers outside the tiles (the decoded image, the upscaled one, its alpha) that
    ran out: one line naming `src`, as for an executor that ran out, instead of a traceback."""
    try:
        yield
    except Exception as e:
        error = ran_out(e, src)
        if error is None:
            raise
        raise error from e


def make_folder(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise MediaError(f"cannot make folder: {e.strerror or e}", folder) from e


def _read_storable(src: Path, dst: Path, options: Options
                   ) -> tuple[Image, tuple[int, int, int] | None]:
    """The image of `src` and the background to flatten it onto; MediaError, before the model
    runs, when `dst`'s format cannot hold it."""
    image = read_image(src)
    background = parse_colour(options.background) if options.background else None
    check_storable(image, dst, options.format, background)
    return image, background


def file_todo(task: Task) -> Progress:
    """A picture's or video's task counters, `skipped` where its output exists and is not to
    be overwritten; what a killed run left half-written of a picture is removed first."""
    video = task.kind == "video"
    state = Progress("frame" if video else "image", 0 if video else 1, label=task.input.name)
    if not video:
        remove_unfinished([task.output])
    if _taken(task.output) and not task.options.overwrite:
        state.skipped = 1
    return state


def _taken(output: Path) -> bool:
    """Whether something has `output`'s name: a file, or a link even where it leads nowhere
    (which is a name no-clobber writing cannot take either)."""
    return os.path.lexists(output)  # one lstat, links to nowhere included


def folder_todo(task: Task) -> tuple[list[tuple[Path, Path]], Progress]:
    """A folder task's pictures still to write and its counters, the others counted as
    skipped; what a killed run left half-written of its outputs is removed first."""
    todo = [(s, d) for s, d in task.items if task.options.overwrite or not _taken(d)]
    state = Progress("image", len(todo), skipped=len(task.items) - len(todo),
                     label=task.input.name)
    remove_unfinished(out for _, out in task.items)
    return todo, state


@dataclass
class FolderOutcomes:
    """A folder's pictures counted as each ends, here or on Ray. One that fails is reported
    and the rest go on; a full disk (`full`, the first write that found it) starts no more,
    since every picture after would run the model only to fail alike, a line each."""

    state: Progress
    folder: Path
    full: MediaError | None = None

    def add(self, error: UpscalerError | None) -> None:
        if error is None:
            self.state.done += 1
        elif isinstance(error, MediaError) and is_disk_full(error):
            self.full = self.full or error
        else:
            self.state.failures.append(error)

    def finish(self) -> Progress:
        """The counters, with one line for a full disk however many writes found it."""
        if self.full is not None:
            self.state.failures.append(DiskFilledError(
                f"disk full: {self.state.done} of {self.state.total} pictures written to "
                f"{self.folder}; free some space, and the same command does the rest",
                self.full.path))
        return self.state


def _run_folder(task: Task, progress: ProgressCallback,
                upscalers: Upscalers | None = None) -> Progress:
    options = task.options
    todo, state = folder_todo(task)
    if not todo:  # no bar for nothing to do: the summary says what was skipped
        return state
    progress(state)
    outcomes = FolderOutcomes(state, task.output)
    try:
        _upscale_folder(todo, options, upscalers, outcomes, progress)
    except KeyboardInterrupt as e:
        # The writes under way have ended (BackgroundWrites waits for them): what is there is
        # what the next run skips.
        written = sum(out.exists() for _, out in todo)
        raise Interrupted(f"interrupted: {written} of {len(todo)} pictures written to "
                          f"{task.output}; the same command does the rest",
                          getattr(e, "exit_code", 130)) from None
    return outcomes.finish()


def _upscale_folder(todo: list[tuple[Path, Path]], options: Options,
                    upscalers: Upscalers | None, outcomes: FolderOutcomes,
                    progress: ProgressCallback) -> None:
    ahead = _Ahead(outcomes.state, progress)

    def ended(results: list[tuple[Hashable, BaseException | None]]) -> None:
        for _, error in results:
            if error is not None and not isinstance(error, MediaError | OutputExistsError):
                raise error
            outcomes.add(error)
            ahead.report()

    def read(item: tuple[Path, Path]) -> tuple[Image, tuple[int, int, int] | None]:
        return _read_storable(*item, options)

    # The first picture is read while the model loads, each next one while the model runs.
    with read_ahead(todo, read) as pictures, \
            _upscaler_for(upscalers, options, "image") as upscaler, \
            BackgroundWrites(writer_threads()) as writes:
        for (path, out), picture in pictures:
            if outcomes.full is not None:
                break
            try:
                with _memory_named(path):
                    image, background = picture.result()
                    check_size(image, out, options.format,
                               upscaler.out_size(*image.pixels.shape[:2]))
                    make_folder(out.parent)
                    nbytes = _output_bytes(upscaler, image)
                    # Else written here: too large to wait, or a TIFF's pages.
                    own = not image.pages and writes.fits(nbytes)
                    if own:
                        upscaled = upscaler.upscale_image(image, on_share=ahead.share)
                    else:
                        _upscale_and_write(upscaler, image, out, options, background,
                                           ahead.share)
            except MediaError as e:
                # One unreadable file must not cost the rest of the folder; it is reported
                # and the job ends with an error once the others are done.
                ahead.passed()
                ended([(path, e)])
                continue
            ahead.passed()
            if own:
                ended(writes.submit(path, functools.partial(
                    _write_named, path, upscaler, upscaled, out, options, background),
                    nbytes))
            else:
                ended([(path, None)])
        ended(writes.finish())


def _write_named(src: Path, up: Upscaler, upscaled: Image, dst: Path, options: Options,
                 background: tuple[int, int, int] | None) -> None:
    with _memory_named(src):
        _write_upscaled(up, upscaled, dst, options, background)


def _output_bytes(upscaler: Upscaler, image: Image) -> int:
    """The bytes of `image`'s upscaled frames."""
    total = 0
    for frame in image.frames:
        height, width = upscaler.out_size(*frame.shape[:2])
        total += height * width * frame.shape[2] * frame.itemsize  # Image frames are HWC
    return total


def stage_watch(src: Path, progress: ProgressCallback) -> Callable[[str, int, int], None]:
    """A scan.Watch that reports the steps before a video's first frame (its decoding pass,
    the disk space trial) as stages of `src`'s job, each with a Progress of its own."""
    states: dict[str, Progress] = {}

    def watch(what: str, frames: int, total: int) -> None:
        state = states.get(what)
        if state is None:
            state = states[what] = Progress("frame", total, label=src.name, stage=what)
        elif frames <= state.done:
            return  # nothing new to draw
        state.done = frames
        progress(state)
    return watch


def _run_video(src: Path, dst: Path, options: Options, progress: ProgressCallback,
               upscalers: Upscalers | None = None) -> Progress:
    from upscaler.video import check_source, check_video_job, upscale_video

    settings = video_settings(options)
    check_video_job(src, dst, settings)  # before the model loads (cached from the plan)
    # The decoding pass: damage refused before the model loads.
    watch = stage_watch(src, progress)
    check_source(src, dst, settings, watch)
    state = Progress("frame", 0, label=src.name, stages=StageTimes())

    with _upscaler_for(upscalers, options, "video") as upscaler:
        frames = upscaler.frames

        def report(done: int, total: int) -> None:
            state.done, state.total, state.part = done, total, 0.0
            if frames.reuse is not None:
                state.count_reuse(frames)
            progress(state)

        def share(part: float) -> None:
            # A frame of many tiles (4K through x4plus-anime on a CPU: minutes) moves the bar
            # before it ends.
            state.part = part
            progress(state)

        upscale_video(src, dst, functools.partial(upscaler.upscale_frame, on_share=share),
                      settings, progress=report, identity=upscaler.identity(),
                      scale=options.scale or upscaler.model_scale,
                      on_segment_start=upscaler.start_segment, times=state.stages,
                      watch=watch)
        state.count_work(upscaler.frames)
    return state
