"""16-bit PNG and TIFF encoders, for the layouts Pillow cannot write (16-bit colour).

They take (H, W, C) uint16 pixels, C = 1 to 4, and return the file's bytes.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png16(
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


def tiff16(
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
