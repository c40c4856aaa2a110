"""Whether a video job fits on the disk: an estimate of what it writes, against free space.

A job writes its segments into the work folder, then the output while every segment still
exists (they go only after the final mux), so at its peak the disk holds all segments and the
whole output. The output is the segments' video plus the source's other streams.

A segment's size is estimated by a trial that costs seconds, not the model's hours: a few
frames from a few spots of the source are enlarged to the output size with a Lanczos filter,
standing in for the model, and encoded with the job's own encoder and options, one fresh
encoder per spot as the job starts one per segment. A segment then costs one keyframe plus
(frames - 1) of the other frames, at the sizes the trial measured, times a margin (see
margin()). Where even uncompressed frames would fit, the trial is skipped.
"""

from __future__ import annotations

import errno
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from upscaler.errors import DiskFullError, MediaError
from upscaler.media import ffmpeg
from upscaler.media.video.probe import VideoInfo
from upscaler.media.video.scan import Watch
from upscaler.media.video.segments import Segment
from upscaler.media.video.writer import Encoding
from upscaler.media.video.ycbcr import chroma_subsampling, is_rgb

# The real segments over the trial's estimate, measured by bench/disk_estimate.py on drawn
# animation (160x90, 320x180 and 480x270, 96 frames, upscaled 4x by realesr-animevideov3):
# x264 at CRF 28 1.09-1.15, at its default 23 1.23-1.26, 20 1.35-1.38, 18 1.47-1.50,
# 16 1.64-1.72, 12 2.07-2.31; x264 slow 1.17-1.25; x265 at its default 1.09-1.20. The model
# draws fine detail that Lanczos lacks, and the lower the CRF, the more of it the encoder
# keeps; so the margin is MARGIN, raised by LOW_CRF_STEP for each step of CRF below 23.
MARGIN = 1.3
LOW_CRF_STEP = 1.05
# Two spots of 24 frames: with 8-frame spots the trial ran 7-25% lower against a whole
# Lanczos-upscaled job, as short runs give the rate control too little to look ahead to.
TRIAL_SPOTS = 2
TRIAL_FRAMES = 24
# What the trial is doing, as a watcher hears it (the stages of a job's bar, scan.Watch).
ESTIMATING = "estimating the output's size"
# What stands in for the model in the trial: an ffmpeg filter to the output size.
STAND_IN = "scale={width}:{height}:flags=lanczos"

_DISK_FULL_ERRNOS = {errno.ENOSPC, errno.EFBIG, getattr(errno, "EDQUOT", errno.ENOSPC)}
_DISK_FULL_TEXTS = ("No space left on device", "Disk quota exceeded", "File too large")


@dataclass(frozen=True)
class Estimate:
    """Bytes a job will add: `work` in the work folder (segments still to encode), `output`
    for the final file."""

    work: int
    output: int


def is_disk_full(error: BaseException) -> bool:
    """Whether a failed write failed because its disk (or quota) is full."""
    if isinstance(error, OSError):
        return error.errno in _DISK_FULL_ERRNOS
    return isinstance(error, MediaError) and any(t in error.message for t in _DISK_FULL_TEXTS)


def margin(crf: int | None) -> float:
    """What the trial's estimate is multiplied by for a job at this CRF (None: the encoder's
    default)."""
    return MARGIN * LOW_CRF_STEP ** max(0, 23 - crf) if crf is not None else MARGIN


def check_space(info: VideoInfo, encoding: Encoding, crf: int | None,
                segments: Sequence[Segment], todo: Sequence[Segment], out_size: tuple[int, int],
                work: Path, dst: Path, watch: Watch | None = None) -> Estimate | None:
    """DiskFullError with the estimate when the job cannot fit; the estimate, or None when
    even uncompressed frames would fit and no trial was needed.

    crf: the one the user gave, if any. segments: the whole plan; todo: those still to encode
    (the rest are on disk already). out_size: (width, height) of the upscaled frames.
    watch: hears how far the trial encode has come (trial_sizes).
    """
    others = max(0, info.path.stat().st_size - info.video_bytes)
    raw = _raw_frame_bytes(encoding.pix_fmt, out_size)
    bound = Estimate(work=sum(s.count for s in todo) * raw,
                     output=sum(s.count for s in segments) * raw + others)
    if _fits(bound, work, dst) is None:
        return None
    first, rest = trial_sizes(info, encoding, out_size, watch)

    def size(group: Sequence[Segment]) -> int:
        return round(margin(crf) * sum(first + (s.count - 1) * rest for s in group))

    estimate = Estimate(work=size(todo), output=size(segments) + others)
    problem = _fits(estimate, work, dst)
    if problem:
        raise DiskFullError(f"not enough disk space: {problem}", dst)
    return estimate


def estimate_video_bytes(info: VideoInfo, encoding: Encoding, sources: Sequence[np.ndarray],
                         outputs: Sequence[np.ndarray],
                         trial: tuple[int, int] | None = None) -> int:
    """The size of a whole upscaled video whose frames look like `outputs`, the model's
    results for the source frames `sources` (RGB, uint8 or uint16), at `encoding`.

    The trial above gives the encoder's sizes at the output size for the Lanczos stand-in;
    the model's own frames, encoded beside the stand-in's of the same source frames, say how
    much more (or less) the model's detail costs. No margin: this is a guess for the user, not
    a guard against a full disk. `trial`: trial_sizes' answer at the outputs' size, when the
    caller has it already.
    """
    height, width = outputs[0].shape[:2]
    first, rest = trial or trial_sizes(info, encoding, (width, height))
    ratio = (_encoded_bytes(info, encoding, outputs, None)
             / max(1, _encoded_bytes(info, encoding, sources, (width, height))))
    others = max(0, info.path.stat().st_size - info.video_bytes)
    return round((first + (info.frame_count - 1) * rest) * ratio) + others


def _encoded_bytes(info: VideoInfo, encoding: Encoding, frames: Sequence[np.ndarray],
                   size: tuple[int, int] | None) -> int:
    """Bytes of `frames` encoded each as a keyframe at `encoding`, enlarged to `size` by the
    stand-in first when given."""
    height, width = frames[0].shape[:2]
    deep = frames[0].dtype == np.uint16
    target_w, target_h = size or (width, height)
    sub_w, sub_h = chroma_subsampling(encoding.pix_fmt)
    target_w, target_h = target_w + -target_w % sub_w, target_h + -target_h % sub_h
    args = [ffmpeg.ffmpeg_exe(), "-hide_banner", "-nostdin", "-v", "error", "-f", "rawvideo",
            "-pix_fmt", "rgb48le" if deep else "rgb24", "-s", f"{width}x{height}",
            "-i", "pipe:0", "-vf", STAND_IN.format(width=target_w, height=target_h)
            + f",format={encoding.pix_fmt}", "-c:v", encoding.encoder,
            "-pix_fmt", encoding.pix_fmt, *encoding.options, "-g", "1", "-f", "framecrc", "-"]
    with ffmpeg.Process(args, info.path, stdin=True, stdout=True) as proc:
        for frame in frames:
            wire = frame.astype("<u2") if deep and sys.byteorder != "little" else frame
            proc.stdin.write(np.ascontiguousarray(wire).tobytes())
        proc.stdin.close()
        out = proc.stdout.read().decode()
        proc.finish("the encode for the output size estimate failed")
    return sum(int(line.split(",")[4]) for line in out.splitlines()
               if line and not line.startswith("#"))


def _fits(estimate: Estimate, work: Path, dst: Path) -> str | None:
    """None when it fits, else what is needed where and what to do, as a phrase."""
    out_dir = dst.parent
    elsewhere = "put the segments on another disk with --work-dir"
    if work.stat().st_dev == out_dir.stat().st_dev:
        need, free = estimate.work + estimate.output, shutil.disk_usage(work).free
        if need > free:
            return (f"the job needs about {_size(need)} ({_size(estimate.work)} of segments "
                    f"and {_size(estimate.output)} of output) and {out_dir} has "
                    f"{_size(free)} free; free some space, or {elsewhere}")
        return None
    # On two disks --work-dir helps the segments' alone: the output is where it was asked.
    for what, need, folder, remedy in (
            ("the segments need", estimate.work, work, elsewhere),
            ("the output needs", estimate.output, out_dir, "write it to another disk")):
        free = shutil.disk_usage(folder).free
        if need > free:
            return (f"{what} about {_size(need)} and {folder} has {_size(free)} free; free "
                    f"some space, or {remedy}")
    return None


def _raw_frame_bytes(pix_fmt: str, out_size: tuple[int, int]) -> int:
    """An upper bound of an encoded frame: the frame uncompressed (encoders stay under it),
    plus a tenth for containers and the odd incompressible frame."""
    width, height = out_size
    described = ffmpeg.pix_fmts(ffmpeg.ffmpeg_exe()).get(pix_fmt)
    per_sample = 2 if described and described.depth > 8 else 1
    if is_rgb(pix_fmt):
        samples = 3.0
    else:
        sub_w, sub_h = chroma_subsampling(pix_fmt)
        samples = 1 + 2 / (sub_w * sub_h)
    return int(width * height * samples * per_sample * 1.1) + 1


def trial_sizes(info: VideoInfo, encoding: Encoding, out_size: tuple[int, int],
                watch: Watch | None = None) -> tuple[int, int]:
    """(keyframe bytes, other frames' mean bytes) of the job's encoder at the output size.
    `watch` hears how many of the trial's frames are encoded (ESTIMATING; 25 s for a 4K
    output on 2 cores)."""
    exe = ffmpeg.ffmpeg_exe()
    encoded = 0

    def on_line(line: str) -> None:
        nonlocal encoded
        if watch is not None and line.strip() and not line.startswith("#"):
            encoded += 1
            watch(ESTIMATING, encoded, TRIAL_SPOTS * TRIAL_FRAMES)

    if watch is not None:
        # x264 holds its first frame back for its lookahead: at 4K, seconds before any
        # comes out, which the bar at 0 explains.
        watch(ESTIMATING, 0, TRIAL_SPOTS * TRIAL_FRAMES)

    width, height = out_size
    sub_w, sub_h = chroma_subsampling(encoding.pix_fmt)
    width, height = width + -width % sub_w, height + -height % sub_h
    firsts: list[int] = []
    rests: list[int] = []
    for k in range(TRIAL_SPOTS):
        start = info.seconds(info.frame_pts[info.frame_count * k // TRIAL_SPOTS])
        args = [exe, "-hide_banner", "-nostdin", "-v", "error",
                "-ss", f"{max(0.0, start - info.start_time):.6f}", "-i",
                ffmpeg.file_url(info.path), "-map", f"0:{info.video_index}", "-frames:v",
                str(TRIAL_FRAMES), "-vf",
                STAND_IN.format(width=width, height=height) + f",format={encoding.pix_fmt}",
                "-c:v", encoding.encoder, "-pix_fmt", encoding.pix_fmt, *encoding.options,
                "-f", "framecrc", "-"]
        text = ffmpeg.run_watched(args, info.path, on_line)
        sizes = [int(line.split(",")[4]) for line in text.splitlines()
                 if line and not line.startswith("#")]
        if sizes:
            firsts.append(sizes[0])
            rests += sizes[1:]
    if not firsts:
        raise MediaError("the trial encode for the disk space estimate wrote nothing",
                         info.path)
    first = sum(firsts) // len(firsts)
    return first, (sum(rests) // len(rests) if rests else first)


def _size(n: float) -> str:
    units = ["bytes", "KiB", "MiB", "GiB"]
    while n >= 1024 and len(units) > 1:
        n /= 1024
        units.pop(0)
    return f"{n:.0f} bytes" if units[0] == "bytes" else f"{n:.1f} {units[0]}"
