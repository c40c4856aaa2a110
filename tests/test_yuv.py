"""The writer's own RGB -> Y'CbCr conversion (media/video/yuv.py): against H.273's formulas,
against ffmpeg's swscale that did it before, and a source's planes back through our reader."""

from __future__ import annotations

import subprocess
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
import pytest
from clips import make_clip
from conftest import psnr
from draw import draw_cel

from upscaler.media import ffmpeg
from upscaler.media.video.probe import SWS_MATRICES, probe
from upscaler.media.video.reader import SWS_FLAGS, VideoReader
from upscaler.media.video.writer import Encoding, Timing, VideoWriter
from upscaler.media.video.ycbcr import LUMA_WEIGHTS, SWSCALE_16BIT_PEAK, planar_yuv
from upscaler.media.video.yuv import converter
from upscaler.video import VideoSettings, upscale_video


def upscaled_drawing(dtype: type, t: float = 0.3) -> np.ndarray:
    """A drawn cel enlarged 4x as a model would (smooth ramps, sharp lines), 512x288."""
    frame = cv2.resize(draw_cel(72, 128, t=t), (512, 288), interpolation=cv2.INTER_CUBIC)
    if dtype == np.uint16:  # 16-bit with values between the 8-bit steps
        frame = cv2.GaussianBlur(frame.astype(np.uint16) * 257, (3, 3), 0)
    return frame


def exact_planes(frame: np.ndarray, pix_fmt: str, matrix: str, value_range: str,
                 ) -> list[np.ndarray]:
    """Y, Cb, Cr in float64 by H.273's equations; chroma as the mean over each block."""
    layout = planar_yuv(pix_fmt)
    assert layout is not None
    kr, kb = LUMA_WEIGHTS[matrix]
    rgb = frame.astype(np.float64) / (255.0 if frame.dtype == np.uint8 else SWSCALE_16BIT_PEAK)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    y = kr * r + (1 - kr - kb) * g + kb * b
    pb, pr = (b - y) / (2 * (1 - kb)), (r - y) / (2 * (1 - kr))
    n = layout.bits
    if value_range == "tv":
        y, pb, pr = (2 ** (n - 8) * (16 + 219 * y), 2 ** (n - 8) * (128 + 224 * pb),
                     2 ** (n - 8) * (128 + 224 * pr))
    else:
        y, pb, pr = (2**n - 1) * y, (2**n - 1) * pb + 2 ** (n - 1), (2**n - 1) * pr + 2 ** (n - 1)
    h, w = frame.shape[:2]

    def block_mean(plane: np.ndarray) -> np.ndarray:
        return plane.reshape(h // layout.sub_h, layout.sub_h, w // layout.sub_w,
                             layout.sub_w).mean(axis=(1, 3))

    return [np.clip(p, 0, 2**n - 1) for p in (y, block_mean(pb), block_mean(pr))]


def split(planes: np.ndarray, height: int, width: int, pix_fmt: str) -> list[np.ndarray]:
    layout = planar_yuv(pix_fmt)
    assert layout is not None
    luma, ch, cw = height * width, height // layout.sub_h, width // layout.sub_w
    return [planes[:luma].reshape(height, width), planes[luma:luma + ch * cw].reshape(ch, cw),
            planes[luma + ch * cw:].reshape(ch, cw)]


def swscale(data: np.ndarray, pix_fmt: str, width: int, height: int, scale: str,
            out_fmt: str) -> np.ndarray:
    """Raw frames of `pix_fmt` through ffmpeg's `scale` filter to `out_fmt`, as swscale does
    it in the reader's and the writer's ffmpeg; little-endian 16-bit where deep."""
    deep = data.dtype == np.uint16
    args = [ffmpeg.ffmpeg_exe(), "-hide_banner", "-v", "error", "-f", "rawvideo",
            "-pix_fmt", pix_fmt, "-s", f"{width}x{height}", "-i", "pipe:0", "-vf",
            f"{scale}:flags={SWS_FLAGS},format={out_fmt}", "-f", "rawvideo", "pipe:1"]
    out = subprocess.run(args, input=data.astype(data.dtype.newbyteorder("<")).tobytes(),
                         capture_output=True, check=True).stdout
    return np.frombuffer(out, "<u2" if deep else np.uint8)


def swscale_planes(frame: np.ndarray, pix_fmt: str, matrix: str, value_range: str,
                   ) -> np.ndarray:
    """What the writer's encoder process made of the RGB frame before yuv.py: swscale."""
    height, width = frame.shape[:2]
    rgb = "rgb48le" if frame.dtype == np.uint16 else "rgb24"
    return swscale(frame, rgb, width, height, f"scale=out_color_matrix={SWS_MATRICES[matrix]}"
                   f":out_range={value_range}", pix_fmt)


CASES = [("yuv420p", "bt709", "tv"), ("yuv420p", "smpte170m", "tv"), ("yuv420p", "bt709", "pc"),
         ("yuv422p", "bt709", "tv"), ("yuv444p", "bt2020nc", "tv"),
         ("yuv420p10le", "bt2020nc", "tv"), ("yuv444p10le", "bt709", "pc")]


# Measured on these drawings: at most 1.0 step off (4:2:2 chroma, rounded twice), 0.30-0.36
# steps RMS and a mean at most 0.14 off (luma, low: OpenCV's fixed-point 8-bit matrix);
# swscale's luma: 0.32 RMS, +0.07.
@pytest.mark.parametrize(("pix_fmt", "matrix", "value_range"), CASES)
def test_planes_are_h273_to_rounding(pix_fmt: str, matrix: str, value_range: str) -> None:
    layout = planar_yuv(pix_fmt)
    assert layout is not None
    dtype = np.uint8 if layout.bits == 8 else np.uint16
    for t in (0.1, 0.6):
        frame = upscaled_drawing(dtype, t)
        height, width = frame.shape[:2]
        ours = converter(pix_fmt, matrix, value_range, np.dtype(dtype), height, width)
        assert ours is not None
        for got, want in zip(split(ours.convert(frame), height, width, pix_fmt),
                             exact_planes(frame, pix_fmt, matrix, value_range), strict=True):
            error = got.astype(np.float64) - want
            assert np.abs(error).max() <= 1.05
            assert np.sqrt(np.mean(error**2)) < 0.4
            assert abs(error.mean()) < 0.2


# Measured: luma 54.9-61.5 dB, chroma 54.0-77.1 dB, never 3 steps apart (swscale is not
# exact either, above).
@pytest.mark.parametrize(("pix_fmt", "matrix"), [
    ("yuv420p", "bt709"), ("yuv420p", "smpte170m"), ("yuv422p", "bt709"),
    ("yuv444p", "bt2020nc")])
def test_limited_range_8_bit_matches_swscale(pix_fmt: str, matrix: str) -> None:
    frame = upscaled_drawing(np.uint8)
    ours = converter(pix_fmt, matrix, "tv", np.dtype(np.uint8), 288, 512)
    assert ours is not None
    for got, theirs in zip(split(ours.convert(frame), 288, 512, pix_fmt),
                           split(swscale_planes(frame, pix_fmt, matrix, "tv"), 288, 512,
                                 pix_fmt), strict=True):
        assert psnr(got, theirs, 255) > 51
        assert np.abs(got.astype(int) - theirs).max() <= 2


# Measured: luma 87.8 dB (8 bits) and identical (10 bits), chroma 48.3-49.4 and 56.6-57.3 dB.
@pytest.mark.parametrize(("pix_fmt", "codec", "luma_db", "chroma_db"), [
    ("yuv420p", "libx264", 80, 45), ("yuv420p10le", "libx265", 80, 53)])
def test_a_sources_planes_come_back_through_reader_and_converter(
        tmp_path: Path, pix_fmt: str, codec: str, luma_db: float, chroma_db: float) -> None:
    """Decoded by our reader (swscale, 16-bit RGB on its 255 * 256 scale) and converted here,
    a frame's planes are the source's again: white stays at 235 (940 in 10 bits), not a
    step or three lower, and colours do not drift."""
    src = make_clip(tmp_path / "src.mkv", size="128x72", pix_fmt=pix_fmt, codec=codec,
                    seconds=0.2)
    info = probe(src)
    raw = subprocess.run([ffmpeg.ffmpeg_exe(), "-v", "error", "-i", str(src), "-frames:v", "1",
                          "-f", "rawvideo", "-pix_fmt", pix_fmt, "pipe:1"],
                         capture_output=True, check=True).stdout
    deep = pix_fmt.endswith("10le")
    source = split(np.frombuffer(raw, "<u2" if deep else np.uint8), 72, 128, pix_fmt)
    with VideoReader(info) as reader:
        frame = next(iter(reader))
    ours = converter(pix_fmt, info.yuv_matrix, info.yuv_range, frame.dtype, 72, 128)
    assert ours is not None
    got = split(ours.convert(frame), 72, 128, pix_fmt)
    peak = 1023 if deep else 255
    assert psnr(got[0], source[0], peak) > luma_db
    for plane in (1, 2):  # 4:2:0 -> 4:4:4 (bicubic) -> 4:2:0 (block mean) blurs chroma
        assert psnr(got[plane], source[plane], peak) > chroma_db
    assert abs(float(got[0].astype(np.float64).mean() - source[0].mean())) < 0.05


def test_buffer_is_reused_and_frames_stay_apart() -> None:
    a, b = upscaled_drawing(np.uint8), np.full((288, 512, 3), 128, np.uint8)
    ours = converter("yuv420p", "bt709", "tv", np.dtype(np.uint8), 288, 512)
    assert ours is not None
    first = ours.convert(a).copy()
    grey = ours.convert(b)
    assert np.all(grey[:288 * 512] == 126)  # 16 + 219 * 128 / 255 = 125.9
    assert np.all(grey[288 * 512:] == 128)
    assert np.array_equal(ours.convert(a), first)


@pytest.mark.parametrize(("pix_fmt", "matrix", "dtype"), [
    ("nv21", "bt709", np.uint8),          # semi-planar, Cr first: swscale's
    ("p010le", "bt709", np.uint8),        # 10 bits from 8-bit frames
    ("yuva420p", "bt709", np.uint8),      # an alpha plane, for frames without alpha
    ("gbrp", "bt709", np.uint8),          # RGB
    ("yuv420p", "bt2020c", np.uint8),     # constant luminance is not a matrix
    ("yuv420p10le", "bt709", np.uint8),   # deeper than the frames
    ("yuv420p", "bt709", np.uint16),      # shallower than the frames
    ("yuv420p", "unknown", np.uint8),
])
def test_other_formats_are_left_to_swscale(pix_fmt: str, matrix: str, dtype: type) -> None:
    assert converter(pix_fmt, matrix, "tv", np.dtype(dtype), 288, 512) is None


X264_LOSSLESS = ("libx264", ("-qp", "0", "-preset", "ultrafast"))
X265_LOSSLESS = ("libx265", ("-x265-params", "lossless=1:log-level=error", "-preset", "ultrafast"))
FFV1 = ("ffv1", ())


def with_alpha(frame: np.ndarray) -> np.ndarray:
    """`frame` with an alpha that runs from clear on the left to opaque on the right."""
    height, width = frame.shape[:2]
    ramp = np.linspace(0, np.iinfo(frame.dtype).max, width).round().astype(frame.dtype)
    return np.dstack([frame, np.tile(ramp, (height, 1))])


@pytest.mark.parametrize(("pix_fmt", "value_range", "dtype", "lossless"), [
    ("yuv420p", "tv", np.uint8, X264_LOSSLESS), ("yuv444p", "pc", np.uint8, X264_LOSSLESS),
    # Which ffmpeg gives x265 as yuv420p10le, the same codes moved down.
    ("p010le", "tv", np.uint16, X265_LOSSLESS),
    ("yuva420p", "tv", np.uint8, FFV1), ("yuva444p10le", "tv", np.uint16, FFV1)])
def test_the_encoder_stores_these_planes(tmp_path: Path, pix_fmt: str, value_range: str,
                                         dtype: type, lossless: tuple[str, tuple[str, ...]],
                                         ) -> None:
    """Through VideoWriter and a lossless encoder, the file holds exactly the converter's
    planes: the encoder is told what it is sent and takes them as they are."""
    alpha = pix_fmt.startswith("yuva")
    frames = [upscaled_drawing(dtype, t) for t in (0.2, 0.7)]
    frames = [with_alpha(frame) for frame in frames] if alpha else frames
    encoding = Encoding(lossless[0], pix_fmt, "bt709", value_range, options=lossless[1])
    dst = tmp_path / "lossless.mkv"
    with VideoWriter(dst, encoding, Timing(Fraction(24))) as writer:
        for frame in frames:
            writer.write(frame)
        writer.close()
    raw = subprocess.run([ffmpeg.ffmpeg_exe(), "-v", "error", "-i", str(dst), "-f", "rawvideo",
                          "-pix_fmt", pix_fmt, "pipe:1"], capture_output=True, check=True).stdout
    ours = converter(pix_fmt, "bt709", value_range, np.dtype(dtype), 288, 512, alpha)
    assert ours is not None
    expected = b"".join(ours.convert(frame).tobytes() for frame in frames)
    assert raw == expected
    info = probe(dst)
    assert (info.color_matrix, info.color_range) == ("bt709", value_range)


@pytest.mark.parametrize(("pix_fmt", "stored"), [("nv12", "yuv420p"),  # x264's input layout
                                                  ("yuv420p10le", "yuv420p10le")])
def test_semi_planar_and_deeper_outputs_of_an_8_bit_source_encode(
        tmp_path: Path, pix_fmt: str, stored: str) -> None:
    """nv12 (made here since 0.2.13, as swscale made it before), and 10 bits from an 8-bit
    source (whose frames are 16-bit for it, reader.widened): the video is the source's."""
    src = make_clip(tmp_path / "src.mkv", size="64x36", seconds=0.3)
    settings = VideoSettings(crf=8, preset="ultrafast", pix_fmt=pix_fmt)
    dst = upscale_video(src, tmp_path / "out.mkv", lambda f: cv2.resize(f, None, fx=2, fy=2),
                        settings)
    info = probe(dst)
    assert (info.pix_fmt, info.width, info.height) == (stored, 128, 72)
    assert (info.color_matrix, info.color_range) == ("bt709", "tv")
    with VideoReader(probe(src)) as reader:
        source = [cv2.resize(f, None, fx=2, fy=2) for f in reader]
    with VideoReader(info) as reader:
        out = list(reader)
    assert len(out) == len(source)
    peak = 65535 if out[0].dtype == np.uint16 else 255
    for got, want in zip(out, source, strict=True):  # measured: 45.2 (nv12), 45.8 dB
        assert psnr(got.astype(np.float64) / peak * 255, want, 255) > 42


# Measured on the drawings: against swscale, luma within 1 code, chroma within 2 (8 bits) and 5
# (10 bits), as for the planar formats (swscale's chroma filter is not a block mean).
@pytest.mark.parametrize(("pix_fmt", "planar", "dtype"), [("nv12", "yuv420p", np.uint8),
                                                          ("p010le", "yuv420p10le", np.uint16)])
def test_semi_planar_formats_are_the_planar_ones_interleaved(pix_fmt: str, planar: str,
                                                             dtype: type) -> None:
    """What hardware encoders take (VideoToolbox and NVENC: p010le for 10 bits, which swscale
    made from 16-bit RGB at 52 ms of CPU a 4K frame): one luma plane, then Cb and Cr in pairs,
    p010le's codes in the top 10 bits of each word."""
    frame = upscaled_drawing(dtype)
    ours = converter(pix_fmt, "bt709", "tv", np.dtype(dtype), 288, 512)
    flat = converter(planar, "bt709", "tv", np.dtype(dtype), 288, 512)
    assert ours is not None and flat is not None
    got = ours.convert(frame).copy()
    shift = 6 if pix_fmt == "p010le" else 0
    assert not np.any(got & ((1 << shift) - 1))
    luma, cb, cr = split(flat.convert(frame), 288, 512, planar)
    pairs = (got[288 * 512:] >> shift).reshape(144, 256, 2)
    assert np.array_equal(got[:288 * 512] >> shift, luma.reshape(-1))
    assert np.array_equal(pairs[..., 0], cb) and np.array_equal(pairs[..., 1], cr)
    theirs = swscale_planes(frame, pix_fmt, "bt709", "tv").astype(int) >> shift
    off = np.abs((got.astype(int) >> shift) - theirs)
    assert off[:288 * 512].max() <= 1
    assert off[288 * 512:].max() <= (2 if dtype == np.uint8 else 5)


@pytest.mark.parametrize(("pix_fmt", "plain", "dtype"), [
    ("yuva420p", "yuv420p", np.uint8), ("yuva444p10le", "yuv444p10le", np.uint16)])
def test_an_alpha_plane_follows_the_colours_planes(pix_fmt: str, plain: str,
                                                   dtype: type) -> None:
    """VP9's alpha in WebM (yuva420p) and ProRes 4444's (yuva444p10le), which swscale made
    from RGBA on the pipe (90 ms of CPU a 16-bit 4K frame here; 42 this way): the colours'
    planes are the format's without alpha, and the alpha's codes follow, rounded from its
    full scale (16-bit frames hold alpha on 0-65535, as swscale reads them)."""
    frame = with_alpha(upscaled_drawing(dtype))
    ours = converter(pix_fmt, "bt709", "tv", np.dtype(dtype), 288, 512, alpha=True)
    flat = converter(plain, "bt709", "tv", np.dtype(dtype), 288, 512)
    assert ours is not None and flat is not None
    got = ours.convert(frame).copy()
    colours = flat.convert(np.ascontiguousarray(frame[..., :3]))
    assert np.array_equal(got[:colours.size], colours)
    top = 255 if dtype == np.uint8 else 1023
    alpha = got[colours.size:].reshape(288, 512)
    assert np.array_equal(alpha, np.rint(frame[..., 3] * (top / np.iinfo(dtype).max)))
    rgba = "rgba64le" if dtype == np.uint16 else "rgba"
    theirs = swscale(frame, rgba, 512, 288, f"scale=out_color_matrix={SWS_MATRICES['bt709']}"
                     ":out_range=tv", pix_fmt)
    assert np.abs(theirs[colours.size:].astype(int) - alpha.reshape(-1)).max() <= 1
