"""RGB frames to the planar Y'CbCr an encoder stores, in this process, for the common formats.

Why here and not in ffmpeg's swscale: at 4K, swscale's rgb24 -> yuv420p took 23 ms of CPU a
frame on the 2-core development machine (any flags), more than x264's ultrafast encode of it,
and the RGB frame it reads through the pipe is twice the size of the 4:2:0 one. OpenCV does the
same in 11.5 ms: one 3x4 matrix over the interleaved frame (OpenCV's fast 3-channel path; a
single output row takes the slow generic one), the luma plane pulled out, and the chroma
averaged over 2x2 blocks (INTER_AREA), which is the centred siting swscale uses. Against
the exact values (float64, H.273's formulas) on upscaled drawings, every plane is 0.30-0.36
steps RMS off, and luma 0.14 low on average (OpenCV's 8-bit matrix is fixed point); swscale's
accurate_rnd luma is 0.32 RMS off, 0.07 high. Full-range chroma is centred on 128 as
H.273 has it, where swscale truncates (half a step low, and its own decoder then shifts colours
by up to a step).

Planar YUV 4:2:0, 4:2:2 and 4:4:4 at 8 bits from uint8 frames, and at 10, 12 or 16 bits from
uint16 frames, the semi-planar 4:2:0 that hardware encoders take (nv12 from uint8, p010le
from uint16), and the planar formats with alpha (yuva420p, yuva444p10le...) from RGBA frames,
in the constant-matrix systems (BT.601, BT.709, BT.2020 non-constant luminance, FCC, SMPTE
240M). Anything else (other semi-planar formats, RGB, BT.2020 constant luminance, a depth that
differs from the frames') goes through swscale as before: `converter()` returns None.
"""

from __future__ import annotations

import cv2
import numpy as np

from upscaler.bands import in_bands
from upscaler.media.video.ycbcr import (
    SWSCALE_16BIT_PEAK,
    PlanarYuv,
    layout_here,
    yuv_matrix,
)


class YuvConverter:
    """Converts (H, W, 3) RGB frames of one size and dtype into one planar Y'CbCr format, or
    (H, W, 4) RGBA frames into one with alpha (whose plane follows the chroma's).

    `convert` returns the frame's planes laid end to end as the rawvideo demuxer reads them,
    in a buffer reused by the next call.
    """

    def __init__(self, layout: PlanarYuv, matrix: str, value_range: str, dtype: np.dtype,
                 height: int, width: int) -> None:
        if height % layout.sub_h or width % layout.sub_w:
            raise ValueError(f"{width}x{height} does not divide into {layout.pix_fmt}'s chroma")
        dtype = np.dtype(dtype)
        self.layout = layout
        self._matrix = yuv_matrix(matrix, value_range, layout.bits,
                                  255.0 if dtype == np.uint8 else SWSCALE_16BIT_PEAK)
        if layout.sub_w * layout.sub_h == 4:
            # OpenCV rounds the mean of a 2x2 block half up, 1/8 of a step high on average
            # (2x1 blocks come out unbiased); taken off the chroma first, 4:2:0 is unbiased too.
            self._matrix[1:3, 3] -= 0.125
        # An alpha's codes, opaque at the top one; 16-bit frames hold alpha on the full 65535
        # scale, as swscale reads it.
        self._opaque = ((1 << layout.bits) - 1) / np.iinfo(dtype).max
        self._chroma_size = (width // layout.sub_w, height // layout.sub_h)  # OpenCV's (w, h)
        luma, chroma = height * width, self._chroma_size[0] * self._chroma_size[1]
        self._buffer = np.empty(luma * (1 + layout.alpha) + 2 * chroma, dtype)
        self._y = self._buffer[:luma].reshape(height, width)
        chroma_h, chroma_w = self._chroma_size[1], self._chroma_size[0]
        # Semi-planar: one plane of Cb, Cr pairs; planar: a plane each.
        self._cbcr = self._buffer[luma:luma + 2 * chroma].reshape(chroma_h, chroma_w, 2)
        self._cb, self._cr = (self._buffer[luma + i * chroma : luma + (i + 1) * chroma]
                              .reshape(chroma_h, chroma_w) for i in (0, 1))
        self._ycc = np.empty((height, width, 3), dtype)
        # RGBA frames: (the alpha's plane, a buffer for the colours apart). The colours are
        # split off first: OpenCV's matrix over four channels takes its slow generic path
        # (103 ms a 16-bit 4K frame, against 42 this way and 90 for swscale).
        self._alpha = ((self._buffer[luma + 2 * chroma:].reshape(height, width),
                        np.empty((height, width, 3), dtype)) if layout.alpha else None)
        # 16-bit arithmetic saturates at 65535, not at a 10- or 12-bit format's top code, which
        # full range reaches (limited range stays below it).
        top = (1 << layout.bits) - 1
        self._top = top if value_range == "pc" and top < np.iinfo(dtype).max else None

    def convert(self, frame: np.ndarray) -> np.ndarray:
        """`frame`'s planes, Y then Cb then Cr, as one flat array (reused by the next call).
        A large frame is converted in bands of whole chroma blocks on every core (bands.py)."""
        height, width = frame.shape[:2]

        def rows(top: int, bottom: int) -> None:
            self._convert_rows(frame, top, bottom)

        in_bands(height, width, rows, step=self.layout.sub_h)
        return self._buffer

    def _convert_rows(self, frame: np.ndarray, top: int, bottom: int) -> None:
        ycc, rows = self._ycc[top:bottom], frame[top:bottom]
        if self._alpha is not None:
            plane, colours = self._alpha
            alpha = plane[top:bottom]
            cv2.extractChannel(rows, 3, dst=alpha)
            if self._opaque != 1.0:
                cv2.multiply(alpha, self._opaque, dst=alpha)
            rows = cv2.cvtColor(rows, cv2.COLOR_RGBA2RGB, dst=colours[top:bottom])
        cv2.transform(rows, self._matrix, dst=ycc)
        luma = self._y[top:bottom]
        cv2.extractChannel(ycc, 0, dst=luma)
        # The matrix is linear, so averaging the converted chroma over each block is averaging
        # the block's colour, as swscale does.
        first, last = top // self.layout.sub_h, bottom // self.layout.sub_h
        chroma = ycc if self.layout.sub_w == self.layout.sub_h == 1 else cv2.resize(
            ycc, (self._chroma_size[0], last - first), interpolation=cv2.INTER_AREA)
        if self.layout.interleaved:
            planes = [self._cbcr[first:last]]
            cv2.mixChannels([chroma], planes, [1, 0, 2, 1])
        else:
            planes = [self._cb[first:last], self._cr[first:last]]
            cv2.extractChannel(chroma, 1, dst=planes[0])
            cv2.extractChannel(chroma, 2, dst=planes[1])
        for plane in (luma, *planes):
            if self._top is not None:
                np.minimum(plane, self._top, out=plane)
            if self.layout.shift:
                np.left_shift(plane, self.layout.shift, out=plane)


def converter(pix_fmt: str, matrix: str, value_range: str, dtype: np.dtype, height: int,
              width: int, alpha: bool = False) -> YuvConverter | None:
    """A YuvConverter for frames of `dtype` and size, RGBA where `alpha`, into `pix_fmt`, or
    None where swscale should convert (a format, matrix or depth this module does not write,
    or alpha on one side only). The size must hold whole chroma blocks: the writer pads frames
    to them first."""
    layout = layout_here(pix_fmt, matrix, value_range, dtype, written=True)
    if layout is None or layout.alpha != alpha:
        return None
    return YuvConverter(layout, matrix, value_range, dtype, height, width)
