"""A 16-bit TIFF encoder, for the layouts Pillow cannot write (16-bit colour).

It takes (H, W, C) uint16 pixels, C = 1 to 4, and returns the file's bytes; 16-bit PNG is
written by png.py.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np


def tiff16(
    pixels: np.ndarray, icc: bytes | None, dpi: tuple[float, float] | None, exif: bytes | None,
    xmp: bytes | None = None,
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
        if xmp:
            entries.append((700, 1, len(xmp), xmp))  # BYTE
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
