"""Video as numbered segments of frames: plan them, encode each to its own file, join and mux.

A segment is the unit that resume and a Ray scale-out build on: `encode_segment` needs only the
source, the segment's frame range and the settings, and writes one self-contained file
atomically. `join_and_mux` joins the segment files losslessly with ffmpeg's concat demuxer and
copies every other stream of the source (audio, subtitles, attachments, chapters, metadata)
untouched into the output in the same pass.

Inside `encode_segments` decoding, the transform and encoding overlap: a decoder thread and an
encoder thread each talk to their ffmpeg through bounded queues, while the transform (the model)
runs in the calling thread. Memory holds at most a few queued frames, however long the video.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from upscaler.errors import MediaError, OutputExistsError, UsageError
from upscaler.media import ffmpeg
from upscaler.media.probe import VideoInfo, probe
from upscaler.media.stage_times import StageTimes
from upscaler.media.video_reader import VideoReader
from upscaler.media.video_writer import Encoding, Timing, VideoWriter

Transform = Callable[[np.ndarray], np.ndarray]

# A variable-frame-rate segment carries its timestamps in a setpts expression on the command
# line; this bound keeps that expression far below any OS limit on argument length.
MAX_VFR_SEGMENT_FRAMES = 1000

# Generic codec names -> encoders to try, hardware first; the last one is the software fallback.
_CODEC_CANDIDATES = {
    "h264": ("h264_videotoolbox", "h264_nvenc", "h264_qsv", "h264_amf", "libx264"),
    "hevc": ("hevc_videotoolbox", "hevc_nvenc", "hevc_qsv", "hevc_amf", "libx265"),
    "av1": ("av1_nvenc", "av1_qsv", "av1_amf", "libsvtav1", "libaom-av1"),
    "vp9": ("vp9_qsv", "libvpx-vp9"),
}
_CODEC_ALIASES = {"h265": "hevc", "x265": "hevc", "avc": "h264", "x264": "h264"}


@dataclass(frozen=True)
class VideoSettings:
    """How to encode the upscaled video. Names follow ffmpeg's options.

    codec: an ffmpeg encoder (libx264, hevc_nvenc...) used as given, or a codec name (h264,
      hevc, av1, vp9) that picks a working hardware encoder if the machine has one, else the
      software encoder. None: H.264 (VP9 for .webm), or H.265 for sources deeper than 8 bits.
    crf: quality, in the encoder's CRF scale; mapped to -cq (NVENC), -global_quality (QSV),
      constant QP (AMF) or -q:v (VideoToolbox, 100 - 2 * crf). None keeps the encoder default.
    preset: passed to -preset as is (medium, slow, p5...). None keeps the encoder default.
    pix_fmt: None keeps the source's pixel format (and so its bit depth and chroma) when the
      encoder takes it, else the closest 4:2:0 format of the same depth.
    segment_seconds: target length of a segment; cuts fall on the first frame at or after each
      multiple, so segments hold whole frames.
    queue_frames: frames buffered between each pair of stages; more smooths uneven stages at
      the cost of memory (frame size x 2 x queue_frames).
    overwrite: replace an existing output instead of raising OutputExistsError.
    """

    codec: str | None = None
    crf: int | None = None
    preset: str | None = None
    pix_fmt: str | None = None
    segment_seconds: float = 4.0
    queue_frames: int = 4
    overwrite: bool = False

    def __post_init__(self) -> None:
        if not self.segment_seconds > 0:
            raise UsageError(f"segment_seconds must be positive, got {self.segment_seconds}")
        if self.queue_frames < 1:
            raise UsageError(f"queue_frames must be at least 1, got {self.queue_frames}")
        if self.crf is not None and self.crf < 0:
            raise UsageError(f"crf must not be negative, got {self.crf}")


@dataclass(frozen=True)
class Segment:
    """Frames `start` .. `start + count - 1` of the source; `index` numbers the file."""

    index: int
    start: int
    count: int

    @property
    def name(self) -> str:
        return f"segment-{self.index:05d}.nut"


def plan_segments(info: VideoInfo, seconds: float) -> list[Segment]:
    """Cut the source's frames into segments of about `seconds` each, by their timestamps."""
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
            segments.append(Segment(len(segments), start, i - start))
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


def choose_encoding(info: VideoInfo, settings: VideoSettings, container: str) -> Encoding:
    """The encoder, pixel format, options and colour tags for a source and an output suffix."""
    exe = ffmpeg.ffmpeg_exe()
    encoder = _pick_encoder(exe, info, settings.codec, container)
    pix_fmt = settings.pix_fmt or _pick_pix_fmt(exe, encoder, info)
    options: list[str] = []
    if settings.crf is not None:
        options += _quality_args(encoder, settings.crf)
    if settings.preset:
        options += ["-preset", settings.preset]
    if encoder == "libx265":
        options += ["-x265-params", "log-level=error"]
    return Encoding(encoder=encoder, pix_fmt=pix_fmt, matrix=info.yuv_matrix,
                    range=info.yuv_range, primaries=info.color_primaries,
                    transfer=info.color_transfer, options=tuple(options))


def _pick_encoder(exe: str, info: VideoInfo, codec: str | None, container: str) -> str:
    available = ffmpeg.encoders(exe)
    if codec is None:
        codec = "vp9" if container == ".webm" else "hevc" if info.bit_depth > 8 else "h264"
    codec = _CODEC_ALIASES.get(codec, codec)
    if codec not in _CODEC_CANDIDATES:
        if codec not in available:
            raise UsageError(f"this ffmpeg has no encoder named {codec!r}")
        return codec
    *hardware, software = [c for c in _CODEC_CANDIDATES[codec] if c in available] or [None]
    for name in hardware:
        if name and ffmpeg.encoder_works(exe, name):
            return name
    if software is None:
        raise UsageError(f"this ffmpeg has no encoder for {codec}")
    return software


def _pick_pix_fmt(exe: str, encoder: str, info: VideoInfo) -> str:
    supported = ffmpeg.encoder_pix_fmts(exe, encoder)
    deep = "yuv420p10le" if info.bit_depth <= 10 else "yuv420p12le"
    wanted = [info.pix_fmt, deep, "p010le", "yuv420p"] if info.bit_depth > 8 else [info.pix_fmt]
    wanted += ["yuv420p", "nv12"]
    for name in wanted:
        if not supported or name in supported:
            return name
    return supported[0]


def _quality_args(encoder: str, crf: int) -> list[str]:
    if encoder.endswith("_nvenc"):
        return ["-rc", "vbr", "-cq", str(crf), "-b:v", "0"]
    if encoder.endswith("_qsv"):
        return ["-global_quality", str(crf)]
    if encoder.endswith("_amf"):
        return ["-rc", "cqp", "-qp_i", str(crf), "-qp_p", str(crf), "-qp_b", str(crf)]
    if encoder.endswith("_videotoolbox"):
        return ["-q:v", str(max(1, min(100, 100 - 2 * crf)))]
    if encoder in ("libvpx-vp9", "libaom-av1"):
        return ["-crf", str(crf), "-b:v", "0"]
    return ["-crf", str(crf)]


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
                    times: StageTimes | None = None) -> list[Path]:
    """Encode several segments through one overlapped pipeline; returns the finished files.

    The decoder reads ahead into the next segment while the current one is still encoding, so
    the transform does not wait at segment boundaries. `on_frame` is called in this thread
    after each transformed frame. `times`, when given, is added to: what each stage spent
    working and waiting (see stage_times).
    """
    if len(segments) != len(out_paths):
        raise ValueError("one output path per segment is needed")
    encoding = choose_encoding(info, settings, container)
    stop = threading.Event()
    decoded: queue.Queue[Any] = queue.Queue(maxsize=settings.queue_frames)
    results: queue.Queue[Any] = queue.Queue(maxsize=settings.queue_frames)
    failures: list[BaseException] = []
    times = times if times is not None else StageTimes()
    clock = time.perf_counter

    def decode() -> None:
        try:
            for segment in segments:
                with VideoReader(info, segment.start, segment.count) as reader:
                    frames = iter(reader)
                    while True:
                        start = clock()
                        frame = next(frames, None)
                        got = clock()
                        times.decode.busy += got - start
                        if frame is None:
                            break
                        put = _put(decoded, (segment, frame), stop)
                        times.decode.waiting += clock() - got
                        if not put:
                            return
                    # A damaged tail may decode short; anywhere else a short segment is an error.
                    tolerated = segment is segments[-1] and reader.frames_read > 0
                    if reader.frames_read < segment.count and not tolerated:
                        raise MediaError(f"segment {segment.index} decoded {reader.frames_read}"
                                         f" of {segment.count} frames", info.path)
                _put(decoded, (segment, None), stop)
        except BaseException as e:  # handed to the calling thread, which re-raises it
            failures.append(e)
            stop.set()

    def encode() -> None:
        # A finished segment's encoder is flushed and closed on its own thread, so the next
        # segment's frames keep flowing while it drains its lookahead.
        closing: list[threading.Thread] = []
        try:
            for segment, path in zip(segments, out_paths, strict=True):
                writer = _fill_segment(info, segment, path, encoding, results, stop, times)
                if writer is None:
                    break
                closer = threading.Thread(target=_close_segment, args=(writer, path, failures,
                                                                       stop), daemon=True)
                closer.start()
                closing.append(closer)
        except BaseException as e:
            failures.append(e)
            stop.set()
        finally:
            for closer in closing:
                closer.join()

    workers = [threading.Thread(target=decode, name="decode", daemon=True),
               threading.Thread(target=encode, name="encode", daemon=True)]
    for worker in workers:
        worker.start()
    try:
        waited = clock()
        for segment, frame in _drain(decoded, stop, len(segments)):
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
    except BaseException:
        stop.set()
        raise
    finally:
        for worker in workers:
            worker.join()
    if failures:
        raise failures[0]
    return list(out_paths)


def _fill_segment(info: VideoInfo, segment: Segment, path: Path, encoding: Encoding,
                  results: queue.Queue[Any], stop: threading.Event,
                  times: StageTimes) -> VideoWriter | None:
    """Write one segment's frames to a new encoder; None when the pipeline stopped."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.stem}.partial{path.suffix}")
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


def _close_segment(writer: VideoWriter, path: Path, failures: list[BaseException],
                   stop: threading.Event) -> None:
    try:
        with writer:
            writer.close()
        os.replace(writer.path, path)
    except BaseException as e:
        failures.append(e)
        stop.set()


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


def work_dir(dst: str | Path) -> Path:
    """Where the segments of `dst` are kept until the final mux succeeds: next to the output."""
    dst = Path(dst)
    return dst.parent / f".{dst.name}.segments"


def join_and_mux(info: VideoInfo, segments: Sequence[Segment], files: Sequence[Path],
                 dst: str | Path, encoder: str = "", overwrite: bool = False) -> Path:
    """Join segment files losslessly and mux them with the source's other streams into `dst`.

    Each segment's exact length goes into the concat list, so timestamps (and audio sync) do
    not drift however many segments there are. `dst` appears only when complete: ffmpeg writes
    a hidden temporary name that is renamed at the end. `encoder` made the segments; it
    decides the codec tag MP4 needs (hvc1, which Apple players require for HEVC).
    """
    dst = Path(dst)
    partial = dst.with_name(f".{dst.stem}.partial{dst.suffix}")
    listing = dst.with_name(f".{dst.name}.ffconcat")
    lines = ["ffconcat version 1.0"]
    for segment, path in zip(segments, files, strict=True):
        escaped = str(Path(path).resolve()).replace("'", "'\\''")
        lines += [f"file '{escaped}'", f"duration {float(segment_duration(info, segment)):.6f}"]
    listing.write_text("\n".join(lines) + "\n", encoding="utf-8")
    # ffmpeg moves each input to start at zero, the source by its earliest stream (an audio
    # pre-roll, say). The joined video starts at zero, so it gets the source video's lead over
    # that earliest stream; chapters move with the source, so everything stays in step.
    offset = info.seconds(info.frame_pts[0]) - info.start_time
    try:
        ffmpeg.run([ffmpeg.ffmpeg_exe(), "-hide_banner", "-nostdin", "-v", "error", "-y",
                    "-f", "concat", "-safe", "0", "-itsoffset", f"{offset:.6f}",
                    "-i", str(listing), "-i", str(info.path),
                    "-map", "0:v:0", "-map", "1", "-map", f"-1:{info.video_index}",
                    "-map", "-1:d?", "-map_metadata", "1", "-map_chapters", "1", "-c", "copy",
                    *_container_args(info, dst, encoder), "-f", _MUXERS[dst.suffix.lower()],
                    str(partial)], dst)
        if dst.exists() and not overwrite:
            raise OutputExistsError("appeared while encoding; not replaced", dst)
        os.replace(partial, dst)
    finally:
        listing.unlink(missing_ok=True)
        partial.unlink(missing_ok=True)
    return dst


_MP4_LIKE = (".mp4", ".m4v", ".mov")
_MUXERS = {".mkv": "matroska", ".webm": "webm", ".mp4": "mp4", ".m4v": "mp4", ".mov": "mov"}
_WEBM_CODECS = {"vp8", "vp9", "av1", "opus", "vorbis", "webvtt"}
_TEXT_SUBTITLES = {"subrip", "srt", "ass", "ssa", "webvtt", "text", "mov_text"}


def check_container(info: VideoInfo, dst: str | Path) -> None:
    """MediaError naming `dst` when its format cannot hold the source's other streams.

    Called before any work is done, so a long job does not fail at the final mux.
    """
    dst = Path(dst)
    suffix = dst.suffix.lower()
    if suffix not in _MUXERS:
        raise MediaError(f"unknown video format {suffix!r}; use one of {', '.join(_MUXERS)}", dst)
    if suffix == ".webm":
        for s in info.streams:
            if s.index != info.video_index and s.codec not in _WEBM_CODECS:
                raise MediaError(f".webm cannot hold the {s.codec} {s.kind} stream of "
                                 f"{info.path.name}; write .mkv instead", dst)
    if suffix not in _MP4_LIKE:
        return
    if any(s.kind == "attachment" for s in info.streams):
        raise MediaError(f"{suffix} cannot hold the attachments (fonts) of {info.path.name};"
                         " write .mkv instead", dst)
    for s in info.streams:
        if s.kind == "subtitle" and s.codec not in _TEXT_SUBTITLES:
            raise MediaError(f"{suffix} cannot hold the {s.codec} subtitles of "
                             f"{info.path.name}; write .mkv instead", dst)


def _container_args(info: VideoInfo, dst: Path, encoder: str) -> list[str]:
    """Per-container fixes: what a format cannot hold as is, and the video stream's tags."""
    check_container(info, dst)
    suffix = dst.suffix.lower()
    args: list[str] = []
    source_video = next(s for s in info.streams if s.index == info.video_index)
    for key in ("language", "title"):
        if key in source_video.tags:
            args += ["-metadata:s:v:0", f"{key}={source_video.tags[key]}"]
    subtitles = [s for s in info.streams if s.kind == "subtitle"]
    if suffix in _MP4_LIKE:
        # Text subtitles must become MP4's own text format; that is lossless for plain text.
        args += ["-c:s", "mov_text"] if subtitles else []
        if info.vfr and info.time_base.numerator == 1:
            args += ["-video_track_timescale", str(info.time_base.denominator)]
        args += ["-movflags", "+faststart"]
        if encoder in _CODEC_CANDIDATES["hevc"] or encoder == "libkvazaar":
            args += ["-tag:v", "hvc1"]
    elif suffix == ".mkv":
        for n, s in enumerate(subtitles):
            if s.codec == "mov_text":
                args += [f"-c:s:{n}", "srt"]
    return args
