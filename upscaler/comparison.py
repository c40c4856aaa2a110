"""`upscale compare`: a few frames of an input through several models, timed, as data.

    from upscaler.comparison import compare
    result = compare("episode.mkv", models=["realesr-animevideov3", "realesrgan-x4plus-anime"],
                     at=["1:30", "12:00"])
    result.results[0].seconds_per_frame, result.results[0].outputs[0]   # numbers and pixels

The frames are picked as the job would read them (the video reader, the image reader) and go
through the same `Upscaler` a job builds, with the job's options, so the timings are those of
a job on this machine: the model is loaded once per model, and each frame is timed from pixels
in to pixels out. The page (compare_page.py) is drawn from this data; nothing here writes it.
"""

from __future__ import annotations

import bisect
import dataclasses
import re
import statistics
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import cv2
import numpy as np

from upscaler.config import Options
from upscaler.errors import MediaError, UsageError
from upscaler.job.plan import sort_folder
from upscaler.media.images import Image, is_image_path, read_image, write_image
from upscaler.models.registry import MediaKind, models_to_compare, resolve_model
from upscaler.outputs import image_output, is_video_path, video_output
from upscaler.pipeline import Progress, Upscaler
from upscaler.reuse import ReuseRule

if TYPE_CHECKING:
    from upscaler.media.video.probe import VideoInfo
    from upscaler.media.video.writer import Encoding

InputKind = Literal["image", "folder", "video"]
# Frames a video or a folder gives when no --at is named: enough to see several scenes,
# few enough that the slowest model's comparison stays a matter of seconds to minutes.
DEFAULT_FRAMES = 3
_CLOCK = re.compile(r"^(?:(\d+):)?(\d+):(\d+(?:\.\d*)?)$")
_SECONDS = re.compile(r"^(\d+(?:\.\d*)?|\.\d+)(s|ms|us)?$")
_UNITS = {None: 1.0, "s": 1.0, "ms": 1e-3, "us": 1e-6}


# Frames read from each compared time on, to count the held drawings a job reuses instead of
# running the model: a second of video at film rates.
HELD_RUN = 24
# Frames looked at around each compared time to tell interlaced video and telecined film
# (idet's counts), where the job decodes the whole video: three seconds at 29.97.
INTERLACE_LOOK = 90


@dataclass(frozen=True)
class Frame:
    """One picture compared: `pixels` (H, W, C) uint8 or uint16 as the job reads it; `label`
    names it (a time in the video, or the file); `time` in seconds for a video frame.
    `held`: of the frames read after it (up to HELD_RUN - 1), how many a job would reuse whole
    as held drawings, and how many were read."""

    label: str
    pixels: np.ndarray
    time: float | None = None
    held: tuple[int, int] = (0, 0)


@dataclass(frozen=True)
class ModelResult:
    """One model's outputs of every frame, and what a whole job with it would cost.

    frame_seconds: each frame's time from pixels in to pixels out, the model loaded.
    whole_seconds: estimated time of the whole input: load, then every frame at
      `seconds_per_frame`, less a video's held drawings in the share found after the compared
      frames (Comparison.held), which a job reuses. output_bytes: estimated size of the whole
      output at the job's encoder settings (video) or image format.
    """

    model: str
    executor: str
    scale: float
    outputs: tuple[np.ndarray, ...]
    frame_seconds: tuple[float, ...]
    load_seconds: float
    whole_seconds: float
    output_bytes: int

    @property
    def seconds_per_frame(self) -> float:
        # The median leaves out the first frame's warm-up (runtimes allocate on first use),
        # which a long job pays once.
        return statistics.median(self.frame_seconds)


@dataclass(frozen=True)
class Comparison:
    """What `compare` found: the frames, each model's results, and how many frames (or
    images) the whole input holds, which the estimates are for."""

    input: Path
    kind: InputKind
    total_frames: int
    frames: tuple[Frame, ...]
    results: tuple[ModelResult, ...]
    options: Options

    @property
    def held(self) -> tuple[int, int]:
        """(held, looked at) over the frames read after each compared one: the held drawings
        a video job reuses, left out of `whole_seconds` (none with --no-reuse)."""
        return held_frames(self.kind, self.frames, self.options)


def held_frames(kind: InputKind, frames: Sequence[Frame], options: Options) -> tuple[int, int]:
    """(held, looked at) over `frames`' runs; (0, 0) where a job reuses nothing."""
    if kind != "video" or not options.reuse:
        return 0, 0
    return sum(f.held[0] for f in frames), sum(f.held[1] for f in frames)


def parse_time(text: str) -> float:
    """Seconds from `text`: plain seconds (`90`, `1.5`, `500ms`) or ffmpeg's clock syntax
    (`1:30`, `00:01:30.5`); UsageError for anything else or a negative time."""
    stripped = text.strip()
    clock = _CLOCK.match(stripped)
    if clock:
        hours, minutes, seconds = clock.groups()
        if (int(minutes) >= 60 and hours is not None) or float(seconds) >= 60:
            raise UsageError(f"--at {text}: minutes and seconds go up to 59")
        return int(hours or 0) * 3600 + int(minutes) * 60 + float(seconds)
    plain = _SECONDS.match(stripped)
    if plain:
        return float(plain.group(1)) * _UNITS[plain.group(2)]
    raise UsageError(f"--at {text}: not a time; give seconds (90, 1.5) or [HH:]MM:SS[.ms]")


def clock(seconds: float) -> str:
    """A time as the page labels it: 1:02.500."""
    minutes, rest = divmod(seconds, 60)
    hours, minutes = divmod(int(minutes), 60)
    return f"{hours}:{minutes:02d}:{rest:06.3f}" if hours else f"{minutes}:{rest:06.3f}"


def input_kind(src: Path) -> InputKind:
    """What `src` is, judged as the `upscale` command judges it; MediaError otherwise."""
    if not src.exists():
        raise MediaError("input does not exist", src)
    if src.is_dir():
        return "folder"
    if is_video_path(src):
        return "video"
    if is_image_path(src):
        return "image"
    raise MediaError("not an image, video or folder that we read (judged by its extension)",
                     src)


def pick_frames(src: Path, at: Sequence[str] = (), count: int = DEFAULT_FRAMES,
                options: Options | None = None, video: JobVideo | None = None,
                ) -> tuple[InputKind, int, list[Frame]]:
    """(kind, frames or images in the whole input, the frames to compare).

    A video gives the frames shown at the `at` times, or `count` frames spread over it, with
    their alpha where the job (with `options`) keeps it; a folder `count` of its images spread
    over its sorted list; an image itself. UsageError for a time past the end, or `at` given
    for an input that is not a video. `video`: the source's probe and encoding, where the caller
    has them already.
    """
    kind = input_kind(src)
    if at and kind != "video":
        raise UsageError("--at picks times in a video; this input is not one", src)
    if kind == "video":
        from upscaler.media.video.encoding import keeps_alpha

        video = video or job_video(src, options or Options())
        # As the job reads them: an alpha the output keeps goes through the model too.
        alpha = video.info.alpha and keeps_alpha(video.encoding)
        return kind, video.info.frame_count, _video_frames(
            video.info, at, count, alpha, (options or Options()).deinterlace)
    if kind == "image":
        image = read_image(src)
        # A TIFF's pages are the job's pictures: its first shown, each counted in the estimates.
        return kind, 1 + len(image.pages), [Frame(src.name, image.pixels)]
    images = sort_folder(src)[0]  # the images the job takes: hidden files and folders left out
    if not images:
        raise MediaError("no images in this folder", src)
    chosen = _spread(len(images), count)
    return kind, len(images), [Frame(str(images[i].relative_to(src)),
                                     read_image(images[i]).pixels) for i in chosen]


def _spread(total: int, count: int) -> list[int]:
    """`count` indices spread evenly over `total` items, each in the middle of its share."""
    return sorted({min(total - 1, (2 * k + 1) * total // (2 * count)) for k in range(count)})


@dataclass(frozen=True)
class JobVideo:
    """A video source as a job with the compared options would take it."""

    info: VideoInfo
    encoding: Encoding  # what the job would write to its default output


def job_video(src: Path, options: Options) -> JobVideo:
    """`src` probed, with the encoding a job with `options` would write it with."""
    from upscaler.job.plan import video_settings
    from upscaler.media.video.encoding import choose_encoding
    from upscaler.media.video.probe import probe

    info = probe(src)
    container = video_output(src, None, False, options).suffix
    return JobVideo(info, choose_encoding(info, video_settings(options), container))


def _video_frames(info: VideoInfo, at: Sequence[str], count: int, alpha: bool = False,
                  deinterlace: str = "auto") -> list[Frame]:
    from upscaler.media.video.reader import VideoReader

    src = info.path
    starts = [info.seconds(p) - info.start_time for p in info.frame_pts]
    if at:
        indices = []
        for text in at:
            seconds = parse_time(text)
            if seconds >= info.duration:
                raise UsageError(f"--at {text}: past the end, which is at "
                                 f"{clock(info.duration)} ({info.duration:.3f} s)", src)
            # The frame on screen at that time: the last one that started by then.
            indices.append(max(0, bisect.bisect_right(starts, seconds + 1e-6) - 1))
    else:
        indices = _spread(info.frame_count, count)
    if deinterlace != "off":
        # The frames as the job gives the model: deinterlaced, or field-matched where the
        # source is telecined film, which idet tells from a few seconds at each time.
        from upscaler.media.video.interlace import decide, takes_fieldmatch
        from upscaler.media.video.scan import sample

        # Around each time, and before it near the end, where too few frames follow to tell.
        spots = [max(0, min(i - INTERLACE_LOOK // 2, info.frame_count - INTERLACE_LOOK))
                 for i in indices]
        way = decide(sample(info, spots, INTERLACE_LOOK), deinterlace, info.frame_rate,
                     matchable=takes_fieldmatch(info.pix_fmt, info.alpha))
        info = dataclasses.replace(info, deinterlace=way.filter)
    frames = []
    for index in indices:
        with VideoReader(info, start=index, count=HELD_RUN, alpha=alpha) as reader:
            run = iter(reader)
            first = next(run, None)
            if first is None:
                raise MediaError(f"could not decode the frame at {clock(starts[index])}", src)
            first = np.array(first)  # the reader may fill the same buffer again
            frames.append(Frame(clock(starts[index]), first, starts[index],
                                held_after(first, run)))
    return frames


def held_after(first: np.ndarray, rest: Iterable[np.ndarray]) -> tuple[int, int]:
    """(held, looked at): the frames of `rest`, which follow `first`, that a job would reuse
    whole, each compared, as the job compares, with the last frame the model ran on."""
    rule = ReuseRule()

    def same(a: np.ndarray, b: np.ndarray) -> bool:
        if not rule.unchanged(a[..., :3], b[..., :3]):
            return False
        # Alpha is compared apart, as a job runs it apart (a gray picture of its own).
        return a.shape[-1] < 4 or rule.unchanged(*(cv2.merge([p[..., 3]] * 3) for p in (a, b)))

    reference, held, seen = first, 0, 0
    for frame in rest:
        seen += 1
        if same(frame, reference):
            held += 1
        else:
            reference = np.array(frame)
    return held, seen


ProgressCallback = Callable[[Progress], None]


def compare(input: str | Path, models: Sequence[str] | None = None, at: Sequence[str] = (),
            options: Options | None = None, progress: ProgressCallback | None = None,
            count: int = DEFAULT_FRAMES) -> Comparison:
    """Run each of `models` (default: models_to_compare for the input's kind) on the frames
    `pick_frames` gives, with the job options `options` (their `model` is ignored).

    Every model is resolved before the first frame is read, so an unknown name costs nothing.
    `progress` hears a Progress in frames, over all models.
    """
    src = Path(input).expanduser()
    options = options or Options()
    kind = input_kind(src)
    media: MediaKind = "video" if kind == "video" else "image"
    names = list(dict.fromkeys(models)) if models else models_to_compare(media)
    if not names:
        raise UsageError("no models to compare")
    for name in names:
        resolve_model(name)
    video = job_video(src, options) if kind == "video" else None
    kind, total, frames = pick_frames(src, at, count, options, video)
    state = Progress("frame", len(frames) * len(names), label=src.name)
    report = progress or (lambda _: None)
    report(state)
    sizes = _Sizes(src, kind, total, frames, options, video)
    held, seen = held_frames(kind, frames, options)
    # The frames the model runs on in a job: held drawings are reused without it.
    computed = total * (1 - held / seen) if seen else total
    results = [_run_model(kind, media, computed, frames,
                          dataclasses.replace(options, model=name), state, report, sizes)
               for name in names]
    return Comparison(src, kind, total, tuple(frames), tuple(results), options)


def _run_model(kind: InputKind, media: MediaKind, computed: float, frames: list[Frame],
               options: Options, state: Progress, report: ProgressCallback,
               sizes: _Sizes) -> ModelResult:
    """One model on `frames`; its estimate of a whole job runs it on `computed` frames."""
    started = time.perf_counter()
    def share(part: float) -> None:
        # A large picture or frame (a scan through x4plus-anime: minutes) moves the bar.
        state.part = part
        report(state)

    with Upscaler(options, media) as upscaler:
        load = time.perf_counter() - started
        outputs, seconds = [], []
        for frame in frames:
            started = time.perf_counter()
            if kind == "video":
                out = np.ascontiguousarray(upscaler.upscale_frame(frame.pixels, on_share=share))
            else:
                out = upscaler.upscale_image(Image(pixels=frame.pixels), on_share=share).pixels
            seconds.append(time.perf_counter() - started)
            outputs.append(out)
            state.done, state.part = state.done + 1, 0.0
            report(state)
        scale = options.scale or upscaler.model_scale
        executor = upscaler.executor.name
        name = upscaler.model.name
    per_frame = statistics.median(seconds)
    return ModelResult(name, executor, scale, tuple(outputs), tuple(seconds), load,
                       load + per_frame * computed, sizes.whole_output(outputs))


class _Sizes:
    """Estimates of a whole output's size from a model's outputs of the compared frames.

    Video: see space.estimate_video_bytes; the source is probed, and the encoder's trial run,
    once per comparison (per output size), not once per model. Images: each output encoded
    as the job would write it, the mean times the image count.
    """

    def __init__(self, src: Path, kind: InputKind, total: int, frames: list[Frame],
                 options: Options, video: JobVideo | None) -> None:
        self.src, self.kind, self.total, self.frames, self.options = (src, kind, total, frames,
                                                                      options)
        self._video = video
        self._trials: dict[tuple[int, int], tuple[int, int]] = {}

    def whole_output(self, outputs: list[np.ndarray]) -> int:
        if self.kind == "video":
            return self._video_bytes(outputs)
        sizes = []
        with tempfile.TemporaryDirectory(prefix="upscale-compare-") as tmp:
            for frame, out in zip(self.frames, outputs, strict=True):
                name = Path(frame.label).name if self.kind == "folder" else self.src.name
                dst = image_output(Path(tmp) / name, None, False, self.options)
                write_image(Image(pixels=out), dst, self.options.format,
                            quality=self.options.quality)
                sizes.append(dst.stat().st_size)
        return round(sum(sizes) / len(sizes) * self.total)

    def _video_bytes(self, outputs: list[np.ndarray]) -> int:
        from upscaler.job.space import estimate_video_bytes, trial_sizes

        assert self._video is not None  # a video's comparison probed it first
        info, encoding = self._video.info, self._video.encoding
        height, width = outputs[0].shape[:2]
        if (width, height) not in self._trials:
            self._trials[width, height] = trial_sizes(info, encoding, (width, height))
        # The colours: an alpha plane costs the encoder little beside them (the estimate's
        # encodes take RGB).
        return estimate_video_bytes(info, encoding, [f.pixels[..., :3] for f in self.frames],
                                    [o[..., :3] for o in outputs], self._trials[width, height])
