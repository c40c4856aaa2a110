"""Read still images into `Image`, upright and with their metadata.

Pillow decodes and supplies the metadata; 16-bit colour pictures, which Pillow would cut to 8
bits, are decoded by OpenCV. EXIF orientation is applied, so pixels come out upright and the
orientation tag is dropped. Palette pictures become RGB, or RGBA when they have transparency.
CMYK pictures are converted to sRGB through their profile when they carry one. Animated PNG,
WebP and GIF give every frame, as 8-bit RGB(A) (see animation.py); a multi-page TIFF gives its
first page, with the others as `pages` that are decoded one at a time, as each is asked for.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import struct
import zlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import overload

import cv2
import numpy as np
import PIL.Image
from PIL import ImageCms

from upscaler.errors import MediaError
from upscaler.image_data import (
    ANIMATED_FORMATS,
    EXIF_FORMATS,
    FORMAT_ALIASES,
    Animation,
    Image,
    avif_supported,
    icc_space,
)
from upscaler.media.images.animation import is_animated, read_frames
from upscaler.media.images.metadata import as_bytes, tiff_description
from upscaler.media.images.png import colour_chunks

_LOSSY_FORMATS = frozenset({"JPEG", "AVIF"})
_X_RESOLUTION = 282  # TIFF's tag
_ORIENTATION_TAG = 0x0112
_EXIF_IFD = 0x8769
_PIXEL_SIZE_TAGS = (0xA002, 0xA003)  # PixelXDimension, PixelYDimension

# EXIF orientation value -> the array operation that makes the picture upright.
_UPRIGHT: dict[int, Callable[[np.ndarray], np.ndarray]] = {
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.transpose(1, 0, 2),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: a[::-1, ::-1].transpose(1, 0, 2),
    8: lambda a: np.rot90(a, 1),
}

# The IJG luminance quantisation table that libjpeg scales by the quality setting.
_IJG_LUMA = np.array([
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55,
    14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62,
    18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99,
])


def read_image(path: str | Path) -> Image:
    """Decode an image file; MediaError naming the file when it is missing, damaged or no image."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise MediaError(f"cannot read: {e.strerror or e}", path) from e
    if not data:
        raise MediaError("an empty file, no image", path)
    with _decoding(path, data), PIL.Image.open(io.BytesIO(data)) as im:
        im.load()
        return _decode(im, data, path)


@contextlib.contextmanager
def _decoding(path: Path, data: bytes = b"") -> Iterator[None]:
    """What Pillow raises while decoding `path` (its bytes `data`), as a MediaError naming it."""
    try:
        yield
    except PIL.UnidentifiedImageError as e:
        if path.suffix.lower() == ".avif" and not avif_supported():
            raise MediaError("reading AVIF needs Pillow 11.3 or newer, built with AVIF (pip "
                             "install -U pillow)", path) from e
        if _is_video(data):  # as a picture under a video's name is told (probe.py)
            raise MediaError("holds a video, not a picture; give it the video's extension to "
                             "upscale it as a video", path) from e
        raise MediaError("not an image, or in a format we cannot read", path) from e
    except PIL.Image.DecompressionBombError as e:
        raise MediaError(f"refusing a picture this large: {e}", path) from e
    except ImageCms.PyCMSError as e:
        raise MediaError(f"cannot convert its colours to sRGB: {e}", path) from e
    # What Pillow's decoders raise on damage: IndexError reading past the end of a cut GIF,
    # RuntimeError from libavif ("Failed to decode frame"), ZeroDivisionError from an AVIF
    # sequence's broken timescale.
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, RuntimeError,
            ZeroDivisionError, struct.error, zlib.error) as e:
        raise MediaError(f"damaged or truncated image: {e}", path) from e


def _is_video(data: bytes) -> bool:
    """Whether `data` begins as a video container does: MP4/MOV, Matroska/WebM, AVI, MPEG-TS."""
    return (data[4:8] == b"ftyp" or data[:4] == b"\x1a\x45\xdf\xa3"
            or (data[:4] == b"RIFF" and data[8:12] == b"AVI ")
            or (len(data) > 376 and data[0] == data[188] == data[376] == 0x47))


def _decode(im: PIL.Image.Image, data: bytes, path: Path) -> Image:
    fmt = FORMAT_ALIASES.get(im.format or "", im.format)
    if fmt == "AVIF" and _avif_deep(data):
        raise MediaError("an AVIF of 10 or 12 bits, which Pillow reads as 8: its depth would be "
                         "lost; convert it to a 16-bit PNG first (ffmpeg -i in.avif -pix_fmt "
                         "rgb48be out.png)", path)
    count = _tiff_pages(im, path) if fmt == "TIFF" else 1
    first = _picture(im, data, fmt, path, lambda: _opencv_page(data, 0))
    # A TIFF of several pages (a scanned book in one file): each a picture of its own size,
    # depth and profile.
    return first if count == 1 else dataclasses.replace(first, pages=TiffPages(data, path,
                                                                                count - 1))


class TiffPages(Sequence[Image]):
    """The pages after the first of a TIFF of several, each decoded when it is asked for: a
    scanned book's pages are upscaled and written one at a time, and are never all in memory,
    its source's pages no more than its outputs'."""

    def __init__(self, data: bytes, path: Path, count: int) -> None:
        self._data, self._path, self._count = data, path, count

    def __len__(self) -> int:
        return self._count

    @overload
    def __getitem__(self, index: int) -> Image: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[Image]: ...

    def __getitem__(self, index: int | slice) -> Image | Sequence[Image]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(self._count))]
        if not -self._count <= index < self._count:
            raise IndexError(f"page {index} of {self._count}")
        page = index % self._count + 1  # the first page is the Image these belong to
        with _decoding(self._path), PIL.Image.open(io.BytesIO(self._data)) as im:
            im.seek(page)
            im.load()
            return _picture(im, self._data, "TIFF", self._path,
                            lambda: _opencv_page(self._data, page))

    def __repr__(self) -> str:
        return f"<{self._count} more pages of {self._path.name}>"


def _opencv_page(data: bytes, page: int) -> np.ndarray | None:
    """Page `page` of the file `data` as OpenCV decodes it (16-bit colour, which Pillow cuts to
    8 bits); None where it cannot."""
    buffer = np.frombuffer(data, np.uint8)
    if page == 0:
        return cv2.imdecode(buffer, cv2.IMREAD_UNCHANGED)
    try:
        ok, pages = cv2.imdecodemulti(buffer, cv2.IMREAD_UNCHANGED, range=(page, page + 1))
    except TypeError:  # OpenCV 4.8, whose imdecodemulti takes no range: every page decoded
        ok, pages = cv2.imdecodemulti(buffer, cv2.IMREAD_UNCHANGED)
        pages = pages[page:page + 1] if ok else ()
    return pages[0] if ok and pages else None


def _avif_deep(data: bytes) -> bool:
    """Whether an AVIF file's AV1 configuration (its av1C box) says 10 or 12 bits."""
    at = data.find(b"av1C")
    # The box's body: marker and version, profile and level, then tier, high_bitdepth...
    return at >= 0 and len(data) > at + 6 and bool(data[at + 6] & 0x40)


def _tiff_pages(im: PIL.Image.Image, path: Path) -> int:
    """How many pages the TIFF has; MediaError where one after the first is damaged (Pillow
    raises TypeError or KeyError there, which the first page alone never showed)."""
    try:
        return int(getattr(im, "n_frames", 1))
    except (TypeError, KeyError) as e:
        raise MediaError(f"damaged or truncated image: a page after the first cannot be read "
                         f"({e})", path) from e


def _picture(im: PIL.Image.Image, data: bytes, fmt: str | None, path: Path,
             opencv: Callable[[], np.ndarray | None]) -> Image:
    """The picture at `im`'s current frame of the file `data`; `opencv` decodes that frame with
    OpenCV (16-bit colour, which Pillow cuts to 8 bits)."""
    icc: bytes | None = im.info.get("icc_profile") or None
    exif = im.getexif()
    orientation = exif.get(_ORIENTATION_TAG, 1)
    dpi = im.info.get("dpi")
    if fmt == "TIFF" and _X_RESOLUTION not in im.tag_v2:  # type: ignore[attr-defined]
        dpi = None  # Pillow says (1, 1) for a TIFF with no resolution, which a copy would state
    raw_exif = im.info.get("exif")
    animation: Animation | None = None
    if fmt in ANIMATED_FORMATS and is_animated(im):
        pixels, animation = read_frames(im)
    elif _is_16bit(im, data):
        pixels = _decode_16bit(im, data, path, opencv)
    else:
        pixels, icc = _decode_8bit(im, icc, path)
    if orientation in _UPRIGHT:
        upright = _UPRIGHT[orientation]
        pixels = np.ascontiguousarray(upright(pixels))
        if animation is not None:
            animation = dataclasses.replace(animation, frames=tuple(
                np.ascontiguousarray(upright(f)) for f in animation.frames))
    return Image(
        pixels=pixels,
        icc_profile=icc,
        source_format=fmt,
        # PNG stores dots per metre: 300 dpi comes back as 299.9994.
        dpi=(round(float(dpi[0]), 1), round(float(dpi[1]), 1)) if dpi and all(dpi) else None,
        exif=_exif_without_orientation(raw_exif) if fmt in EXIF_FORMATS
        else tiff_description(im) if fmt == "TIFF" else None,
        quality=_jpeg_quality(im) if fmt == "JPEG" else None,
        lossless=fmt not in _LOSSY_FORMATS and not (fmt == "WEBP" and not _webp_lossless(data)),
        animation=animation,
        text=tuple((str(k), str(v)) for k, v in getattr(im, "text", {}).items())
        if fmt == "PNG" else (),
        xmp=as_bytes(im.info.get("xmp")) if fmt != "PNG" else None,
        comment=as_bytes(im.info.get("comment")),
        png_colour=colour_chunks(data) if fmt == "PNG" else (),
    )


def _is_16bit(im: PIL.Image.Image, data: bytes) -> bool:
    if im.format == "PNG":
        return data[24] == 16  # bit depth in IHDR, always the first chunk
    if im.format == "TIFF":
        bits = im.tag_v2.get(258, 8)  # type: ignore[attr-defined]
        return max(bits if isinstance(bits, tuple) else (bits,)) == 16
    return False


def _decode_16bit(im: PIL.Image.Image, data: bytes, path: Path,
                  opencv: Callable[[], np.ndarray | None]) -> np.ndarray:
    # Pillow reports 16-bit gray+alpha PNG as RGBA, so ask the file: IHDR colour type, or
    # TIFF photometric interpretation.
    png = im.format == "PNG"
    gray = data[25] in (0, 4) if png else im.tag_v2.get(262) in (0, 1)  # type: ignore[attr-defined]
    if im.mode.startswith("I;16") or im.mode == "I":
        arr = np.asarray(im)
        if arr.min() < 0 or arr.max() > 65535:
            raise MediaError("pixel values outside the 16-bit range", path)
        grey = arr.astype(np.uint16)
        key = im.info.get("transparency")
        if isinstance(key, int):  # a tRNS colour key: that grey is transparent
            return np.dstack([grey, np.where(grey == key, 0, 65535).astype(np.uint16)])
        return grey[..., None]
    # Pillow has no 16-bit colour modes and would cut these to 8 bits.
    arr = opencv()
    if arr is None or arr.dtype != np.uint16:
        raise MediaError("cannot decode this 16-bit image", path)
    if arr.ndim == 2:
        return arr[..., None]
    if arr.shape[2] == 3:
        arr = arr[..., ::-1]
    elif arr.shape[2] == 4:
        arr = arr[..., [2, 1, 0, 3]]
    if gray and arr.shape[2] >= 3:  # OpenCV widens gray+alpha to four channels
        arr = arr[..., [0, 3]] if arr.shape[2] == 4 else arr[..., :1]
    return np.ascontiguousarray(arr)


def _decode_8bit(
    im: PIL.Image.Image, icc: bytes | None, path: Path
) -> tuple[np.ndarray, bytes | None]:
    mode = im.mode
    transparent = "transparency" in im.info
    if mode in ("I", "F") or mode.startswith("I;"):
        raise MediaError(f"{mode!r} pixels (32-bit or signed) are not supported", path)
    if mode == "CMYK":
        return _cmyk_to_rgb(im, icc)
    if mode in ("L", "1"):
        target = "LA" if transparent else "L"
    elif mode in ("LA", "La"):
        target = "LA"
    elif mode in ("P", "RGB"):
        target = "RGBA" if transparent else "RGB"
    elif mode in ("RGBA", "RGBa", "PA"):
        target = "RGBA"
    else:  # YCbCr, LAB, HSV, RGBX
        target = "RGB"
        if icc is not None and icc_space(icc) not in ("RGB", ""):
            # A Lab or YCbCr profile describes the values before they became RGB.
            icc = None
    if target != mode:
        im = im.convert(target)
    arr = np.asarray(im)
    return (arr[..., None] if arr.ndim == 2 else arr).copy(), icc


def _cmyk_to_rgb(im: PIL.Image.Image, icc: bytes | None) -> tuple[np.ndarray, bytes | None]:
    if icc is not None and icc_space(icc) == "CMYK":
        srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
        src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        rgb = ImageCms.profileToProfile(im, src, srgb, outputMode="RGB")
        return np.asarray(rgb).copy(), srgb.tobytes()
    return np.asarray(im.convert("RGB")).copy(), None


def _exif_without_orientation(raw: bytes | None) -> bytes | None:
    """The EXIF block minus its orientation tag, which no longer applies once pixels are upright."""
    if not raw:
        return None
    exif = PIL.Image.Exif()
    try:
        exif.load(raw)
    except (OSError, SyntaxError, ValueError, struct.error):
        return None  # unreadable EXIF is not worth failing the picture for
    exif.pop(_ORIENTATION_TAG, None)
    if _EXIF_IFD in exif:  # (get_ifd would add one where there is none)
        # The stored picture's width and height: the upscaled one has others.
        details = exif.get_ifd(_EXIF_IFD)
        for tag in _PIXEL_SIZE_TAGS:
            details.pop(tag, None)
        if not details:  # an IFD of no entries is not one: the pointer goes
            del exif[_EXIF_IFD]
    return exif.tobytes() if len(exif) else None


def _jpeg_quality(im: PIL.Image.Image) -> int | None:
    """The libjpeg quality whose scaled table best matches the file's luminance table.

    Tables are compared as sorted values so that zigzag versus natural order does not matter.
    """
    tables = getattr(im, "quantization", None)
    if not tables or 0 not in tables:
        return None
    luma = np.sort(np.asarray(tables[0], np.int64))
    best, best_err = None, None
    for q in range(1, 101):
        scale = 5000 // q if q < 50 else 200 - 2 * q
        ref = np.sort(np.clip((_IJG_LUMA * scale + 50) // 100, 1, 255))
        err = int(np.abs(ref - luma).sum())
        if best_err is None or err < best_err:
            best, best_err = q, err
    return best


def _webp_lossless(data: bytes) -> bool:
    """Whether a WebP file's bitstream is VP8L (lossless) rather than VP8 (lossy); for an
    animation, its first frame's."""
    pos = 12
    while pos + 8 <= len(data):
        tag = data[pos:pos + 4]
        if tag in (b"VP8L", b"VP8 "):
            return tag == b"VP8L"
        if tag == b"ANMF":  # a frame: 16 bytes of placement and timing, then its own chunks
            pos += 8 + 16
            continue
        size = struct.unpack("<I", data[pos + 4:pos + 8])[0]
        pos += 8 + size + (size & 1)
    return False
