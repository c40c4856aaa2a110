"""The decoder's planar Y'CbCr to RGB frames, in this process, for the common formats.

The reader's counterpart of yuv.py, and for the same reason: ffmpeg's swscale, with the flags
that keep a round trip from drifting (bicubic chroma, exact rounding), took 27 ms of CPU for
each 1080p frame on the 2-core development machine, four times what decoding the frame took,
and the RGB frame it sends through the pipe is twice the size of the 4:2:0 one. Here: each
chroma plane resized bicubically to the frame's size (centred siting, and the ratio of the
planes' sizes, as swscale does, odd sizes included), the three planes merged, and one 3x4
matrix, the inverse of the writer's (yuv.py), over the merged frame: 7.6 ms a 1080p frame on
one core, and 18-22 ms against 29-34 of CPU for decoding and converting together.

Against swscale's frames from the same planes, 8-bit RGB measured 59-63 dB for 4:2:0 and
4:2:2 (0.2 steps RMS, at sharp chroma edges: OpenCV's bicubic kernel is a = -0.75, swscale's
-0.6) and 69 dB for 4:4:4, with no channel moved more than 0.011 of a step on average; against
the picture the planes were made from, as close as swscale's or closer (tests/test_rgb.py).
Deep sources come out on swscale's 255 x 256 scale (SWSCALE_16BIT_PEAK), limited range and
full range alike: swscale shifted full-range codes instead (1023 -> 65472), 0.3% brighter than
the writer's scale, so a full-range 10-bit frame came back up to 3 codes high; now a frame read
and written again comes back to its codes.

Planar YUV 4:2:0, 4:2:2 and 4:4:4, 8 bits to uint8 frames and 10, 12 or 16 bits to uint16
ones, in the matrices yuv.py writes, and JPEG's full-range names for them (yuvj420p: MJPEG,
H.264 tagged full range) where the range is full. Anything else (semi-planar, RGB,
grey, BT.2020 constant luminance) is converted by swscale: `converter()` returns None. Its
16-bit RGB is then put on the same 255 x 256 scale (reader.py, ycbcr.swscale_white): swscale
spreads deep RGB over 16 bits and shifts grey, so a grey 10-bit source came back up to 4 codes
brighter and an RGB one 0.4% brighter in a Y'CbCr output, until 0.2.16.
"""

from __future__ import annotations

import cv2
import numpy as np

from upscaler.media.video.ycbcr import (
    SWSCALE_16BIT_PEAK,
    PlanarYuv,
    layout_here,
    rgb_matrix,
)

_EIGHT_BIT_SCALE = 256.0  # 8-bit frames' RGB is made on 16 bits, then rounded


class RgbConverter:
    """Converts one planar Y'CbCr format of one size into (H, W, 3) RGB frames, or, with an
    alpha plane (layout.alpha), (H, W, 4) RGBA ones, the alpha on the frames' full scale
    (255; 65535 for 16-bit frames, as the writer takes it).

    `planes` is a buffer the size of one raw frame, Y then Cb then Cr (then alpha), as the
    rawvideo muxer writes them; the reader fills it and `convert` turns it into a new frame.
    """

    def __init__(self, layout: PlanarYuv, matrix: str, value_range: str, height: int,
                 width: int) -> None:
        self.layout = layout
        self.dtype = np.dtype(np.uint8 if layout.bits == 8 else np.uint16)
        # Every step runs on 16-bit codes: OpenCV's 8-bit resize and matrix are fixed point
        # with 10-bit coefficients, which put a third of a step of noise (RMS) on every pixel
        # and moved luma a step in a decode -> encode round trip; 16 bits cost 7.6 ms a 1080p
        # frame instead of 4.3 and come out as exact as float64 (0.02 steps RMS).
        shift = 16 - layout.bits
        matrix_out = rgb_matrix(matrix, value_range, layout.bits,
                                255.0 if layout.bits == 8 else SWSCALE_16BIT_PEAK)
        matrix_out[:, :3] /= 1 << shift
        # 8-bit frames are made on a x256 scale and rounded to 8 bits at the end.
        self._matrix = matrix_out * np.float32(_EIGHT_BIT_SCALE if layout.bits == 8 else 1.0)
        self._shift = shift
        self._size = (width, height)  # OpenCV's order
        # Odd sizes round the chroma planes up, as ffmpeg lays them out.
        chroma_w, chroma_h = -(-width // layout.sub_w), -(-height // layout.sub_h)
        luma, chroma = height * width, chroma_h * chroma_w
        # rawvideo is little-endian; deeper formats are only chosen on little-endian hosts.
        self.planes = np.empty(luma * (1 + layout.alpha) + 2 * chroma, self.dtype)
        self._alpha = (self.planes[luma + 2 * chroma:].reshape(height, width)
                       if layout.alpha else None)
        self._opaque = 65535 / ((1 << layout.bits) - 1)  # a deep alpha's code to 16 bits
        self._wide = self.planes if shift == 0 else np.empty(self.planes.size, np.uint16)
        self._y = self._wide[:luma].reshape(height, width)
        self._cb, self._cr = (self._wide[luma + i * chroma : luma + (i + 1) * chroma]
                              .reshape(chroma_h, chroma_w) for i in (0, 1))
        subsampled = layout.sub_w * layout.sub_h > 1
        self._full_chroma = ([np.empty((height, width), np.uint16) for _ in (0, 1)]
                             if subsampled else None)
        self._ycc = np.empty((height, width, 3), np.uint16)

    def convert(self) -> np.ndarray:
        """The frame in `planes`, as a new (H, W, 3) RGB or (H, W, 4) RGBA array."""
        colours = self._colours()
        if self._alpha is None:
            return colours
        alpha = (self._alpha if self.dtype == np.uint8 else
                 cv2.multiply(self._alpha, self._opaque, dtype=cv2.CV_16U))
        return cv2.merge([*cv2.split(colours), alpha])

    def _colours(self) -> np.ndarray:
        if self._shift:
            np.left_shift(self.planes, self._shift, out=self._wide, dtype=np.uint16)
        chroma = [self._cb, self._cr]
        if self._full_chroma is not None:
            # To the frame's size rather than twice the planes': swscale scales by the ratio
            # of the two sizes, which is not 2 where a dimension is odd.
            chroma = [cv2.resize(plane, self._size, dst=full, interpolation=cv2.INTER_CUBIC)
                      for plane, full in zip(chroma, self._full_chroma, strict=True)]
        cv2.merge([self._y, *chroma], dst=self._ycc)
        if self.dtype == np.uint16:
            return cv2.transform(self._ycc, self._matrix)
        # 8-bit frames: x256 RGB in place of the merged planes (each pixel's three values are
        # read before they are written), then rounded to 8 bits.
        cv2.transform(self._ycc, self._matrix, dst=self._ycc)
        return cv2.convertScaleAbs(self._ycc, alpha=1.0 / _EIGHT_BIT_SCALE)


def converter(pix_fmt: str, matrix: str, value_range: str, dtype: np.dtype, height: int,
              width: int, alpha: bool = False) -> RgbConverter | None:
    """An RgbConverter from `pix_fmt` frames of this size to RGB of `dtype` (RGBA, with
    `alpha`, of a format that has it), or None where swscale should convert (a format, matrix
    or depth this module does not read)."""
    layout = layout_here(pix_fmt, matrix, value_range, dtype, alpha=alpha)
    return None if layout is None else RgbConverter(layout, matrix, value_range, height, width)
