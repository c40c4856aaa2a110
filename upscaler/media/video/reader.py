"""Decode a run of frames from a video into RGB numpy arrays, streamed through an ffmpeg pipe.

Frames never touch the disk. Sources deeper than 8 bits come out as 48-bit RGB (uint16), the
rest as 24-bit (uint8), or widened to 48-bit where asked (`deep`: an output deeper than its
source); RGBA of the same depth where the job keeps the source's alpha. Planar
Y'CbCr in the common matrices comes through the pipe as stored and is converted here (rgb.py:
a third of swscale's CPU, half the pipe's bytes); any other format is converted by swscale,
which is told the source's matrix and range because it otherwise falls back to BT.601 and
shifts the colours of HD video. ffmpeg applies the display rotation and any deinterlacing, so
frames arrive upright in `info.display_size`.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from types import TracebackType

import cv2
import numpy as np

from upscaler.errors import MediaError
from upscaler.media import ffmpeg
from upscaler.media.video import rgb
from upscaler.media.video.probe import SWS_MATRICES, VideoInfo
from upscaler.media.video.ycbcr import SWSCALE_16BIT_PEAK, is_rgb, rescaled, swscale_white

# Containers whose seeks find the keyframe before a time through an index: Matroska/WebM,
# MP4/MOV, AVI, NUT. Any other is sought early and cut by timestamps (`_command`).
_INDEXED = {"matroska,webm", "mov,mp4,m4a,3gp,3g2,mj2", "avi", "nut"}
# How far before a segment a source without an index is sought: longer than a broadcast's or
# a DVD's keyframe interval (0.5-2 s), decoded and thrown away at each seek.
PREROLL = 10.0
# Frames a deinterlacer is given on each side of a run (bwdif and yadif look one frame each
# way; one more costs a frame's decoding).
CONTEXT = 2

# Chroma is interpolated, not replicated, and rounding is exact, so a decode -> encode round
# trip does not drift.
SWS_FLAGS = "bicubic+accurate_rnd+full_chroma_int+full_chroma_inp"


def frame_dtype(info: VideoInfo) -> np.dtype:
    """uint16 for sources deeper than 8 bits, else uint8."""
    return np.dtype(np.uint16) if info.bit_depth > 8 else np.dtype(np.uint8)


def widened(frame: np.ndarray) -> np.ndarray:
    """8-bit pixels as 16-bit ones on swscale's scales, which a 10-bit copy of the same source
    would have been read on: colours with white at 255 * 256 (ycbcr.SWSCALE_16BIT_PEAK), an
    alpha with opaque at 65535 (on the colours' scale it came out 1020 of 1023 in 10 bits)."""
    wide = cv2.multiply(frame, 256, dtype=cv2.CV_16U)
    if frame.shape[2] == 4:
        wide[..., 3] += frame[..., 3]
    return wide


class VideoReader:
    """Frames `start` .. `start + count - 1` of `info`'s video stream, as a context manager.

    Iterating yields (H, W, 3) RGB arrays, each its own buffer so they can be queued; with
    `alpha`, for a source that has it (info.alpha), (H, W, 4) RGBA; with `deep`, 16-bit
    (uint16) whatever the source's depth (`widened`). A reader that stops early
    kills its ffmpeg. `frames_read` tells how many came out; fewer than asked means the file
    ended early, which the caller decides about.
    """

    def __init__(self, info: VideoInfo, start: int = 0, count: int | None = None, *,
                 alpha: bool = False, deep: bool = False) -> None:
        if not 0 <= start < max(info.frame_count, 1):
            raise MediaError(f"frame {start} is outside 0..{info.frame_count - 1}", info.path)
        self.info = info
        self.start = start
        self.count = info.frame_count - start if count is None else count
        self.dtype = frame_dtype(info)  # as the frames come from the decoder
        # An 8-bit source for a deeper output: its frames are widened, so that the model's
        # output keeps more than 8 bits of its precision on the way to the encoder.
        self._widen = deep and self.dtype == np.uint8
        width, height = info.display_size
        self.alpha = alpha and info.alpha
        self.shape = (height, width, 4 if self.alpha else 3)
        self.frames_read = 0
        # Common Y'CbCr formats (with their alpha plane, where kept) come through the pipe as
        # they are and are converted here; None: swscale converts to RGB (RGBA) in the decoder.
        self.converter = rgb.converter(info.pix_fmt, info.yuv_matrix, info.yuv_range,
                                       self.dtype, height, width, alpha=self.alpha)
        # swscale's 16-bit RGB put on the scales the rest of the job's 16-bit frames are on:
        # colours with white at SWSCALE_16BIT_PEAK, an alpha opaque at 65535.
        white, opaque = swscale_white(info.pix_fmt, info.bit_depth, info.yuv_range)
        factors = (SWSCALE_16BIT_PEAK / white, 65535 / opaque if self.alpha else 1.0)
        self._rescale = (factors if self.converter is None and self.dtype == np.uint16
                         and factors != (1.0, 1.0) else None)
        self._proc = ffmpeg.Process(self._command(), info.path, stdout=True)

    def _command(self) -> list[str]:
        info = self.info
        args = [ffmpeg.ffmpeg_exe(), "-hide_banner", "-nostdin", "-v", "error"]
        # A deinterlacer makes each frame from its neighbours as well: it is given CONTEXT
        # frames on each side of the run and its output is cut after it, so that a segment
        # comes out as in a run through the whole file (resumed, on a Ray worker). Not in
        # accepted damage, where what decodes before a frame depends on where decoding
        # began, and a count of frames could shift the cut.
        context = CONTEXT if info.deinterlace and not info.damaged else 0
        first = max(0, self.start - context)
        end = self.start + self.count
        before = after = ""  # the cuts, before and after the deinterlacer
        if first > 0 and info.container in _INDEXED:
            # Seek to halfway between the previous frame and the first wanted one: ffmpeg then
            # decodes from the keyframe before and drops every frame earlier than this time,
            # and the midpoint survives any rounding of the timestamps to microseconds.
            args += ["-ss", f"{self._between(first) - info.start_time:.6f}"]
        if info.container in _INDEXED and self.start > first:
            after = f"trim=start_frame={self.start - first}"
        elif self.start > 0 and info.container not in _INDEXED:
            # MPEG-TS and program streams (broadcasts, DVDs) have no index of keyframes: ffmpeg
            # lands where the timestamps say and starts at the next keyframe it finds, which
            # gave a TS segment the frames from 7 later (10-frame GOPs) without a word. So it
            # seeks PREROLL seconds early, keeps the timestamps, and the frames are cut by
            # them, the end too: a keyframe further back than that gives a short run, which
            # the caller reports, never shifted frames.
            start = self._between(self.start)
            args += ["-noaccurate_seek", "-copyts",
                     "-ss", f"{max(0.0, start - info.start_time - PREROLL):.6f}"]
            after = self._trim(self.start, end)
            if context:
                before = self._trim(first, end + context)
            else:
                before, after = after, ""
        steps = [before, info.deinterlace or "", after]
        if self.alpha:
            wire = "rgba64le" if self.dtype == np.uint16 else "rgba"
        else:
            wire = "rgb48le" if self.dtype == np.uint16 else "rgb24"
        if self.converter is not None:
            wire = self.converter.layout.pix_fmt
        if self.converter is not None or is_rgb(info.pix_fmt):
            steps.append(f"format={wire}")
        else:
            # After the deinterlacer, which works on the decoded fields, before the conversion
            # to RGB mixes the lines.
            matrix = SWS_MATRICES[info.yuv_matrix]
            steps.append(f"scale=in_color_matrix={matrix}:in_range={info.yuv_range}"
                         f":out_range=pc:flags={SWS_FLAGS},format={wire}")
        if info.decoder:
            args += ["-c:v", info.decoder]
        return [*args, "-i", ffmpeg.file_url(info.path), "-map", f"0:{info.video_index}",
                "-frames:v", str(self.count), "-vf", ",".join(s for s in steps if s),
                "-fps_mode", "passthrough", "-f", "rawvideo", "-pix_fmt", wire, "pipe:1"]

    def _trim(self, first: int, end: int) -> str:
        """A trim filter that keeps frames `first` .. `end - 1` by their timestamps (kept as
        the container has them, -copyts)."""
        cuts = [f"start={self._between(first):.6f}" if first > 0 else "",
                f"end={self._between(end):.6f}" if end < self.info.frame_count else ""]
        return "trim=" + ":".join(c for c in cuts if c) if any(cuts) else ""

    def _between(self, frame: int) -> float:
        """Seconds on the container's clock halfway between `frame` and the one before it."""
        pts = self.info.frame_pts
        return self.info.seconds(round((pts[frame - 1] + pts[frame]) / 2))

    def __iter__(self) -> Iterator[np.ndarray]:
        frames = (self._rgb_frames() if self.converter is None
                  else self._converted_frames(self.converter))
        yield from (map(widened, frames) if self._widen else frames)
        self._proc.finish("decoding failed")

    def _rgb_frames(self) -> Iterator[np.ndarray]:
        # rgb48le is little-endian; view it that way and convert only on big-endian hosts.
        wire = self.dtype.newbyteorder("<")
        nbytes = int(np.prod(self.shape)) * self.dtype.itemsize
        while self.frames_read < self.count:
            frame = np.empty(self.shape, wire)
            if not self._fill(memoryview(frame.reshape(-1).view(np.uint8)), nbytes):
                return
            self.frames_read += 1
            frame = frame if sys.byteorder == "little" else frame.astype(self.dtype)
            yield frame if self._rescale is None else rescaled(frame, *self._rescale)

    def _converted_frames(self, converter: rgb.RgbConverter) -> Iterator[np.ndarray]:
        view = memoryview(converter.planes.view(np.uint8))
        while self.frames_read < self.count:
            if not self._fill(view, converter.planes.nbytes):
                return
            self.frames_read += 1
            yield converter.convert()

    def _fill(self, view: memoryview, nbytes: int) -> bool:
        """Read one whole frame into `view`; False at a clean end of stream."""
        got = 0
        while got < nbytes:
            n = self._proc.stdout.readinto(view[got:])
            if not n:
                if got:
                    raise self._proc.error("decoder stopped in the middle of a frame")
                return False
            got += n
        return True

    def close(self) -> None:
        self._proc.kill()

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is not None or self.frames_read < self.count:
            self._proc.kill()
        self._proc.__exit__(exc_type, exc, tb)
