"""Jobs end to end: reader -> channels -> tiler/executor/stitcher -> resize -> writer.

This module only wires the stages together; each stage lives in its own module and knows nothing
of the others. Progress is reported through a callback so that the library never draws anything.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from upscaler.channels import from_model_output, resize_to_scale, settle_alpha, to_model_input
from upscaler.config import Job, Options
from upscaler.errors import MediaError, OutputExistsError, UpscalerError, UsageError
from upscaler.executors.base import Executor, ExecutorOptions
from upscaler.executors.registry import create_executor, tile_budget
from upscaler.frame_upscaler import FrameUpscaler
from upscaler.media.images import Image, is_image_path, read_image, write_image
from upscaler.media.stage_times import StageTimes
from upscaler.models.registry import MediaKind, model_for, resolve_model

VIDEO_EXTENSIONS = (".mp4", ".mkv", ".mov", ".webm", ".avi", ".m4v", ".ts", ".m2ts", ".flv",
                    ".wmv", ".mpg", ".mpeg")


@dataclass
class Progress:
    """What a job reports: `unit` is "image" or "frame"; `total` may be 0 when unknown."""

    unit: str
    total: int
    done: int = 0
    skipped: int = 0
    label: str = ""
    failures: list[UpscalerError] = field(default_factory=list)
    # Where the time went, for reports and benchmarks (bench/bench_job.py): each video stage's
    # busy and waiting seconds, and the model's work (see FrameUpscaler's counters).
    stages: StageTimes | None = None
    frame_pixels: int = 0
    planned_pixels: int = 0
    model_pixels: int = 0
    model_seconds: float = 0.0

    def count_work(self, frames: FrameUpscaler) -> None:
        self.frame_pixels, self.planned_pixels = frames.frame_pixels, frames.planned_pixels
        self.model_pixels, self.model_seconds = frames.pixels_run, frames.executor_seconds


ProgressCallback = Callable[[Progress], None]


def _ignore(_: Progress) -> None:
    pass


def is_video_path(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_EXTENSIONS


class Upscaler:
    """One model on one executor, applied to whole frames: the stages between reader and writer.

    Holds the executor (and so the loaded model) for the life of a job, so that a folder of images
    or the frames of a video pay for loading once.
    """

    def __init__(self, options: Options, media: MediaKind = "image") -> None:
        self.options = options
        model = resolve_model(model_for(options.model, media))
        exec_opts = ExecutorOptions(
            precision=options.precision,  # type: ignore[arg-type]  # validated in config
            tile=options.tile or 0, batch=options.batch or 1, threads=options.threads,
            device=options.device,
        )
        self.executor: Executor = create_executor(options.executor, model, exec_opts)
        # --tile caps the tile side (0: whole frames); without it the memory budget decides.
        budget = None if options.tile is not None else tile_budget(
            self.executor.name, model, device=options.device, batch=options.batch or 1,
            precision=options.precision)
        self.frames = FrameUpscaler(self.executor, tile=options.tile or 0,
                                    overlap=options.overlap, batch=options.batch,
                                    max_pixels=budget)

    @property
    def model_scale(self) -> int:
        return self.executor.scale

    def close(self) -> None:
        self.executor.close()

    def __enter__(self) -> Upscaler:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def out_size(self, height: int, width: int) -> tuple[int, int]:
        scale = self.options.scale or self.model_scale
        return max(1, round(height * scale)), max(1, round(width * scale))

    def _finish(self, up: np.ndarray, height: int, width: int) -> np.ndarray:
        out_h, out_w = self.out_size(height, width)
        if up.shape[:2] != (out_h, out_w):
            up = resize_to_scale(up, out_h, out_w)
        return up

    def upscale_image(self, image: Image) -> Image:
        src = to_model_input(image)
        height, width = src.rgb.shape[:2]
        rgb = self._finish(self.frames.upscale(src.rgb), height, width)
        alpha = None
        if src.alpha is not None:
            # Alpha goes through the model too: its edges are line art, which a resampler blurs.
            gray = np.repeat(src.alpha[..., None], 3, axis=2)
            alpha = self._finish(self.frames.upscale(gray).mean(axis=2), height, width)
            alpha = settle_alpha(alpha, src.alpha)
        return dataclasses.replace(image, pixels=from_model_output(rgb, alpha, like=src))

    def upscale_frame(self, frame: np.ndarray) -> np.ndarray:
        """A video frame, (H, W, 3) uint8 or uint16 RGB, to the same dtype at the output size."""
        src = to_model_input(frame)
        rgb = self._finish(self.frames.upscale(src.rgb), *frame.shape[:2])
        return from_model_output(rgb, None, like=src)


def default_output(src: Path, options: Options) -> Path:
    """Where an output goes when none is given: next to the input, with the suffix."""
    if src.is_dir():
        return src.with_name(src.name + options.suffix)
    ext = f".{options.format.lower()}" if options.format and not is_video_path(src) else src.suffix
    return src.with_name(src.stem + options.suffix + ext)


def _with_format(dst: Path, options: Options) -> Path:
    """`dst` with the extension of --format, when one is given."""
    if options.format:
        return dst.with_suffix(f".{options.format.lower()}")
    return dst


def _walk_images(root: Path) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            path = Path(dirpath) / name
            if is_image_path(path):
                yield path


def run_job(job: Job, progress: ProgressCallback = _ignore) -> Progress:
    """Run one job (an image, a folder of images or a video) and return its final counters."""
    src, options = job.input, job.options
    if not src.exists():
        raise MediaError("input does not exist", src)
    dst = job.output or default_output(src, options)
    if src.is_dir():
        return _run_folder(src, dst, options, progress)
    if is_video_path(src):
        return _run_video(src, dst, options, progress)
    if not is_image_path(src):
        raise MediaError("not a supported image or video file", src)
    if dst.exists() and dst.is_dir():
        dst = _with_format(dst / src.name, options)
    _check_output(src, dst, options)
    image = read_image(src)
    state = Progress("image", 1, label=src.name)
    with Upscaler(options) as upscaler:
        write_image(upscaler.upscale_image(image), dst, options.format)
    state.done = 1
    progress(state)
    return state


def _check_output(src: Path, dst: Path, options: Options) -> None:
    if dst.resolve() == src.resolve():
        raise OutputExistsError("output would overwrite the input", dst)
    if dst.exists() and not options.overwrite:
        raise OutputExistsError("output exists (use --overwrite to replace it)", dst)


def _run_folder(src: Path, dst: Path, options: Options, progress: ProgressCallback) -> Progress:
    if dst.exists() and not dst.is_dir():
        raise UsageError("output for a folder must be a folder", dst)
    with contextlib.suppress(ValueError):
        dst.resolve().relative_to(src.resolve())
        raise UsageError(f"output folder must not be inside the input folder {src}", dst)
    pairs = []
    for path in _walk_images(src):
        out = dst / path.relative_to(src)
        pairs.append((path, _with_format(out, options)))
    state = Progress("image", len(pairs), label=src.name)
    todo = [(s, d) for s, d in pairs if options.overwrite or not d.exists()]
    state.skipped = len(pairs) - len(todo)
    progress(state)
    if not todo:
        return state
    with Upscaler(options) as upscaler:
        for path, out in todo:
            try:
                image = read_image(path)
                out.parent.mkdir(parents=True, exist_ok=True)
                write_image(upscaler.upscale_image(image), out, options.format)
            except MediaError as e:
                # One unreadable file must not cost the rest of the folder; it is reported
                # and the job ends with an error once the others are done.
                state.failures.append(e)
            state.done += 1
            progress(state)
    return state


def _run_video(src: Path, dst: Path, options: Options, progress: ProgressCallback) -> Progress:
    from upscaler.video import VideoSettings, upscale_video

    _check_output(src, dst, options)
    settings = VideoSettings(codec=options.codec, crf=options.crf, preset=options.preset,
                             pix_fmt=options.pix_fmt, segment_seconds=options.segment_seconds,
                             overwrite=options.overwrite)
    state = Progress("frame", 0, label=src.name, stages=StageTimes())

    def report(done: int, total: int) -> None:
        state.done, state.total = done, total
        progress(state)

    with Upscaler(options, "video") as upscaler:
        upscale_video(src, dst, upscaler.upscale_frame, settings, progress=report,
                      times=state.stages)
        state.count_work(upscaler.frames)
    return state
