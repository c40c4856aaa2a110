"""Read and write still images without losing what they hold.

An `Image` keeps the pixels exactly as stored (8 or 16 bits; gray, gray+alpha, RGB or RGBA, in
RGB order) and what is needed to write them back faithfully: the ICC profile, the DPI, the EXIF
block and a hint of the source's compression quality.

Reading: Pillow decodes and supplies the metadata; 16-bit colour pictures, which Pillow would cut
to 8 bits, are decoded by OpenCV. EXIF orientation is applied, so pixels come out upright and the
orientation tag is dropped. Palette pictures become RGB, or RGBA when they have transparency.
CMYK pictures are converted to sRGB through their profile when they carry one. Multi-frame files
(animated WebP, multi-page TIFF) give their first frame.

Writing, where a format cannot hold something:
- JPEG, WebP and BMP hold 8 bits only: 16-bit pixels are rounded to 8 bits.
- JPEG and BMP hold no transparency: an alpha channel that is fully opaque is dropped; any other
  alpha raises MediaError unless a `background` colour to composite over is given, because
  silently flattening a sprite onto black or white is a loss the user did not ask for.
- WebP holds no gray: gray pixels are written as RGB (read back as RGB). 16-bit gray+alpha TIFF
  is written as RGBA too, since neither Pillow nor OpenCV can read that layout back.
- BMP holds no ICC profile or EXIF; TIFF output carries no EXIF.
- An ICC profile whose colour space does not match the written pixels (gray vs RGB) is dropped
  rather than written into a file that readers would reject.
JPEG is written at 4:4:4 (chroma subsampling smears coloured line art) and, unless `quality` is
given, at the source's estimated quality but never below 95. WebP is lossless unless the source
was lossy or a `quality` is given. DPI is copied unchanged; scaling it is the caller's choice.

Every write goes to a temporary file beside the final path and is renamed over it, so a crash
never leaves a half-written file at the final path.
"""

from __future__ import annotations

import contextlib
import io
import os
import secrets
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import PIL.Image
from PIL import ImageCms

from upscaler.errors import MediaError

IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".png", ".jpg", ".jpeg", ".jpe", ".jfif", ".webp", ".tif", ".tiff", ".bmp"}
)

_FORMAT_BY_EXTENSION = {
    ".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".jpe": "JPEG", ".jfif": "JPEG",
    ".webp": "WEBP", ".tif": "TIFF", ".tiff": "TIFF", ".bmp": "BMP",
}
_FORMAT_ALIASES = {"JPG": "JPEG", "TIF": "TIFF", "MPO": "JPEG"}
WRITABLE_FORMATS: tuple[str, ...] = ("PNG", "JPEG", "WEBP", "TIFF", "BMP")
_LOSSY_FORMATS = frozenset({"JPEG"})
_NO_ALPHA_FORMATS = frozenset({"JPEG", "BMP"})
_EIGHT_BIT_FORMATS = frozenset({"JPEG", "WEBP", "BMP"})
_ICC_FORMATS = frozenset({"PNG", "JPEG", "WEBP", "TIFF"})
_EXIF_FORMATS = frozenset({"PNG", "JPEG", "WEBP"})
_DEFAULT_QUALITY = 95
_ORIENTATION_TAG = 0x0112

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


@dataclass(frozen=True, eq=False)  # arrays have no single truth value
class Image:
    """A still picture and the metadata needed to write it back.

    `pixels` is (H, W, C) uint8 or uint16 with C = 1 (gray), 2 (gray+alpha), 3 (RGB) or
    4 (RGBA), upright, in RGB order. `exif` is a raw EXIF block as Pillow writes it (starting
    with b"Exif\\0\\0"), without the orientation tag. `quality` is the estimated JPEG quality of
    the source; `lossless` says whether the source was stored without loss.
    """

    pixels: np.ndarray
    icc_profile: bytes | None = None
    source_format: str | None = None
    dpi: tuple[float, float] | None = None
    exif: bytes | None = None
    quality: int | None = None
    lossless: bool = True

    def __post_init__(self) -> None:
        p = self.pixels
        if p.ndim != 3 or p.shape[2] not in (1, 2, 3, 4) or p.dtype not in (np.uint8, np.uint16):
            raise ValueError(f"pixels must be (H, W, 1-4) uint8 or uint16, not {p.shape} {p.dtype}")

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])

    @property
    def channels(self) -> int:
        return int(self.pixels.shape[2])

    @property
    def bit_depth(self) -> int:
        return 16 if self.pixels.dtype == np.uint16 else 8

    @property
    def has_alpha(self) -> bool:
        return self.channels in (2, 4)

    @property
    def is_gray(self) -> bool:
        return self.channels in (1, 2)


def is_image_path(path: str | Path) -> bool:
    """Whether the name says this is a still image we read (macOS `._` shadow files are not)."""
    path = Path(path)
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith("._")


# --- reading -----------------------------------------------------------------------------------


def read_image(path: str | Path) -> Image:
    """Decode an image file; MediaError naming the file when it is missing, damaged or no image."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise MediaError(f"cannot read: {e.strerror or e}", path) from e
    try:
        with PIL.Image.open(io.BytesIO(data)) as im:
            im.load()
            return _decode(im, data, path)
    except PIL.UnidentifiedImageError as e:
        raise MediaError("not an image, or in a format we cannot read", path) from e
    except PIL.Image.DecompressionBombError as e:
        raise MediaError(f"refusing a picture this large: {e}", path) from e
    except ImageCms.PyCMSError as e:
        raise MediaError(f"cannot convert its colours to sRGB: {e}", path) from e
    except (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error) as e:
        raise MediaError(f"damaged or truncated image: {e}", path) from e


def _decode(im: PIL.Image.Image, data: bytes, path: Path) -> Image:
    fmt = _FORMAT_ALIASES.get(im.format or "", im.format)
    icc: bytes | None = im.info.get("icc_profile") or None
    exif = im.getexif()
    orientation = exif.get(_ORIENTATION_TAG, 1)
    if _is_16bit(im, data):
        pixels = _decode_16bit(im, data, path)
    else:
        pixels, icc = _decode_8bit(im, icc, path)
    if orientation in _UPRIGHT:
        pixels = np.ascontiguousarray(_UPRIGHT[orientation](pixels))
    dpi = im.info.get("dpi")
    return Image(
        pixels=pixels,
        icc_profile=icc,
        source_format=fmt,
        # PNG stores dots per metre: 300 dpi comes back as 299.9994.
        dpi=(round(float(dpi[0]), 1), round(float(dpi[1]), 1)) if dpi and all(dpi) else None,
        exif=_exif_without_orientation(im.info.get("exif")) if fmt in _EXIF_FORMATS else None,
        quality=_jpeg_quality(im) if fmt == "JPEG" else None,
        lossless=fmt not in _LOSSY_FORMATS and not (fmt == "WEBP" and not _webp_lossless(data)),
    )


def _is_16bit(im: PIL.Image.Image, data: bytes) -> bool:
    if im.format == "PNG":
        return data[24] == 16  # bit depth in IHDR, always the first chunk
    if im.format == "TIFF":
        bits = im.tag_v2.get(258, 8)  # type: ignore[attr-defined]
        return max(bits if isinstance(bits, tuple) else (bits,)) == 16
    return False


def _decode_16bit(im: PIL.Image.Image, data: bytes, path: Path) -> np.ndarray:
    # Pillow reports 16-bit gray+alpha PNG as RGBA, so ask the file: IHDR colour type, or
    # TIFF photometric interpretation.
    png = im.format == "PNG"
    gray = data[25] in (0, 4) if png else im.tag_v2.get(262) in (0, 1)  # type: ignore[attr-defined]
    if im.mode.startswith("I;16") or im.mode == "I":
        arr = np.asarray(im)
        if arr.min() < 0 or arr.max() > 65535:
            raise MediaError("pixel values outside the 16-bit range", path)
        return arr.astype(np.uint16)[..., None]
    # Pillow has no 16-bit colour modes and would cut these to 8 bits.
    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
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
    elif "A" in mode or "a" in mode:
        target = "RGBA"
    else:  # YCbCr, LAB, HSV, RGBX
        target = "RGB"
    if target != mode:
        im = im.convert(target)
    arr = np.asarray(im)
    return (arr[..., None] if arr.ndim == 2 else arr).copy(), icc


def _cmyk_to_rgb(im: PIL.Image.Image, icc: bytes | None) -> tuple[np.ndarray, bytes | None]:
    if icc is not None and _icc_space(icc) == "CMYK":
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
    """Whether a WebP file's bitstream is VP8L (lossless) rather than VP8 (lossy)."""
    pos = 12
    while pos + 8 <= len(data):
        tag = data[pos:pos + 4]
        if tag in (b"VP8L", b"VP8 "):
            return tag == b"VP8L"
        size = struct.unpack("<I", data[pos + 4:pos + 8])[0]
        pos += 8 + size + (size & 1)
    return False


def _icc_space(icc: bytes) -> str:
    """The data colour space an ICC profile declares: 'RGB', 'GRAY', 'CMYK', ..."""
    return icc[16:20].decode("ascii", "replace").strip() if len(icc) >= 20 else ""


# --- writing -----------------------------------------------------------------------------------


def write_image(
    image: Image,
    path: str | Path,
    fmt: str | None = None,
    quality: int | None = None,
    *,
    background: tuple[int, int, int] | None = None,
) -> Path:
    """Write `image` to `path` atomically, in `fmt` or the format its extension names.

    `quality` (1-100) applies to JPEG and WebP. `background` (8-bit RGB) is what transparent
    pixels are composited over for formats without alpha; without it, such a picture with any
    transparency raises MediaError. Returns `path`.
    """
    path = Path(path)
    fmt = _output_format(path, fmt, image.source_format)
    if quality is not None and not 1 <= quality <= 100:
        raise MediaError(f"quality must be 1-100, not {quality}", path)
    pixels = _fit_pixels(image.pixels, fmt, background, path)
    icc = image.icc_profile if fmt in _ICC_FORMATS else None
    if icc is not None and (_icc_space(icc) == "GRAY") != (pixels.shape[2] in (1, 2)):
        icc = None
    exif = image.exif if fmt in _EXIF_FORMATS else None
    if pixels.dtype == np.uint16:
        encode16 = _png16 if fmt == "PNG" else _tiff16
        data = encode16(pixels, icc, image.dpi, exif)
    else:
        data = _encode_pillow(pixels, fmt, image, quality, icc, exif)
    _atomic_write(path, data)
    return path


def format_of_extension(ext: str) -> str | None:
    """The format an extension (".jpg") names, as Pillow calls it ("JPEG"); None if unknown."""
    return _FORMAT_BY_EXTENSION.get(ext.lower())


def format_of_name(fmt: str) -> str:
    """A user's format name ("jpg", "tif") as Pillow calls it ("JPEG", "TIFF")."""
    name = fmt.upper().lstrip(".")
    return _FORMAT_ALIASES.get(name, name)


def _output_format(path: Path, fmt: str | None, source_format: str | None) -> str:
    if fmt:
        name = format_of_name(fmt)
        if name not in WRITABLE_FORMATS:
            raise MediaError(f"cannot write format {fmt!r}; use png, jpg, webp, tiff or bmp", path)
        return name
    by_ext = _FORMAT_BY_EXTENSION.get(path.suffix.lower())
    if by_ext:
        return by_ext
    if source_format in WRITABLE_FORMATS:
        return source_format
    raise MediaError(f"unknown image extension {path.suffix!r}; give a format", path)


def check_storable(image: Image, path: str | Path, fmt: str | None = None,
                   background: tuple[int, int, int] | None = None) -> None:
    """MediaError now, before any work, if writing `image` to `path` would be refused."""
    path = Path(path)
    fmt = _output_format(path, fmt, image.source_format)
    if fmt in _NO_ALPHA_FORMATS and background is None and _transparent(image.pixels):
        raise _transparency_error(fmt, path)


def _transparent(pixels: np.ndarray) -> bool:
    return pixels.shape[2] in (2, 4) and int(pixels[..., -1].min()) < np.iinfo(pixels.dtype).max


def _transparency_error(fmt: str, path: Path) -> MediaError:
    return MediaError(f"{fmt} cannot store transparency; write PNG, WebP or TIFF, or give "
                      "--background (e.g. '#ffffff') to flatten onto", path)


def _fit_pixels(
    pixels: np.ndarray, fmt: str, background: tuple[int, int, int] | None, path: Path
) -> np.ndarray:
    """Pixels reshaped to what `fmt` can hold, refusing to drop transparency silently."""
    if fmt in _EIGHT_BIT_FORMATS and pixels.dtype == np.uint16:
        pixels = np.rint(pixels / 257.0).astype(np.uint8)
    if fmt in _NO_ALPHA_FORMATS and pixels.shape[2] in (2, 4):
        peak = np.iinfo(pixels.dtype).max
        alpha = pixels[..., -1:]
        colour = pixels[..., :-1]
        if not _transparent(pixels):
            pixels = colour
        elif background is None:
            raise _transparency_error(fmt, path)
        else:
            bg = np.asarray(background, np.float64) * (peak / 255.0)
            if colour.shape[2] == 1:
                bg = np.array([bg @ np.array([0.299, 0.587, 0.114])])
            a = alpha / float(peak)
            pixels = np.rint(colour * a + bg * (1.0 - a)).astype(pixels.dtype)
    # Neither Pillow nor OpenCV reads 16-bit gray+alpha TIFF back, so it is written as RGBA.
    gray_alpha_tiff16 = fmt == "TIFF" and pixels.dtype == np.uint16 and pixels.shape[2] == 2
    if (fmt == "WEBP" and pixels.shape[2] in (1, 2)) or gray_alpha_tiff16:
        gray, rest = pixels[..., :1], pixels[..., 1:]
        pixels = np.concatenate([gray, gray, gray, rest], axis=2)
    return np.ascontiguousarray(pixels)


def _encode_pillow(
    pixels: np.ndarray,
    fmt: str,
    image: Image,
    quality: int | None,
    icc: bytes | None,
    exif: bytes | None,
) -> bytes:
    im = PIL.Image.fromarray(pixels[..., 0] if pixels.shape[2] == 1 else pixels)
    opts: dict[str, object] = {}
    if icc:
        opts["icc_profile"] = icc
    if exif:
        opts["exif"] = exif
    if image.dpi and fmt != "WEBP":
        opts["dpi"] = image.dpi
    if fmt == "PNG":
        opts["compress_level"] = 6
    elif fmt == "JPEG":
        opts.update(quality=quality or max(image.quality or 0, _DEFAULT_QUALITY),
                    subsampling=0, optimize=True)
    elif fmt == "WEBP":
        if quality is None and image.lossless:
            # `exact` keeps the colour under fully transparent pixels, as the source had it.
            opts.update(lossless=True, quality=100, exact=True)
        else:
            opts.update(quality=quality or max(image.quality or 0, _DEFAULT_QUALITY))
    elif fmt == "TIFF":
        opts["compression"] = "tiff_adobe_deflate"
    buf = io.BytesIO()
    im.save(buf, format=fmt, **opts)
    return buf.getvalue()


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _png16(
    pixels: np.ndarray, icc: bytes | None, dpi: tuple[float, float] | None, exif: bytes | None
) -> bytes:
    """A 16-bit PNG of any channel count (Pillow has no 16-bit colour modes to write from)."""
    h, w, c = pixels.shape
    colour_type = {1: 0, 2: 4, 3: 2, 4: 6}[c]
    out = [b"\x89PNG\r\n\x1a\n",
           _png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, colour_type, 0, 0, 0))]
    if icc:
        out.append(_png_chunk(b"iCCP", b"ICC Profile\x00\x00" + zlib.compress(icc)))
    if dpi:
        ppm = [max(1, round(d / 0.0254)) for d in dpi]
        out.append(_png_chunk(b"pHYs", struct.pack(">IIB", ppm[0], ppm[1], 1)))
    if exif:
        out.append(_png_chunk(b"eXIf", exif.removeprefix(b"Exif\x00\x00")))
    rows = pixels.astype(">u2").view(np.uint8).reshape(h, w * c * 2)
    deflate = zlib.compressobj(6)
    parts = []
    previous = np.zeros((1, rows.shape[1]), np.uint8)
    for start in range(0, h, 256):  # bands bound the memory of the int16 temporaries
        band = rows[start:start + 256]
        up = np.concatenate([previous, band[:-1]])
        filtered = _paeth_filter(band, up, bpp=c * 2)
        marked = np.concatenate([np.full((len(band), 1), 4, np.uint8), filtered], axis=1)
        parts.append(deflate.compress(marked.tobytes()))
        previous = band[-1:]
    parts.append(deflate.flush())
    out += [_png_chunk(b"IDAT", b"".join(parts)), _png_chunk(b"IEND", b"")]
    return b"".join(out)


def _paeth_filter(rows: np.ndarray, up: np.ndarray, bpp: int) -> np.ndarray:
    """PNG filter type 4 over whole rows at once (it predicts from unfiltered bytes only)."""
    x = rows.astype(np.int16)
    b = up.astype(np.int16)
    a = np.zeros_like(x)
    a[:, bpp:] = x[:, :-bpp]
    c = np.zeros_like(x)
    c[:, bpp:] = b[:, :-bpp]
    pa, pb, pc = np.abs(b - c), np.abs(a - c), np.abs(a + b - 2 * c)
    predicted = np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))
    return ((x - predicted) & 0xFF).astype(np.uint8)


def _tiff16(
    pixels: np.ndarray, icc: bytes | None, dpi: tuple[float, float] | None, exif: bytes | None
) -> bytes:
    """A 16-bit little-endian TIFF, deflate with horizontal predictor, unassociated alpha.

    The directory comes before the pixel data, so a cut-off file reads as truncated rather than
    as no image at all.
    """
    del exif  # EXIF in TIFF needs its own sub-IFD; not carried
    h, w, c = pixels.shape
    rows_per_strip = max(1, (1 << 18) // (w * c * 2))
    strips = []
    for start in range(0, h, rows_per_strip):
        band = pixels[start:start + rows_per_strip]
        diff = band.copy()
        diff[:, 1:] = band[:, 1:] - band[:, :-1]  # uint16 wraps, as the predictor expects
        strips.append(zlib.compress(diff.astype("<u2").tobytes(), 6))
    short, long_, rational, undefined = 3, 4, 5, 7
    n = len(strips)

    def directory(offsets: list[int]) -> bytes:
        entries: list[tuple[int, int, int, bytes]] = [
            (256, long_, 1, struct.pack("<I", w)),
            (257, long_, 1, struct.pack("<I", h)),
            (258, short, c, struct.pack(f"<{c}H", *[16] * c)),
            (259, short, 1, struct.pack("<H", 8)),  # Adobe deflate
            (262, short, 1, struct.pack("<H", 1 if c in (1, 2) else 2)),
            (273, long_, n, struct.pack(f"<{n}I", *offsets)),
            (277, short, 1, struct.pack("<H", c)),
            (278, long_, 1, struct.pack("<I", rows_per_strip)),
            (279, long_, n, struct.pack(f"<{n}I", *map(len, strips))),
            (284, short, 1, struct.pack("<H", 1)),
            (317, short, 1, struct.pack("<H", 2)),  # horizontal differencing
        ]
        if dpi:
            entries += [(282, rational, 1, struct.pack("<II", round(dpi[0] * 1000), 1000)),
                        (283, rational, 1, struct.pack("<II", round(dpi[1] * 1000), 1000)),
                        (296, short, 1, struct.pack("<H", 2))]
        if c in (2, 4):
            entries.append((338, short, 1, struct.pack("<H", 2)))  # unassociated alpha
        if icc:
            entries.append((34675, undefined, len(icc), icc))
        return _tiff_directory(sorted(entries), at=8)

    data_start = 8 + len(directory([0] * n))  # its length does not depend on the offsets
    offsets = [data_start + sum(len(s) for s in strips[:i]) for i in range(n)]
    return b"II*\0" + struct.pack("<I", 8) + directory(offsets) + b"".join(strips)


def _tiff_directory(entries: list[tuple[int, int, int, bytes]], at: int) -> bytes:
    """One IFD at offset `at`, followed by the values too long to sit in their entries."""
    extra_pos = at + 2 + 12 * len(entries) + 4
    ifd, extra = [struct.pack("<H", len(entries))], []
    for tag, kind, count, value in entries:
        if len(value) <= 4:
            ifd.append(struct.pack("<HHI", tag, kind, count) + value.ljust(4, b"\0"))
        else:
            ifd.append(struct.pack("<HHII", tag, kind, count, extra_pos))
            padded = value + b"\0" * (len(value) & 1)
            extra.append(padded)
            extra_pos += len(padded)
    ifd.append(b"\0\0\0\0")
    return b"".join(ifd) + b"".join(extra)


def _atomic_write(path: Path, data: bytes) -> None:
    """Write beside `path` under a hidden temporary name, then rename over it."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    try:
        # os.open with 0o666 lets the umask decide permissions, as a plain open() would.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        raise MediaError(f"cannot write: {e.strerror or e}", path) from e
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)  # gone already after a successful rename
