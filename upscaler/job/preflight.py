"""Try a job's encoder settings on one tiny frame before any work, and say which option is wrong.

ffmpeg lists encoders it cannot use, takes pixel formats and presets as free text and finds
out only when the encoder opens, and refuses a codec a container cannot hold only when the
output is written. Each of these would otherwise surface after hours of decoding and
upscaling, so `check_encoding` encodes one frame with exactly the arguments the job's writer
will use and muxes it into the output's container, and turns a failure into a UsageError
that names the option at fault. Results are cached, so a batch pays once per setting.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re
import tempfile
from fractions import Fraction
from pathlib import Path

import numpy as np

from upscaler.errors import MediaError, UsageError
from upscaler.media import ffmpeg
from upscaler.media.ffmpeg_facts import remembered
from upscaler.media.video.encoding import VideoSettings, choose_encoding, deeper_than_source
from upscaler.media.video.mux import MUXERS, video_tag_args
from upscaler.media.video.probe import VideoInfo
from upscaler.media.video.writer import Encoding, Timing, VideoWriter

# Big enough for hardware encoders' minimum sizes, small enough to cost milliseconds.
_TRIAL_SIZE = (144, 256)
# Encoders that open a device (NVIDIA, Intel, AMD, Apple, VA-API, V4L2, Media Foundation...).
HARDWARE_ENCODER = re.compile(r"_(nvenc|qsv|amf|videotoolbox|vaapi|v4l2m2m|mf|vulkan|omx|"
                              r"rkmpp|mediacodec|d3d12va)$")


def check_encoding(info: VideoInfo, settings: VideoSettings, dst: Path) -> Encoding:
    """The encoding `dst` will be written with, tried on one frame in its container.

    Raises UsageError naming `dst` and the option at fault (--codec, --pix-fmt, --preset,
    --crf) when the encoder is missing, refuses a setting or cannot go into the container.
    """
    suffix = dst.suffix.lower()
    codec = f"--codec {settings.codec}" if settings.codec else "the default codec"
    try:
        encoding = choose_encoding(info, settings, suffix)
    except UsageError as e:
        raise UsageError(f"{codec}: {e.message}", dst) from e
    top = _CRF_TOP.get(encoding.encoder)
    if settings.crf is not None and top is not None and settings.crf > top:
        # The trial cannot find it: x264 takes a higher rate factor as its top one.
        raise UsageError(f"--crf {settings.crf}: {encoding.encoder} takes 0-{top} (it would "
                         f"encode at {top} instead)", dst)
    exe = ffmpeg.ffmpeg_exe()
    if settings.pix_fmt:
        accepted = ffmpeg.encoder_pix_fmts(exe, encoding.encoder)
        if accepted and settings.pix_fmt not in accepted:
            raise UsageError(f"--pix-fmt {settings.pix_fmt}: {encoding.encoder} does not accept "
                             f"it; it takes {', '.join(accepted)}", dst)
    # As the job's frames come: 16-bit for a deep source or output (deeper_than_source).
    deep = info.bit_depth > 8 or deeper_than_source(info, encoding)
    neutral = _neutral(encoding)
    encode_failed, mux_failed = _trial(exe, neutral, deep, suffix)
    if encode_failed:
        raise UsageError(_blame(info, settings, encoding, suffix, deep, encode_failed), dst)
    if mux_failed:
        fits = [s for s in MUXERS if s != suffix and _trial(exe, neutral, deep, s)[1] is None]
        hint = f"; write {', '.join(fits)} instead" if fits else f" ({mux_failed})"
        raise UsageError(f"{codec}: a {suffix} file cannot hold {encoding.encoder} video{hint}",
                         dst)
    return encoding


# The highest rate factor of encoders that take a higher one as it without a word.
_CRF_TOP = {"libx264": 51, "libx264rgb": 51}


def _blame(info: VideoInfo, settings: VideoSettings, encoding: Encoding, suffix: str,
           deep: bool, failed: str) -> str:
    """Which option made the trial fail: the first whose removal lets it pass."""
    exe = ffmpeg.ffmpeg_exe()
    suspects = [("--preset", settings.preset, dataclasses.replace(settings, preset=None)),
                ("--crf", settings.crf, dataclasses.replace(settings, crf=None)),
                ("--pix-fmt", settings.pix_fmt, dataclasses.replace(settings, pix_fmt=None))]
    for flag, value, without in suspects:
        if value is None:
            continue
        other = _neutral(choose_encoding(info, without, suffix))
        if _trial(exe, other, deep, suffix)[0] is None:
            return f"{flag} {value}: {encoding.encoder} does not accept it ({failed})"
    codec = f"--codec {settings.codec}" if settings.codec else encoding.encoder
    return f"{codec}: {encoding.encoder} cannot encode here ({failed})"


def _neutral(encoding: Encoding) -> Encoding:
    """The encoding without the source's colour tags, which never make a trial fail, so
    that the cache serves every source of a batch."""
    return dataclasses.replace(encoding, matrix="bt709", range="tv", primaries=None,
                               transfer=None)


@functools.lru_cache(maxsize=64)
def _trial(exe: str, encoding: Encoding, deep: bool, suffix: str) -> tuple[str | None, str | None]:
    """Why one frame of `encoding` does not encode, and why its segment does not go into a
    `suffix` file: None for each that works. One segment serves both (one ffmpeg run less
    before a job's first frame).

    A software encoder that passed is remembered with the binary (ffmpeg_facts.py): it passes
    again, and the next process starts its first job 50 ms sooner. A hardware encoder is
    tried every time (its device or driver may have gone), as is any that failed (for the
    reason, which the user needs to read afresh)."""
    def ask() -> list[str | None]:
        return list(_try(exe, encoding, deep, suffix))

    if HARDWARE_ENCODER.search(encoding.encoder):
        return _try(exe, encoding, deep, suffix)
    question = f"trial {json.dumps([dataclasses.astuple(encoding), deep, suffix], default=str)}"
    encode_failed, mux_failed = remembered(exe, question, ask, keep=lambda r: r == [None, None])
    return encode_failed, mux_failed


def _try(exe: str, encoding: Encoding, deep: bool, suffix: str) -> tuple[str | None, str | None]:
    with tempfile.TemporaryDirectory(prefix="upscaler-trial-") as tmp:
        try:
            segment = _trial_segment(encoding, deep, Path(tmp))
        except MediaError as e:
            return e.message.removeprefix("encoding failed: "), None
        out = Path(tmp) / f"trial{suffix}"
        try:
            ffmpeg.run([exe, "-hide_banner", "-nostdin", "-v", "error", "-y", "-i", str(segment),
                        "-map", "0", "-c", "copy", *video_tag_args(suffix, encoding.encoder),
                        "-f", MUXERS[suffix], str(out)], out)
        except MediaError as e:
            return None, e.message.split(" failed: ", 1)[-1]
    return None, None


def _trial_segment(encoding: Encoding, deep: bool, folder: Path) -> Path:
    """One frame through the writer the job uses, into a segment file as the job writes them."""
    dtype = np.uint16 if deep else np.uint8
    frame = np.zeros((*_TRIAL_SIZE, 3), dtype)
    frame[::2, ::2] = np.iinfo(dtype).max // 2  # a pattern, so that the encoder has work
    path = folder / "trial.nut"
    with VideoWriter(path, encoding, Timing(rate=Fraction(24))) as w:
        w.write(frame)
        w.close()
    return path
