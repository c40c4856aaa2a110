"""Encode RGB numpy frames into a video file through an ffmpeg pipe.

The RGB -> YUV conversion and the colour tags name the matrix, range, primaries and transfer
explicitly (swscale would otherwise assume BT.601, and an encoder copies no tags on its own).
The common planar formats are converted here before the pipe (yuv.py: half the bytes and
half swscale's time); the others by swscale in the encoder's process.
Frames carry their timing in `Timing`: a constant rate, or for variable-frame-rate sources the
exact timestamps, which a `setpts` expression lays back onto the frames.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from types import TracebackType

import numpy as np

from upscaler.errors import MediaError
from upscaler.media import ffmpeg
from upscaler.media.video.probe import SWS_MATRICES
from upscaler.media.video.reader import SWS_FLAGS
from upscaler.media.video.ycbcr import SWSCALE_16BIT_PEAK, chroma_subsampling, is_rgb, rescaled
from upscaler.media.video.yuv import YuvConverter, converter

# The encoder runs beside the model on the same cores. At the lowest priority it takes the
# cycles the model's threads leave instead of preempting them. In one A/B of bench_job.py (320x180
# x4plus-anime, 2 cores) a job went from 1.30x to 1.21x Tencent ncnn's bare time, within the
# runs' spread. When the encoder is the bottleneck (a GPU model), nothing of ours competes with
# it, so its priority costs nothing.
ENCODER_NICE = 19


@dataclass(frozen=True)
class Encoding:
    """How to encode: an ffmpeg encoder name, its pixel format and options, and colour tags.

    matrix/range/primaries/transfer use ffprobe's names; None leaves that tag unset.
    options: extra encoder arguments such as ("-crf", "18", "-preset", "slow").
    display_aspect: the width / height the picture is shown at, whatever its pixel size: the
      frames are tagged with the pixel aspect that gives it (anamorphic video). None leaves
      pixels square.
    """

    encoder: str
    pix_fmt: str
    matrix: str
    range: str
    primaries: str | None = None
    transfer: str | None = None
    options: tuple[str, ...] = ()
    display_aspect: Fraction | None = None

    @property
    def stored_colour(self) -> tuple[str, str]:
        """(matrix, range) the frames are stored in: the source's, or RGB's own for an RGB
        pixel format, tagged so, or decoders read the planes as YUV in the source's matrix
        (libx264rgb output came back 14 dB from its input)."""
        return ("gbr", "pc") if is_rgb(self.pix_fmt) else (self.matrix, self.range)

    def colour_args(self, stream: str = "") -> list[str]:
        """ffmpeg's output options for these colour tags, for `stream` (":v:0", say) or
        every stream."""
        matrix, value_range = self.stored_colour
        # The option names RGB "rgb" where the filters and ffprobe say "gbr".
        tags = {"colorspace": "rgb" if matrix == "gbr" else matrix, "color_range": value_range,
                "color_primaries": self.primaries, "color_trc": self.transfer}
        return [arg for name, value in tags.items() if value
                for arg in (f"-{name}{stream}", value)]


@dataclass(frozen=True)
class Timing:
    """When each frame is shown. `pts`: per-frame timestamps in `time_base`, relative to the
    first frame, for variable-frame-rate video; None means one frame every 1/`rate` seconds."""

    rate: Fraction
    time_base: Fraction | None = None
    pts: tuple[int, ...] | None = None


def pts_expression(pts: tuple[int, ...]) -> str:
    """A setpts expression giving frame N the timestamp pts[N].

    Runs of equal steps become one linear piece, and the pieces sit in a balanced tree of
    if(lt(N, k)) tests, so the expression stays short for steady stretches and shallow for
    jittery ones (ffmpeg's expression parser is recursive).
    """
    pieces: list[tuple[int, int, int]] = []  # (first frame, its pts, step)
    for i, p in enumerate(pts):
        if pieces:
            first, value, step = pieces[-1]
            if i - first == 1:
                pieces[-1] = (first, value, p - value)
                continue
            if value + (i - first) * step == p:
                continue
        pieces.append((i, p, 0))

    def tree(lo: int, hi: int) -> str:
        if hi - lo == 1:
            first, value, step = pieces[lo]
            return f"{value}+(N-{first})*{step}" if step else str(value)
        mid = (lo + hi) // 2
        return f"if(lt(N,{pieces[mid][0]}),{tree(lo, mid)},{tree(mid, hi)})"

    return tree(0, len(pieces))


def pixel_aspect(display_aspect: Fraction, height: int, width: int) -> Fraction:
    """The pixel aspect that shows a `width` x `height` picture at `display_aspect`.

    Video formats store it as two 16-bit numbers; a ratio beyond that (frame sizes rounded by
    --scale) is approximated, which moves the shape by far less than a pixel.
    """
    sar = display_aspect * height / width
    return 1 / (1 / sar).limit_denominator(65535) if sar > 1 else sar.limit_denominator(65535)


def write_rows(fd: int, frame: np.ndarray) -> None:
    """Write `frame`'s bytes to `fd` in row order, without first copying a frame that is a
    view (an upscaled frame cropped of its border): its rows go out as they lie, gathered
    by os.writev a batch at a time."""
    if frame.flags.c_contiguous or not hasattr(os, "writev"):
        rows = [memoryview(np.ascontiguousarray(frame)).cast("B")]
    else:
        rows = [memoryview(row).cast("B") for row in frame]  # each row lies contiguous
    batch = min(os.sysconf("SC_IOV_MAX") if hasattr(os, "sysconf") else 16, 1024)
    while rows:
        chunk, rows = rows[:batch], rows[batch:]
        written = os.writev(fd, chunk) if len(chunk) > 1 else os.write(fd, chunk[0])
        # A pipe may take less than all (a signal arrived): what is left goes again.
        for i, row in enumerate(chunk):
            if written < len(row):
                rows = [row[written:], *chunk[i + 1:], *rows]
                break
            written -= len(row)


class VideoWriter:
    """Writes (H, W, 3) RGB frames of one dtype and size to `path`, as a context manager;
    (H, W, 4) RGBA ones for an encoding with alpha (swscale makes its planes).

    ffmpeg starts on the first frame, when the size is known. A size the pixel format cannot
    hold (odd with 4:2:0) is padded by repeating the last row or column, so nothing of the
    picture is lost. The file is complete only after `close()` returned; leaving the block
    on an exception kills the encoder and leaves whatever it wrote for the caller to discard.
    """

    def __init__(self, path: str | Path, encoding: Encoding, timing: Timing) -> None:
        self.path = Path(path)
        self.encoding = encoding
        self.timing = timing
        self.frames_written = 0
        self._proc: ffmpeg.Process | None = None
        self._shape: tuple[int, ...] | None = None
        self._dtype: np.dtype | None = None
        self._pad = (0, 0)
        self._yuv: YuvConverter | None = None
        self._deep_rgb = False  # 16-bit frames for an RGB format: rescaled for swscale

    def write(self, frame: np.ndarray) -> None:
        if (frame.ndim != 3 or frame.shape[2] not in (3, 4)
                or frame.dtype not in (np.uint8, np.uint16)):
            raise MediaError(f"expected (H, W, 3) or (H, W, 4) uint8 or uint16 frames, got "
                             f"{frame.shape} {frame.dtype}", self.path)
        if self._proc is None:
            self._start(frame)
        elif frame.shape != self._shape or frame.dtype != self._dtype:
            raise MediaError(f"frame {self.frames_written} is {frame.shape} {frame.dtype}, "
                             f"earlier ones were {self._shape} {self._dtype}", self.path)
        if self._pad != (0, 0):
            frame = np.pad(frame, ((0, self._pad[0]), (0, self._pad[1]), (0, 0)), mode="edge")
        if self._yuv is not None:
            frame = self._yuv.convert(frame)
        elif frame.dtype == np.uint16 and sys.byteorder != "little":
            frame = frame.astype("<u2")
        if self._deep_rgb and self._yuv is None:
            # swscale takes 16-bit RGB for an RGB output as spread over 16 bits (65535 white),
            # where our frames hold white at SWSCALE_16BIT_PEAK: 1023 came out 1020.
            frame = rescaled(np.array(frame), 65535 / SWSCALE_16BIT_PEAK)
        if self._proc is None:  # _start always sets it; this keeps type checkers informed
            raise MediaError("encoder did not start", self.path)
        try:
            write_rows(self._proc.stdin.fileno(), frame)
        except (BrokenPipeError, OSError) as e:
            raise self._proc.error("encoding failed") from e
        self.frames_written += 1

    def _start(self, frame: np.ndarray) -> None:
        self._shape, self._dtype = frame.shape, frame.dtype
        height, width = frame.shape[:2]
        sub_w, sub_h = chroma_subsampling(self.encoding.pix_fmt)
        self._pad = (-height % sub_h, -width % sub_w)
        size = f"{width + self._pad[1]}x{height + self._pad[0]}"
        enc = self.encoding
        alpha = frame.shape[2] == 4
        self._yuv = converter(enc.pix_fmt, enc.matrix, enc.range, frame.dtype,
                              height + self._pad[0], width + self._pad[1], alpha)
        self._deep_rgb = frame.dtype == np.uint16 and is_rgb(enc.pix_fmt)
        if self._yuv is not None:
            raw = enc.pix_fmt  # converted here (yuv.py): the encoder takes the planes as they are
        elif alpha:
            raw = "rgba64le" if frame.dtype == np.uint16 else "rgba"
        else:
            raw = "rgb48le" if frame.dtype == np.uint16 else "rgb24"
        command = self._command(size, raw, pixel_aspect(self.encoding.display_aspect, height, width)
                                if self.encoding.display_aspect is not None else None)
        self._proc = ffmpeg.Process(command, self.path, stdin=True, nice=ENCODER_NICE)

    def _command(self, size: str, raw: str, sar: Fraction | None) -> list[str]:
        enc, timing = self.encoding, self.timing
        filters = []
        out_args = ["-fps_mode", "passthrough"]
        if timing.pts is not None and timing.time_base is not None:
            tb = timing.time_base
            filters += [f"settb={tb.numerator}/{tb.denominator}",
                        f"setpts='{pts_expression(timing.pts)}'"]
            out_args += ["-enc_time_base", f"{tb.numerator}:{tb.denominator}"]
        matrix, value_range = enc.stored_colour
        if is_rgb(enc.pix_fmt):
            filters.append(f"format={enc.pix_fmt}")
        elif raw != enc.pix_fmt:
            filters += [f"scale=out_color_matrix={SWS_MATRICES.get(matrix, 'bt709')}"
                        f":out_range={value_range}:flags={SWS_FLAGS}", f"format={enc.pix_fmt}"]
        # setparams tags the frames, which recent ffmpeg prefers over the -color_* options.
        tags = {"colorspace": matrix, "range": value_range,
                "color_primaries": enc.primaries, "color_trc": enc.transfer}
        filters.append("setparams=" + ":".join(f"{k}={v}" for k, v in tags.items() if v))
        if sar is not None:
            # max: setsar approximates ratios with terms above 100 unless told otherwise.
            filters.append(f"setsar={sar.numerator}/{sar.denominator}:max=65535")
        out_args += enc.colour_args()
        return [ffmpeg.ffmpeg_exe(), "-hide_banner", "-nostdin", "-v", "error", "-y",
                "-f", "rawvideo", "-pix_fmt", raw, "-s", size,
                "-framerate", f"{timing.rate.numerator}/{timing.rate.denominator}",
                "-i", "pipe:0", "-vf", ",".join(filters), "-c:v", enc.encoder,
                "-pix_fmt", enc.pix_fmt, *enc.options, *out_args, "-an", "-sn", "-dn",
                ffmpeg.file_url(self.path)]

    def close(self) -> None:
        """Flush the encoder and wait for the file; MediaError when ffmpeg failed."""
        if self._proc is None:
            raise MediaError("no frames were written", self.path)
        self._proc.finish("encoding failed")
        self._proc.__exit__(None, None, None)

    def abort(self) -> None:
        """Kill the encoder without finishing the file (another stage failed)."""
        if self._proc is not None:
            self._proc.kill()
            self._proc.__exit__(None, None, None)

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._proc is not None:
            self._proc.__exit__(exc_type, exc, tb)
