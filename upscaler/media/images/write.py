"""Write an `Image` in the format asked for, atomically, keeping what the format can hold.

Where a format cannot hold something:
- JPEG, WebP and BMP hold 8 bits only: 16-bit pixels are rounded to 8 bits.
- JPEG and BMP hold no transparency: an alpha channel that is fully opaque is dropped; any other
  alpha raises MediaError unless a `background` colour to composite over is given, because
  silently flattening a sprite onto black or white is a loss the user did not ask for.
- WebP holds no gray: gray pixels are written as RGB (read back as RGB). 16-bit gray+alpha TIFF
  is written as RGBA too, since neither Pillow nor OpenCV can read that layout back.
- BMP and GIF hold no ICC profile or EXIF; TIFF output carries no EXIF.
- GIF holds 256 colours and 1-bit transparency (see animation.py for how they are chosen).
- Only PNG (APNG), WebP and GIF hold an animation; another format raises MediaError. Animated
  frames are written at 8 bits.
- An ICC profile whose colour space does not match the written pixels (gray vs RGB) is dropped
  rather than written into a file that readers would reject.
JPEG is written at 4:4:4 (chroma subsampling smears coloured line art) and, unless `quality` is
given, at the source's estimated quality but never below 95. WebP is lossless unless the source
was lossy or a `quality` is given. DPI is copied unchanged; scaling it is the caller's choice.

Every write goes to a temporary file beside the final path and is renamed over it, so a crash
never leaves a half-written file at the final path; where nothing is to be replaced (no
--overwrite), it takes the final name only if that is still free, so a file that appeared there
while the picture was upscaled stays. Large PNGs (and 16-bit ones) stream to it
band by band, from a view of the pixels, never copied whole.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import secrets
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import BinaryIO, TypeVar

import numpy as np
import PIL.Image

from upscaler.errors import FormatError, MediaError, OutputExistsError
from upscaler.image_data import (
    ANIMATED_FORMATS,
    EXIF_FORMATS,
    FORMAT_ALIASES,
    FORMAT_BY_EXTENSION,
    WRITABLE_FORMATS,
    Image,
    avif_supported,
    icc_space,
)
from upscaler.media.images.animation import encode_frames, gif_frame
from upscaler.media.images.deep import TiffPage, TiffWriter
from upscaler.media.images.metadata import descriptive_tags, png_text, text_options, xmp_of
from upscaler.media.images.png import write_png
from upscaler.names import hidden_name

T = TypeVar("T")
_NO_ALPHA_FORMATS = frozenset({"JPEG", "BMP"})
_EIGHT_BIT_FORMATS = frozenset({"JPEG", "WEBP", "BMP", "GIF", "AVIF"})  # as Pillow writes them
_NO_GRAY_FORMATS = frozenset({"WEBP", "GIF", "AVIF"})
_ICC_FORMATS = frozenset({"PNG", "JPEG", "WEBP", "TIFF", "AVIF"})
_DEFAULT_QUALITY = 95
# 8-bit PNGs of this many bytes of pixels or more are written band by band (png.py) rather than
# by Pillow, which would hold a second, 4-byte-a-pixel copy of the picture: 64 MB is a
# 4600x4600 RGB output. Smaller ones keep Pillow's encoder, about twice as fast.
BANDED_PNG_BYTES = 64 << 20
# The longest side each format's encoder takes (libwebp's, libjpeg's, GIF's 16-bit fields).
MAX_SIDE = {"WEBP": 16383, "JPEG": 65500, "GIF": 65535,
            # libavif writes more, but reads back no more than 16384x16384 pixels by default.
            "AVIF": 16384}


def write_image(
    image: Image,
    path: str | Path,
    fmt: str | None = None,
    quality: int | None = None,
    *,
    background: tuple[int, int, int] | None = None,
    replace: bool = True,
) -> Path:
    """Write `image` to `path` atomically, in `fmt` or the format its extension names.

    `quality` (1-100) applies to JPEG, WebP and AVIF. `background` (8-bit RGB) is what transparent
    pixels are composited over for formats without alpha; without it, such a picture with any
    transparency raises MediaError. `replace`: a file at `path` is replaced; else it stays
    and OutputExistsError is raised. Returns `path`.
    """
    path = Path(path)
    fmt = _output_format(path, fmt, image.source_format)
    if quality is not None and not 1 <= quality <= 100:
        raise MediaError(f"quality must be 1-100, not {quality}", path)
    _check_animation(image, fmt, path)
    _check_pages(image, fmt, path)
    if image.pages:
        return write_pages(itertools.chain((image,), image.pages), path,
                           background=background, replace=replace)
    frames = [_fit_pixels(p, fmt, background, path) for p in image.frames]
    pixels = frames[0]
    icc = _icc_for(image.icc_profile if fmt in _ICC_FORMATS else None, pixels)
    exif = image.exif if fmt in EXIF_FORMATS else None
    if image.animation is not None:
        # Pillow writes animations from 8-bit pictures only.
        frames = [np.rint(f / 257.0).astype(np.uint8) if f.dtype == np.uint16
                  else np.ascontiguousarray(f) for f in frames]
        options = _pillow_options(fmt, image, quality, icc, exif)
        animation = image.animation
        data = _encoded(path, lambda: encode_frames(frames, animation, fmt, options))
    elif fmt == "PNG" and (pixels.dtype == np.uint16 or pixels.nbytes >= BANDED_PNG_BYTES):
        text = png_text(image)
        atomic_write(path, lambda f: write_png(pixels, f, icc, image.dpi, exif, text,
                                               image.png_colour), replace=replace)
        return path
    elif pixels.dtype == np.uint16:  # a TIFF, which Pillow cannot write in 16-bit colour
        return write_pages([image], path, background=background, replace=replace)
    else:
        # Pillow writes into the file as it encodes: no second copy of the encoded picture.
        im, opts = _pillow_image(np.ascontiguousarray(pixels), fmt, image, quality, icc, exif)
        atomic_write(path, lambda f: _encoded(path, lambda: im.save(f, format=fmt, **opts)),
                     replace=replace)
        return path
    atomic_write(path, data, replace=replace)
    return path


def _encoded(path: Path, encode: Callable[[], T]) -> T:
    """`encode()`, with what an encoder refuses (Pillow raises ValueError for some) as our
    error naming `path`."""
    try:
        return encode()
    except ValueError as e:
        raise MediaError(f"cannot write: {e}", path) from e


def write_pages(pages: Iterable[Image], path: str | Path, *,
                background: tuple[int, int, int] | None = None, replace: bool = True) -> Path:
    """Write `pages` as one TIFF to `path` atomically, each page encoded as it comes: an
    iterator that upscales them one at a time holds one upscaled page, not the document.
    `replace` as for write_image. Returns `path`."""
    path = Path(path)

    def write(out: BinaryIO) -> None:
        writer = TiffWriter(out)
        for page in pages:
            tiff = _tiff_page(page, background, path)
            _encoded(path, lambda tiff=tiff: writer.add(tiff))

    atomic_write(path, write, replace=replace)
    return path


def _tiff_page(page: Image, background: tuple[int, int, int] | None, path: Path) -> TiffPage:
    pixels = np.ascontiguousarray(_fit_pixels(page.pixels, "TIFF", background, path))
    return TiffPage(pixels, _icc_for(page.icc_profile, pixels), page.dpi, xmp_of(page),
                    descriptive_tags(page.exif))


def _icc_for(icc: bytes | None, pixels: np.ndarray) -> bytes | None:
    """`icc` where it describes `pixels` (a gray profile for gray, a colour one for colour)."""
    if icc is not None and (icc_space(icc) == "GRAY") != (pixels.shape[2] in (1, 2)):
        return None
    return icc


def _check_pages(image: Image, fmt: str, path: Path) -> None:
    if image.pages and fmt != "TIFF":
        raise FormatError(f"{fmt} cannot hold the {len(image.pages) + 1} pages of a TIFF; "
                         "write TIFF", path)


def _check_animation(image: Image, fmt: str, path: Path) -> None:
    if image.animation is not None and fmt not in ANIMATED_FORMATS:
        raise FormatError(f"{fmt} cannot hold an animation ({len(image.frames)} frames); "
                         "write PNG, WebP or GIF", path)


def format_of_extension(ext: str) -> str | None:
    """The format an extension (".jpg") names, as Pillow calls it ("JPEG"); None if unknown."""
    return FORMAT_BY_EXTENSION.get(ext.lower())


def format_of_name(fmt: str) -> str:
    """A user's format name ("jpg", "tif") as Pillow calls it ("JPEG", "TIFF")."""
    name = fmt.upper().lstrip(".")
    return FORMAT_ALIASES.get(name, name)


def _output_format(path: Path, fmt: str | None, source_format: str | None) -> str:
    if fmt:
        name = format_of_name(fmt)
        if name not in WRITABLE_FORMATS:
            raise MediaError(f"cannot write format {fmt!r}; use png, jpg, webp, avif, tiff, "
                             "bmp or gif", path)
        return _available(name, path)
    by_ext = FORMAT_BY_EXTENSION.get(path.suffix.lower())
    if by_ext:
        return _available(by_ext, path)
    if source_format in WRITABLE_FORMATS:
        return _available(source_format, path)
    raise MediaError(f"unknown image extension {path.suffix!r}; give a format", path)


def _available(fmt: str, path: Path) -> str:
    """`fmt`, where this Pillow writes it: AVIF needs Pillow 11.3 or newer."""
    if fmt == "AVIF" and not avif_supported():
        raise MediaError("writing AVIF needs Pillow 11.3 or newer, built with AVIF (pip install "
                         "-U pillow)", path)
    return fmt


def check_storable(image: Image, path: str | Path, fmt: str | None = None,
                   background: tuple[int, int, int] | None = None) -> None:
    """MediaError now, before any work, if writing `image` to `path` would be refused."""
    path = Path(path)
    fmt = _output_format(path, fmt, image.source_format)
    _check_animation(image, fmt, path)
    _check_pages(image, fmt, path)
    if fmt in _NO_ALPHA_FORMATS and background is None and _transparent(image.pixels):
        raise _transparency_error(fmt, path)


def check_size(image: Image, path: str | Path, fmt: str | None,
               size: tuple[int, int]) -> None:
    """MediaError, before the model runs, if `path`'s format cannot hold `image` upscaled to
    `size` (height, width)."""
    path = Path(path)
    fmt = _output_format(path, fmt, image.source_format)
    limit = MAX_SIDE.get(fmt)
    if limit is not None and max(size) > limit:
        raise FormatError(f"{fmt} holds pictures up to {limit} px a side, and this one would be "
                         f"{size[1]}x{size[0]}; write PNG or TIFF, or give a smaller --scale",
                         path)


def _transparent(pixels: np.ndarray) -> bool:
    return pixels.shape[2] in (2, 4) and int(pixels[..., -1].min()) < np.iinfo(pixels.dtype).max


def _transparency_error(fmt: str, path: Path) -> FormatError:
    return FormatError(f"{fmt} cannot store transparency; write PNG, WebP or TIFF, or give "
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
    if (fmt in _NO_GRAY_FORMATS and pixels.shape[2] in (1, 2)) or gray_alpha_tiff16:
        gray, rest = pixels[..., :1], pixels[..., 1:]
        pixels = np.concatenate([gray, gray, gray, rest], axis=2)
    return pixels  # may be a view: each encoder copies what it must, png.py nothing


def _pillow_image(
    pixels: np.ndarray,
    fmt: str,
    image: Image,
    quality: int | None,
    icc: bytes | None,
    exif: bytes | None,
) -> tuple[PIL.Image.Image, dict[str, object]]:
    """The Pillow image of `pixels` and its save options for `fmt`."""
    if fmt == "GIF":
        im = gif_frame(pixels)
    else:
        im = PIL.Image.fromarray(pixels[..., 0] if pixels.shape[2] == 1 else pixels)
    opts = _pillow_options(fmt, image, quality, icc, exif)
    if "transparency" in im.info:
        opts["transparency"] = im.info["transparency"]
    return im, opts


def _pillow_options(fmt: str, image: Image, quality: int | None, icc: bytes | None,
                    exif: bytes | None) -> dict[str, object]:
    """Pillow's save options for `fmt`: what to carry over, and how to compress."""
    opts: dict[str, object] = {}
    if icc:
        opts["icc_profile"] = icc
    if exif:
        opts["exif"] = exif
    if image.dpi and fmt not in ("WEBP", "GIF"):
        opts["dpi"] = image.dpi
    opts.update(text_options(fmt, image))
    if fmt == "PNG":
        opts["compress_level"] = 6
    elif fmt == "JPEG":
        opts.update(quality=quality or max(image.quality or 0, _DEFAULT_QUALITY),
                    subsampling=0, optimize=True)
    elif fmt == "AVIF":
        # Pillow's AVIF is lossy: near-transparent quality, and full chroma for line art.
        opts.update(quality=quality or _DEFAULT_QUALITY, subsampling="4:4:4")
    elif fmt == "WEBP":
        if quality is None and image.lossless:
            # `exact` keeps the colour under fully transparent pixels, as the source had it.
            opts.update(lossless=True, quality=100, exact=True)
        else:
            opts.update(quality=quality or max(image.quality or 0, _DEFAULT_QUALITY))
    elif fmt == "TIFF":
        opts["compression"] = "tiff_adobe_deflate"
    return opts


# The hidden name a file is written under until it is complete: `.NAME.<12 hex digits>.tmp`.
_TEMPORARY = re.compile(r"\.(?P<name>.+)\.[0-9a-f]{12}\.tmp")


def temporary_name(path: Path) -> Path:
    """A fresh hidden name beside `path` to write it under until it is complete (the output's
    name cut, with a hash, where the whole would be too long a name: names.py)."""
    return path.with_name(hidden_name(path.name, f".{secrets.token_hex(6)}.tmp"))


def _temporary_part(name: str) -> str:
    """What stands for an output named `name` in its temporary files' names."""
    return hidden_name(name, ".000000000000.tmp")[1:-len(".000000000000.tmp")]


def atomic_write(path: Path, data: bytes | Callable[[BinaryIO], None], *,
                 replace: bool = True) -> None:
    """Write `data` (or what the callable writes to the file) beside `path` under a hidden
    temporary name, then rename over it; where not `replace`, a file that appeared at `path`
    meanwhile (another run, a user's save) stays, and OutputExistsError says so."""
    tmp = temporary_name(path)
    try:
        # os.open with 0o666 lets the umask decide permissions, as a plain open() would.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
        with os.fdopen(fd, "wb") as f:
            if callable(data):
                data(f)
            else:
                f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if replace:
            os.replace(tmp, path)
        else:
            try:
                _rename_new(tmp, path)
            except FileExistsError as e:
                raise OutputExistsError("appeared while it was upscaled; not replaced",
                                        path) from e
    except OSError as e:
        raise MediaError(f"cannot write: {e.strerror or e}", path) from e
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)  # gone already after a successful rename


def _rename_new(tmp: Path, path: Path) -> None:
    """Rename `tmp` to `path` where nothing is there yet, in one step (FileExistsError
    otherwise): a hard link fails on an existing name where a rename would replace it.
    Windows' rename never replaces. A file system without hard links (FAT, some network
    shares) gets a look first, which leaves a moment for a race."""
    if os.name == "nt":
        os.rename(tmp, path)
        return
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise
    except OSError:
        if path.exists():
            raise FileExistsError(path) from None
        os.replace(tmp, path)
    # else: linked; the temporary name goes in atomic_write's `finally`


def remove_unfinished(outputs: Iterable[Path]) -> int:
    """Delete the temporary files of `outputs` that a run stopped mid-write left (killed, or
    the machine gone down): a folder job writes several pictures at once, each up to tens of MB,
    and nothing else would ever remove them. Called before those outputs are written again;
    one look at each folder. Returns how many were removed."""
    names: dict[Path, set[str]] = {}
    for out in outputs:
        names.setdefault(out.parent, set()).add(_temporary_part(out.name))
    removed = 0
    for folder, wanted in names.items():
        with contextlib.suppress(OSError), os.scandir(folder) as entries:
            for entry in entries:
                found = _TEMPORARY.fullmatch(entry.name)
                if found and found["name"] in wanted and entry.is_file(follow_symlinks=False):
                    with contextlib.suppress(OSError):
                        os.unlink(entry.path)
                        removed += 1
    return removed
