"""Y'CbCr as the reader and the writer both take it: each matrix's luma weights, the planar
layouts read and written in this process, the matrix from RGB to codes and its inverse, and
swscale's scale for 16-bit RGB.

The reader (rgb.py) and the writer (yuv.py) use the same definitions, so a frame read and
written again comes back to its codes.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, replace

import numpy as np

# (Kr, Kb) of each matrix, by ffprobe's names; Kg = 1 - Kr - Kb.
LUMA_WEIGHTS = {
    "bt709": (0.2126, 0.0722),
    "smpte170m": (0.299, 0.114),
    "bt470bg": (0.299, 0.114),
    "fcc": (0.30, 0.11),
    "smpte240m": (0.212, 0.087),
    "bt2020nc": (0.2627, 0.0593),
}
# swscale reads and writes 16-bit RGB on a 255 * 256 scale: a 10-bit source's white (940) came
# out at 65283, not 65535. The reader (rgb.py) and the writer (yuv.py) keep that scale, so 16-bit
# frames mean what they meant when swscale made them, and white goes back to 940.
SWSCALE_16BIT_PEAK = 65280.0
_PLANAR = re.compile(r"yuv(?:420|422|444)p(?:(10|12|16)le)?")


def is_rgb(pix_fmt: str) -> bool:
    return pix_fmt.startswith(("gbr", "rgb", "bgr", "argb", "abgr", "0rgb", "0bgr", "x2rgb"))


def swscale_white(pix_fmt: str, bits: int, value_range: str) -> tuple[int, int]:
    """The codes white and an opaque alpha get when swscale converts a deep `pix_fmt` to
    16-bit RGB(A): RGB formats spread the codes over 16 bits (1023 -> 65535), grey formats
    (whatever the range said) and full-range Y'CbCr shift them (1023 -> 65472), as they do an
    alpha of Y'CbCr; limited-range Y'CbCr gives SWSCALE_16BIT_PEAK. Taken as they came, a
    grey 10-bit frame came back up to 4 codes brighter and a 10-bit alpha of 1023 as 1022."""
    shifted = ((1 << bits) - 1) << (16 - bits) if bits < 16 else 65535
    if is_rgb(pix_fmt):
        return 65535, 65535
    if pix_fmt.startswith(("gray", "ya")) or value_range == "pc":
        return shifted, shifted
    return int(SWSCALE_16BIT_PEAK), shifted


def rescaled(frame: np.ndarray, colours: float, alpha: float = 1.0) -> np.ndarray:
    """16-bit `frame` with its colours times `colours` and its alpha, if any, times `alpha`,
    rounded and held in 16 bits, in place."""
    for part, factor in ((frame[..., :3], colours), (frame[..., 3:], alpha)):
        if factor != 1.0 and part.size:
            part[...] = np.clip(np.rint(part * np.float32(factor)), 0, 65535)
    return frame


@dataclass(frozen=True)
class PlanarYuv:
    """A planar Y'CbCr pixel format: chroma subsampling (horizontal, vertical) and bit depth.

    interleaved: Cb and Cr share one plane, alternating (nv12, p010le: semi-planar, what
      hardware encoders take). shift: how far each code sits up in its 16-bit word (p010le
      keeps its 10 bits at the top, 6). alpha: an alpha plane of the luma's size follows
      (yuva444p10le: ProRes 4444's; yuva420p: VP9's in WebM).
    """

    pix_fmt: str
    sub_w: int
    sub_h: int
    bits: int
    interleaved: bool = False
    shift: int = 0
    alpha: bool = False


def chroma_subsampling(pix_fmt: str) -> tuple[int, int]:
    """(horizontal, vertical) chroma subsampling of a YUV pixel format: yuv420p -> (2, 2)."""
    if "420" in pix_fmt or pix_fmt.startswith(("nv12", "nv21", "p010", "p012", "p016")):
        return 2, 2
    if "422" in pix_fmt or pix_fmt.startswith(("nv16", "nv20", "p210", "p212", "p216", "yuyv")):
        return 2, 1
    if "411" in pix_fmt:
        return 4, 1
    if "440" in pix_fmt:
        return 1, 2
    return 1, 1


def planar_yuv(pix_fmt: str) -> PlanarYuv | None:
    """The layout of `pix_fmt` where rgb.py reads and yuv.py writes it (yuv420p,
    yuv444p10le...); None for the formats left to swscale."""
    found = _PLANAR.fullmatch(pix_fmt)
    if found is None or (found[1] and sys.byteorder != "little"):
        return None
    return PlanarYuv(pix_fmt, *chroma_subsampling(pix_fmt), int(found[1] or 8))


# The semi-planar formats the writer makes (hardware encoders' own: VideoToolbox and NVENC take
# p010le for 10 bits, and swscale's conversion of 16-bit RGB to it cost 52 ms of CPU a 4K
# frame on two cores).
_SEMI_PLANAR = {"nv12": PlanarYuv("nv12", 2, 2, 8, interleaved=True),
                "p010le": PlanarYuv("p010le", 2, 2, 10, interleaved=True, shift=6)}


def layout_here(pix_fmt: str, matrix: str, value_range: str, dtype: np.dtype, *,
                written: bool = False, alpha: bool = False) -> PlanarYuv | None:
    """The layout of `pix_fmt` where this process converts between it and frames of `dtype`
    (rgb.py reading, yuv.py writing, which also makes the semi-planar formats: `written`).
    A planar format with alpha (yuva444p12le: ProRes 4444's) has its alpha plane where it is
    written or read with `alpha`; read without, the colours' own format, which ffmpeg gives
    by leaving the alpha out.
    None where swscale does: a format, matrix or range this module has no numbers for, or a
    depth the frames' dtype cannot hold (8-bit codes go with uint8 frames, deeper ones with
    uint16)."""
    layout = planar_yuv(pix_fmt)
    if layout is None and pix_fmt.startswith("yuvj") and value_range == "pc":
        # JPEG's full-range names (MJPEG; H.264 tagged full range reads as yuvj420p) for the
        # same planes: swscale's own conversion to yuvj420p left chroma 0.5 codes low.
        plain = planar_yuv("yuv" + pix_fmt[4:])
        layout = replace(plain, pix_fmt=pix_fmt) if plain else None
    colours = planar_yuv("yuv" + pix_fmt[4:]) if pix_fmt.startswith("yuva") else None
    if layout is None and colours is not None and sys.byteorder == "little":
        layout = replace(colours, pix_fmt=pix_fmt, alpha=True) if written or alpha else colours
    if layout is None and written and sys.byteorder == "little":
        layout = _SEMI_PLANAR.get(pix_fmt)
    if layout is None or matrix not in LUMA_WEIGHTS or value_range not in ("tv", "pc"):
        return None
    if (layout.bits == 8) != (np.dtype(dtype) == np.uint8):
        return None
    return layout


def yuv_matrix(matrix: str, value_range: str, bits: int, peak: float) -> np.ndarray:
    """The 3x4 matrix taking RGB of `peak` (255; SWSCALE_16BIT_PEAK for 16-bit frames) to Y,
    Cb, Cr codes of `bits` bits.

    Limited ("tv") range puts black at 16 and white at 235 (chroma 16-240) scaled to the depth;
    full ("pc") range spans every code.
    """
    kr, kb = LUMA_WEIGHTS[matrix]
    kg = 1.0 - kr - kb
    top = (1 << bits) - 1
    if value_range == "pc":
        luma_span, chroma_span, black = top, top, 0.0
    else:
        step = 1 << (bits - 8)
        luma_span, chroma_span, black = 219 * step, 224 * step, 16.0 * step
    middle = float(1 << (bits - 1))
    luma = np.array([kr, kg, kb])
    blue = (np.array([0.0, 0.0, 1.0]) - luma) / (2 * (1 - kb))
    red = (np.array([1.0, 0.0, 0.0]) - luma) / (2 * (1 - kr))
    rows = [np.append(luma * luma_span / peak, black),
            np.append(blue * chroma_span / peak, middle),
            np.append(red * chroma_span / peak, middle)]
    return np.array(rows, np.float32)


def rgb_matrix(matrix: str, value_range: str, bits: int, peak: float) -> np.ndarray:
    """The 3x4 matrix taking Y, Cb, Cr codes of `bits` bits to RGB of `peak`: the inverse of
    yuv_matrix, so that a frame read and written again comes back to its codes."""
    forward = yuv_matrix(matrix, value_range, bits, peak).astype(np.float64)
    inverse = np.linalg.inv(forward[:, :3])
    return np.hstack([inverse, -(inverse @ forward[:, 3:])]).astype(np.float32)
