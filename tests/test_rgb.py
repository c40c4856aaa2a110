"""The reader's own Y'CbCr -> RGB conversion (media/video/rgb.py): against ffmpeg's swscale,
which did it before, against the RGB a clip was made from, and through the reader itself."""

from __future__ import annotations

import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest
from clips import make_clip
from conftest import psnr
from PIL import Image
from test_yuv import swscale, swscale_planes, upscaled_drawing

from upscaler.media import ffmpeg
from upscaler.media.video import rgb
from upscaler.media.video.probe import SWS_MATRICES, probe
from upscaler.media.video.reader import SWS_FLAGS, VideoReader
from upscaler.media.video.ycbcr import SWSCALE_16BIT_PEAK, planar_yuv
from upscaler.media.video.yuv import converter


def swscale_rgb(planes: np.ndarray, pix_fmt: str, matrix: str, value_range: str, width: int,
                height: int) -> np.ndarray:
    """What the reader's ffmpeg made of these planes before rgb.py: swscale, same flags."""
    out_fmt = "rgb48le" if planes.dtype == np.uint16 else "rgb24"
    return swscale(planes, pix_fmt, width, height,
                   f"scale=in_color_matrix={SWS_MATRICES[matrix]}:in_range={value_range}"
                   ":out_range=pc", out_fmt).reshape(height, width, 3)


def ours(planes: np.ndarray, pix_fmt: str, matrix: str, value_range: str, width: int,
         height: int) -> np.ndarray:
    converter = rgb.converter(pix_fmt, matrix, value_range, planes.dtype, height, width)
    assert converter is not None
    converter.planes[:] = planes
    return converter.convert()


def drawing(dtype: type, width: int, height: int, t: float = 0.3) -> np.ndarray:
    return np.ascontiguousarray(upscaled_drawing(dtype, t)[:height, :width])


# (pix_fmt, matrix, range, width, height, dB against swscale as measured). 8-bit frames are
# 0.09-0.27 steps RMS from swscale's, most of it where chroma changes sharply: both bicubic,
# but OpenCV's kernel is a = -0.75 and swscale's -0.6. No channel moved more than 0.011 of a
# step on average.
CASES = [
    ("yuv420p", "bt709", "tv", 512, 288, 59.5),
    ("yuv420p", "smpte170m", "tv", 512, 288, 59.5),
    ("yuv420p", "bt709", "pc", 512, 288, 59.4),
    ("yuv420p", "bt709", "tv", 511, 287, 60.4),  # odd: chroma planes of 256 x 144
    ("yuv422p", "bt709", "tv", 512, 288, 62.9),
    ("yuv444p", "bt2020nc", "tv", 512, 288, 68.9),
    ("yuv420p10le", "bt2020nc", "tv", 512, 288, 63.2),
    ("yuv444p10le", "bt709", "pc", 512, 288, 76.2),
]


@pytest.mark.parametrize(("pix_fmt", "matrix", "value_range", "width", "height", "db"), CASES)
def test_frames_match_swscale(pix_fmt: str, matrix: str, value_range: str, width: int,
                              height: int, db: float) -> None:
    layout = planar_yuv(pix_fmt)
    assert layout is not None
    dtype = np.uint8 if layout.bits == 8 else np.uint16
    planes = swscale_planes(drawing(dtype, width, height), pix_fmt, matrix, value_range)
    got = ours(planes, pix_fmt, matrix, value_range, width, height)
    theirs = swscale_rgb(planes, pix_fmt, matrix, value_range, width, height)
    assert got.dtype == dtype and got.shape == (height, width, 3)
    peak = 65535 if dtype == np.uint16 else 255
    if dtype == np.uint16 and value_range == "pc":
        # swscale shifts full-range codes (1023 -> 65472) where it scales limited range to
        # 255 x 256; ours are on that scale in both, the one yuv.py maps back to the codes.
        top = (1 << layout.bits) - 1
        theirs = theirs.astype(np.float64) * SWSCALE_16BIT_PEAK / (top << (16 - layout.bits))
    assert psnr(got, theirs, peak) > db - 3
    # No channel shifted: a colour cast would show here long before it shows in the dB.
    mean_shift = (got.astype(np.float64) - theirs).reshape(-1, 3).mean(axis=0) * 255 / peak
    assert np.abs(mean_shift).max() < 0.03


@pytest.mark.parametrize("pix_fmt", ["yuv420p", "yuv420p10le"])
def test_frames_are_as_close_to_the_picture_as_swscales(pix_fmt: str) -> None:
    """What counts: against the RGB picture the planes were made from (the bundled cel), at
    least as close as swscale's frames. The two bicubic kernels differ (OpenCV's a = -0.75,
    swscale's -0.6): on drawn cels ours measured 0.0-0.1 dB closer."""
    deep = pix_fmt.endswith("10le")
    with Image.open(Path(__file__).parents[1] / "samples" / "cel.png") as image:
        cel = np.asarray(image.convert("RGB"))
    picture = cv2.resize(cel, (320, 180), interpolation=cv2.INTER_AREA)
    if deep:
        picture = picture.astype(np.uint16) * 256  # swscale's 255 x 256 scale
    planes = swscale_planes(picture, pix_fmt, "bt709", "tv")
    peak = 65535 if deep else 255
    mine = psnr(ours(planes, pix_fmt, "bt709", "tv", 320, 180), picture, peak)
    theirs = psnr(swscale_rgb(planes, pix_fmt, "bt709", "tv", 320, 180), picture, peak)
    assert mine > theirs - 0.02, (mine, theirs)


def test_white_and_black_land_where_swscale_put_them() -> None:
    """Limited-range 10-bit white (940) on the 255 x 256 scale the writer maps back to 940."""
    planes = np.concatenate([np.full(64 * 4, 940, np.uint16), np.full(64 * 4, 64, np.uint16),
                             np.full(2 * 32 * 4, 512, np.uint16)])
    frame = ours(planes, "yuv420p10le", "bt709", "tv", 64, 8)
    assert np.all(frame[:4] == 65280) and np.all(frame[4:] == 0)
    eight = np.concatenate([np.full(64 * 4, 235, np.uint8), np.full(64 * 4, 16, np.uint8),
                            np.full(2 * 32 * 4, 128, np.uint8)])
    frame = ours(eight, "yuv420p", "bt709", "tv", 64, 8)
    assert np.all(frame[:4] == 255) and np.all(frame[4:] == 0)


@pytest.mark.parametrize(("pix_fmt", "value_range"), [
    ("yuv444p", "tv"), ("yuv444p", "pc"), ("yuv444p10le", "tv"), ("yuv444p10le", "pc")])
def test_planes_read_and_written_again_are_the_same_codes(pix_fmt: str, value_range: str,
                                                          ) -> None:
    """Read here and written by the writer's yuv.py, a frame's planes come back as they were:
    the two matrices are each other's inverse, full-range 10-bit included (swscale's frames
    put its white 0.3% higher than the writer's, so its values came back up to 3 codes high)."""
    layout = planar_yuv(pix_fmt)
    assert layout is not None
    dtype = np.uint8 if layout.bits == 8 else np.uint16
    planes = swscale_planes(drawing(dtype, 512, 288), pix_fmt, "bt709", value_range)
    frame = ours(planes, pix_fmt, "bt709", value_range, 512, 288)
    writer = converter(pix_fmt, "bt709", value_range, np.dtype(dtype), 288, 512)
    assert writer is not None
    again = writer.convert(frame).astype(np.int64)
    # Only codes outside RGB's gamut, clipped on the way, may move.
    inside = np.tile((frame.reshape(-1, 3) > 0).all(axis=1)
                     & (frame.reshape(-1, 3) < np.iinfo(dtype).max).all(axis=1), 3)
    assert inside.mean() > 0.9
    assert np.abs(again - planes)[inside].max() <= 1
    assert abs(float((again - planes)[inside].mean())) < 0.02


@pytest.mark.parametrize(("pix_fmt", "codec", "size"), [
    ("yuv420p", "libx264", "96x54"), ("yuv420p10le", "libx265", "96x54"),
    ("yuv420p", "ffv1", "95x53"), ("yuvj420p", "mjpeg", "64x36")])
def test_the_reader_converts_common_formats_itself(tmp_path: Path, pix_fmt: str, codec: str,
                                                    size: str) -> None:
    """The decoder's ffmpeg sends the planes as they are stored and the reader's frames are
    exactly rgb.py's conversion of them; JPEG's full-range names too (since 0.2.16)."""
    src = make_clip(tmp_path / "src.mkv", size=size, pix_fmt=pix_fmt, codec=codec, seconds=0.2)
    info = probe(src)
    width, height = info.display_size
    with VideoReader(info) as reader:
        assert reader.converter is not None
        assert reader._command()[-3:] == ["-pix_fmt", pix_fmt, "pipe:1"]
        frames = list(reader)
    raw = subprocess.run([ffmpeg.ffmpeg_exe(), "-v", "error", "-i", str(src), "-f", "rawvideo",
                          "-pix_fmt", pix_fmt, "pipe:1"], capture_output=True, check=True).stdout
    deep = pix_fmt.endswith("10le")
    planes = np.frombuffer(raw, "<u2" if deep else np.uint8).reshape(len(frames), -1)
    assert len(frames) == info.frame_count
    for frame, stored in zip(frames, planes, strict=True):
        expected = ours(stored, pix_fmt, info.yuv_matrix, info.yuv_range, width, height)
        assert np.array_equal(frame, expected)


@pytest.mark.parametrize("pix_fmt", ["yuva420p", "yuva444p10le"])
def test_the_reader_converts_y_cb_cr_with_alpha_itself(tmp_path: Path, pix_fmt: str) -> None:
    """Its alpha plane too, on the frames' full scale; read without it (an output that
    drops alpha), the colours alone. swscale made a 10-bit alpha of 1023 65472, which came
    back 1022."""
    src = make_clip(tmp_path / "src.mkv", size="64x36", pix_fmt=pix_fmt, codec="ffv1",
                    seconds=0.2)
    info = probe(src)
    assert info.pix_fmt == pix_fmt and info.alpha
    deep = pix_fmt.endswith("10le")
    raw = subprocess.run([ffmpeg.ffmpeg_exe(), "-v", "error", "-i", str(src), "-f", "rawvideo",
                          "-pix_fmt", pix_fmt, "pipe:1"], capture_output=True, check=True).stdout
    planes = np.frombuffer(raw, "<u2" if deep else np.uint8).reshape(info.frame_count, -1)
    colours_fmt = "yuv" + pix_fmt[4:]
    luma = 64 * 36
    with VideoReader(info, alpha=True) as reader:
        assert reader.converter is not None
        frames = list(reader)
    with VideoReader(info) as reader:
        assert reader._command()[-3:] == ["-pix_fmt", colours_fmt, "pipe:1"]
        opaque = list(reader)
    for frame, plain, stored in zip(frames, opaque, planes, strict=True):
        colours = ours(stored[:-luma], colours_fmt, info.yuv_matrix, info.yuv_range, 64, 36)
        assert np.array_equal(frame[..., :3], colours) and np.array_equal(plain, colours)
        alpha = stored[-luma:].reshape(36, 64).astype(np.int64)
        top = 1023 if deep else 255
        full = 65535 if deep else 255
        assert np.array_equal(frame[..., 3], np.rint(alpha * full / top).astype(frame.dtype))


@pytest.mark.parametrize(("pix_fmt", "codec", "value_range"), [
    ("nv12", "rawvideo", "tv"),
    ("gray", "ffv1", "tv"), ("bgr0", "ffv1", None)])
def test_other_formats_still_come_through_swscale(tmp_path: Path, pix_fmt: str, codec: str,
                                                  value_range: str | None) -> None:
    """Formats rgb.py does not read: the reader's frames are swscale's, as before."""
    src = make_clip(tmp_path / "src.mkv", size="64x36", pix_fmt=pix_fmt, codec=codec,
                    seconds=0.2)
    info = probe(src)
    assert info.pix_fmt == pix_fmt
    with VideoReader(info) as reader:
        assert reader.converter is None
        frames = list(reader)
    convert = "format=rgb24" if value_range is None else (
        f"scale=in_color_matrix=bt709:in_range={value_range}:out_range=pc:flags={SWS_FLAGS}"
        ",format=rgb24")
    reference = subprocess.run([ffmpeg.ffmpeg_exe(), "-v", "error", "-i", str(src), "-vf",
                                convert, "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"],
                               capture_output=True, check=True).stdout
    expected = np.frombuffer(reference, np.uint8).reshape(-1, 36, 64, 3)
    assert len(frames) == len(expected) == info.frame_count
    assert all(np.array_equal(a, b) for a, b in zip(frames, expected, strict=True))
