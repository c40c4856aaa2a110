"""PNG, written by us band by band: 16-bit pictures, and large 8-bit ones.

Pillow has no 16-bit colour modes to write from, and for 8-bit it needs the whole picture in
its own copy (4 bytes a pixel: 384 MB for a 12000x8000 RGB output, on top of ours). This
encoder reads the pixels a band of rows at a time, from any view (the upscaled frame is a view
of the padded canvas), and streams the compressed rows to the file: its memory is a band's.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence
from typing import BinaryIO

import numpy as np

_BAND_ROWS = 256  # bands bound the memory of the filter's int16 temporaries
_COLOUR_TYPES = {1: 0, 2: 4, 3: 2, 4: 6}  # gray, gray+alpha, RGB, RGBA
_IDAT_BYTES = 1 << 20  # compressed data is written in chunks of about this size


XMP_KEYWORD = "XML:com.adobe.xmp"  # the iTXt chunk PNG keeps an XMP packet in


def text_chunks(entries: Sequence[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    """(chunk type, body) for each (keyword, text): tEXt where both are Latin-1, iTXt (UTF-8)
    where the text is not, and for XMP, which must be iTXt. A keyword PNG cannot hold (not
    Latin-1, or not 1-79 bytes) is left out."""
    chunks = []
    for keyword, text in entries:
        key = _latin_1(keyword)
        if key is None or not 1 <= len(key) <= 79:
            continue
        latin = None if keyword == XMP_KEYWORD else _latin_1(text)
        if latin is not None:
            chunks.append((b"tEXt", key + b"\0" + latin))
        else:  # no compression, no language tag, no translated keyword
            chunks.append((b"iTXt", key + b"\0\0\0\0\0" + text.encode("utf-8")))
    return chunks


def _latin_1(text: str) -> bytes | None:
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:
        return None


COLOUR_CHUNKS = (b"cICP", b"cHRM", b"gAMA", b"sRGB")


def colour_chunks(data: bytes) -> tuple[tuple[bytes, bytes], ...]:
    """The colour chunks (COLOUR_CHUNKS) of the PNG file `data`, (type, body) as stored; they
    come before its first IDAT."""
    found = []
    at = 8
    while at + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[at:at + 8])
        if kind == b"IDAT":
            break
        if kind in COLOUR_CHUNKS:
            found.append((kind, data[at + 8:at + 8 + length]))
        at += 12 + length
    return tuple(found)


def write_png(pixels: np.ndarray, out: BinaryIO, icc: bytes | None = None,
              dpi: tuple[float, float] | None = None, exif: bytes | None = None,
              text: Sequence[tuple[str, str]] = (),
              colour: Sequence[tuple[bytes, bytes]] = ()) -> None:
    """Write (H, W, C) uint8 or uint16 `pixels`, C = 1 to 4, to `out` as a PNG, with `text`
    as text chunks (text_chunks) and `colour` as colour chunks (colour_chunks)."""
    h, w, c = pixels.shape
    depth = 16 if pixels.dtype == np.uint16 else 8
    out.write(b"\x89PNG\r\n\x1a\n")
    out.write(_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, _COLOUR_TYPES[c], 0, 0, 0)))
    for kind, body in colour:
        out.write(_chunk(kind, body))
    if icc:
        out.write(_chunk(b"iCCP", b"ICC Profile\x00\x00" + zlib.compress(icc)))
    if dpi:
        ppm = [max(1, round(d / 0.0254)) for d in dpi]
        out.write(_chunk(b"pHYs", struct.pack(">IIB", ppm[0], ppm[1], 1)))
    if exif:
        out.write(_chunk(b"eXIf", exif.removeprefix(b"Exif\x00\x00")))
    for kind, body in text_chunks(text):
        out.write(_chunk(kind, body))
    bpp = c * depth // 8
    deflate = zlib.compressobj(6)
    pending: list[bytes] = []
    previous = np.zeros((1, w * bpp), np.uint8)
    for start in range(0, h, _BAND_ROWS):
        band = pixels[start:start + _BAND_ROWS]
        if depth == 16:
            band = band.astype(">u2")
        rows = np.ascontiguousarray(band).view(np.uint8).reshape(len(band), w * bpp)
        up = np.concatenate([previous, rows[:-1]])
        marked = np.empty((len(rows), 1 + w * bpp), np.uint8)
        marked[:, 0] = 4  # Paeth, on every row
        marked[:, 1:] = _paeth_filter(rows, up, bpp)
        pending.append(deflate.compress(marked.tobytes()))
        previous = rows[-1:]
        if sum(map(len, pending)) >= _IDAT_BYTES:
            out.write(_chunk(b"IDAT", b"".join(pending)))
            pending = []
    pending.append(deflate.flush())
    out.write(_chunk(b"IDAT", b"".join(pending)))
    out.write(_chunk(b"IEND", b""))


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


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
