"""Video as numbered segments of frames: plan them and encode each to its own file.

A segment is the unit that resume and a Ray scale-out build on: `encode_segment` needs only the
source, the segment's frame range and the settings, and writes one self-contained file
atomically. mux.py joins the finished files into the output.

Inside `encode_segments` decoding, the transform and encoding overlap: a decoder thread, a
transform thread (the model) and an encoder thread pass frames through bounded queues, while the
calling thread waits and answers interrupts. Memory holds at most a few queued frames, however
long the video.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from upscaler.errors import MediaError, UsageError
from upscaler.media import ffmpeg
from upscaler.media.video.encoding import (
    SIDE_ALPHA_ENCODERS,
    VideoSettings,
    choose_encoding,
    deeper_than_source,
    keeps_alpha,
)
from upscaler.media.video.probe import VideoInfo, probe
from upscaler.media.video.reader import VideoReader
from upscaler.media.video.stage_times import StageTimes
from upscaler.media.video.writer import Encoding, Timing, VideoWriter

Transform = Callable[[np.ndarray], np.ndarray]

# A variable-frame-rate segment carries its timestamps in a setpts expression on the command
# line; this bound keeps that expression far below any OS limit on argument length.
MAX_VFR_SEGMENT_FRAMES = 1000

# Files still being written carry this before their suffix; only complete files lose it.
PARTIAL = ".partial"


@dataclass(frozen=True)
class Segment:
    """Frames `start` .. `start + count - 1` of the source; `index` numbers the file, whose
    `suffix` names its container (segment_suffix)."""

    index: int
    start: int
    count: int
    suffix: str = ".nut"

    @property
    def name(self) -> str:
        return f"segment-{self.index:05d}{self.suffix}"


def segment_suffix(encoding: Encoding) -> str:
    """The container segments are written in: NUT, which keeps the encoder's exact time base
    (Matroska rounds timestamps to milliseconds), except for VP8/VP9 with alpha, whose alpha
    only WebM carries (in NUT it is dropped)."""
    return ".webm" if encoding.encoder in SIDE_ALPHA_ENCODERS and keeps_alpha(encoding) else ".nut"


def plan_segments(info: VideoInfo, seconds: float, suffix: str = ".nut") -> list[Segment]:
    """Cut the source's frames into segments of about `seconds` each, by their timestamps,
    written as `suffix` files."""
    if not seconds > 0:
        raise UsageError(f"segment length must be positive, got {seconds}")
    limit = MAX_VFR_SEGMENT_FRAMES if info.vfr else info.frame_count
    step = seconds / float(info.time_base)
    origin = info.frame_pts[0]
    segments: list[Segment] = []
    start = 0
    for i in range(1, info.frame_count + 1):
        at_end = i == info.frame_count
        if at_end or info.frame_pts[i] - origin >= (len(segments) + 1) * step or i - start >= limit:
            segments.append(Segment(len(segments), start, i - start, suffix))
            start = i
    return segments


def segment_timing(info: VideoInfo, segment: Segment) -> Timing:
    if not info.vfr:
        return Timing(rate=info.frame_rate)
    first = info.frame_pts[segment.start]
    pts = info.frame_pts[segment.start:segment.start + segment.count]
    return Timing(rate=info.frame_rate, time_base=info.time_base,
                  pts=tuple(p - first for p in pts))


def segment_duration(info: VideoInfo, segment: Segment) -> Fraction:
    """Exact length of a segment in seconds: up to the next segment's first frame."""
    if not info.vfr:
        return segment.count / info.frame_rate
    end = segment.start + segment.count
    stop = info.frame_pts[end] if end < info.frame_count else info.end_pts
    return (stop - info.frame_pts[segment.start]) * info.time_base


def encode_segment(src: VideoInfo | str | Path, segment: Segment, transform: Transform,
                   settings: VideoSettings, out_path: str | Path,
                   container: str = ".mkv") -> Path:
    """Decode, transform and encode one segment to `out_path`, written atomically.

    `container` is the suffix of the final output, which the defaults for codec and pixel
    format depend on. Segments are NUT files, which keep the encoder's exact time base
    (Matroska would round timestamps to milliseconds).
    """
    info = src if isinstance(src, VideoInfo) else probe(src)
    return encode_segments(info, [segment], transform, settings, [Path(out_path)], container)[0]


def encode_segments(info: VideoInfo, segments: Sequence[Segment], transform: Transform,
                    settings: VideoSettings, out_paths: Sequence[Path], container: str = ".mkv",
                    on_frame: Callable[[], None] | None = None,
                    on_segment: Callable[[Segment, Path], None] | None = None,
                    on_segment_start: Callable[[Segment], None] | None = None,
                    times: StageTimes | None = None) -> list[Path]:
    """Encode several segments through one overlapped pipeline; returns the finished files.

    The decoder reads ahead into the next segment while the current one is still encoding, so
    the transform does not wait at segment boundaries. The transform runs in a thread of its
    own, which leaves this thread free to take a Ctrl-C at once even while a model call runs in
    native code for seconds (the runtimes release the GIL). On an interrupt every ffmpeg is
    ended and the interrupt raised again; segments finished by then stay on disk.

    on_frame: called after each transformed frame, in the transform's thread.
    on_segment: called with (segment, path) once a segment is complete under its final name,
      in the thread that finished it.
    on_segment_start: called with each segment before its first frame goes to the transform,
      in the transform's thread: where a transform that remembers earlier frames starts afresh.
    times: when given, added to: what each stage spent working and waiting (see stage_times).
    """
    if len(segments) != len(out_paths):
        raise ValueError("one output path per segment is needed")
    encoding = choose_encoding(info, settings, container)
    alpha = keeps_alpha(encoding)  # frames then carry the source's alpha, (H, W, 4)
    deep = deeper_than_source(info, encoding)  # frames then uint16 from the reader on
    stop = threading.Event()
    decoded: queue.Queue[Any] = queue.Queue(maxsize=settings.queue_frames)
    results: queue.Queue[Any] = queue.Queue(maxsize=settings.queue_frames)
    failures: list[BaseException] = []
    times = times if times is not None else StageTimes()
    clock = time.perf_counter

    def fail(error: BaseException) -> None:  # the calling thread re-raises the first failure
        failures.append(error)
        stop.set()

    def feed(segment: Segment, frames: Iterator[np.ndarray]) -> int | None:
        """The segment's frames from `frames` onto the queue: how many there were, None when
        the pipeline stopped."""
        done = 0
        while done < segment.count:
            start = clock()
            frame = next(frames, None)
            got = clock()
            times.decode.busy += got - start
            if frame is None:
                break
            done += 1
            put = _put(decoded, (segment, frame), stop)
            times.decode.waiting += clock() - got
            if not put:
                return None
        return done

    def decode() -> None:
        try:
            for run in decoding_runs(info, segments):
                count = sum(segment.count for segment in run)
                with VideoReader(info, run[0].start, count, alpha=alpha,
                                 deep=deep) as reader:
                    frames = iter(reader)
                    for segment in run:
                        done = feed(segment, frames)
                        if done is None:
                            return
                        # A damaged tail may decode short; anywhere else a short segment is
                        # an error.
                        if done < segment.count and not (segment is segments[-1] and done):
                            raise MediaError(f"segment {segment.index} decoded {done} of "
                                             f"{segment.count} frames", info.path)
                        _put(decoded, (segment, None), stop)
                    next(frames, None)  # to its end, where the reader checks how ffmpeg ended
        except BaseException as e:
            fail(e)

    def run_transform() -> None:
        try:
            current = None
            waited = clock()
            for segment, frame in _drain(decoded, stop, len(segments)):
                if segment is not current and on_segment_start is not None:
                    on_segment_start(segment)
                current = segment
                start = clock()
                times.model.waiting += start - waited
                upscaled = None if frame is None else transform(frame)
                done = clock()
                times.model.busy += done - start
                _put(results, (segment, upscaled), stop)
                if frame is not None and on_frame is not None:
                    on_frame()
                waited = clock()
                times.model.waiting += waited - done
        except BaseException as e:
            fail(e)

    def encode() -> None:
        # A finished segment's encoder is flushed and closed on its own thread, so the next
        # segment's frames keep flowing while it drains its lookahead.
        closing: list[threading.Thread] = []
        try:
            for segment, path in zip(segments, out_paths, strict=True):
                writer = _fill_segment(info, segment, path, encoding, results, stop, times)
                if writer is None:
                    break
                closer = threading.Thread(target=_close_segment, daemon=True,
                                          args=(writer, segment, path, on_segment, fail))
                closer.start()
                closing.append(closer)
        except BaseException as e:
            fail(e)
        finally:
            for closer in closing:
                closer.join()

    # The transform's thread is no daemon: should the process end while a model call is under
    # way, Python waits for that call instead of tearing the runtime down beneath it, which
    # crashes ncnn and ONNX Runtime.
    workers = [threading.Thread(target=decode, name="decode", daemon=True),
               threading.Thread(target=encode, name="encode", daemon=True),
               threading.Thread(target=run_transform, name="transform")]
    for worker in workers:
        worker.start()
    try:
        for worker in workers:
            while worker.is_alive():
                worker.join(0.1)  # in short waits, so that a Ctrl-C is taken on every platform
    except BaseException:  # an interrupt: stop now, keep what is finished
        stop.set()
        ffmpeg.kill_all()
        for worker in workers[:2]:
            worker.join(1.0)
        raise
    if failures:
        raise failures[0]
    return list(out_paths)


def decoding_runs(info: VideoInfo, segments: Sequence[Segment]) -> list[list[Segment]]:
    """The segments grouped into the runs that one decoder reads through: each run of
    consecutive segments (a resumed job skips the finished ones) in one ffmpeg, which seeks
    once. A decoder per segment started an ffmpeg and decoded from the keyframe before it
    every few seconds of the video, while the model waited; a source's keyframes can be 10 s
    apart. (A deinterlaced run is the same frames either way: the reader gives the
    deinterlacer the frames around it, reader.CONTEXT.) A decoder per segment stays where it
    matters: a segment must come out the same whether it follows the one before, is redone on
    resume, or runs alone on another worker, and in a damaged source a frame lost or gained in
    the damage would move every later segment's frames by one, where a seek finds each
    segment's first frame by its time."""
    runs: list[list[Segment]] = []
    apart = info.damaged
    for segment in segments:
        last = runs[-1][-1] if runs else None
        if last is not None and not apart and last.start + last.count == segment.start:
            runs[-1].append(segment)
        else:
            runs.append([segment])
    return runs


def _fill_segment(info: VideoInfo, segment: Segment, path: Path, encoding: Encoding,
                  results: queue.Queue[Any], stop: threading.Event,
                  times: StageTimes) -> VideoWriter | None:
    """Write one segment's frames to a new encoder; None when the pipeline stopped."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # The name is this process's own: an encoder left over from a killed run may still be
    # finishing its file, and must never write into ours.
    partial = path.with_name(f"{path.stem}.{os.getpid()}{PARTIAL}{path.suffix}")
    writer = VideoWriter(partial, encoding, segment_timing(info, segment))
    try:
        while True:
            start = time.perf_counter()
            got = _get(results, stop)
            times.encode.waiting += time.perf_counter() - start
            if got is None:
                writer.abort()  # another stage failed; the calling thread raises its error
                return None
            seg, frame = got
            if frame is None:
                return writer
            if seg.index != segment.index:
                raise MediaError(f"segment {segment.index} received frames of {seg.index}",
                                 info.path)
            start = time.perf_counter()
            writer.write(frame)
            times.encode.busy += time.perf_counter() - start
    except BaseException:
        writer.abort()
        raise


def _close_segment(writer: VideoWriter, segment: Segment, path: Path,
                   on_segment: Callable[[Segment, Path], None] | None,
                   fail: Callable[[BaseException], None]) -> None:
    try:
        with writer:
            writer.close()
        sync_to_disk(writer.path)  # its data reaches the disk before its name says it is done
        os.replace(writer.path, path)
        if on_segment is not None:
            on_segment(segment, path)
    except BaseException as e:
        fail(e)


def sync_to_disk(path: Path) -> None:
    """Flush a file's data, or a folder's renames, to the disk, so that a power cut cannot
    leave a finished name on an empty file. (POSIX only: Windows has no handle to a folder,
    and os.fsync there needs a writable one.)"""
    if os.name != "posix":
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _drain(q: queue.Queue[Any], stop: threading.Event, ends: int) -> Iterable[Any]:
    """Items from `q` until `ends` end-of-segment markers went by or the pipeline stopped."""
    while ends:
        item = _get(q, stop)
        if item is None:
            return
        yield item
        if item[1] is None:
            ends -= 1


def _put(q: queue.Queue[Any], item: Any, stop: threading.Event) -> bool:
    """A bounded put that gives up (False) when another stage failed, so no thread hangs."""
    while not stop.is_set():
        try:
            q.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


def _get(q: queue.Queue[Any], stop: threading.Event) -> Any:
    while not stop.is_set():
        try:
            return q.get(timeout=0.1)
        except queue.Empty:
            continue
    return None
