"""A TIFF encoder for what Pillow cannot write: 16-bit colour, and pages of their own sizes,
depths and profiles in one file (a multi-page TIFF's, upscaled).

It takes (H, W, C) uint8 or uint16 pixels, C = 1 to 4, a page each, and writes them into a
file as they come (TiffWriter); 16-bit PNG is written by png.py.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import BinaryIO

import numpy as np


@dataclass(frozen=True, eq=False)  # arrays have no single truth value
class TiffPage:
    """One page of a TIFF we write: (H, W, C) uint8 or uint16 pixels, C = 1 to 4, and what is
    carried with them."""

    pixels: np.ndarray
    icc: bytes | None = None
    dpi: tuple[float, float] | None = None
    xmp: bytes | None = None
    tags: Mapping[int, bytes] = field(default_factory=dict)  # ASCII ones: artist, copyright


class TiffWriter:
    """A little-endian TIFF written to `out` a page at a time, each 8 or 16 bits, deflate with
    horizontal predictor, unassociated alpha: a document of many pages is never whole in
    memory, upscaled.

    Each page's directory comes before its pixel data, so a cut-off file reads as truncated
    rather than as no image at all; the directory before it is pointed at it once it is
    written (`out` must be seekable).
    """

    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self._start = out.tell()
        out.write(b"II*\0" + struct.pack("<I", 8))
        self._pointer = 4  # where the offset of the next page's directory goes
        self._at = 8

    def add(self, page: TiffPage) -> None:
        strips, rows_per_strip = _strips(page.pixels)
        counts = [len(s) for s in strips]
        placeholder = _entries(page, [0] * len(strips), counts, rows_per_strip)
        # Its length does not depend on the offsets.
        data_start = self._at + len(_tiff_directory(placeholder, self._at))
        offsets = [data_start + sum(counts[:i]) for i in range(len(strips))]
        end = data_start + sum(counts)
        pad = end & 1  # a directory starts on a word boundary
        if end + pad >= 1 << 32:
            raise ValueError("a TIFF holds 4 GiB at most (its offsets are 32 bits), and these "
                             "pages come to more; write fewer to a file")
        self._out.seek(self._start + self._pointer)
        self._out.write(struct.pack("<I", self._at))
        self._out.seek(self._start + self._at)
        self._out.write(_tiff_directory(_entries(page, offsets, counts, rows_per_strip),
                                        self._at))
        for strip in strips:
            self._out.write(strip)
        self._out.write(b"\0" * pad)
        self._pointer = self._at + 2 + 12 * len(placeholder)
        self._at = end + pad


def _strips(pixels: np.ndarray) -> tuple[list[bytes], int]:
    """`pixels` differenced along rows and deflated, in strips of about 256 KiB."""
    h, w, c = pixels.shape
    rows_per_strip = max(1, (1 << 18) // (w * c * pixels.itemsize))
    strips = []
    for start in range(0, h, rows_per_strip):
        band = pixels[start:start + rows_per_strip]
        diff = band.copy()
        diff[:, 1:] = band[:, 1:] - band[:, :-1]  # unsigned wraps, as the predictor expects
        strips.append(zlib.compress(diff.astype(f"<u{pixels.itemsize}").tobytes(), 6))
    return strips, rows_per_strip


def _entries(page: TiffPage, offsets: list[int], counts: list[int], rows_per_strip: int
             ) -> list[tuple[int, int, int, bytes]]:
    h, w, c = page.pixels.shape
    bits = 8 * page.pixels.itemsize
    byte, ascii_, short, long_, rational, undefined = 1, 2, 3, 4, 5, 7
    n = len(offsets)
    entries: list[tuple[int, int, int, bytes]] = [
        (256, long_, 1, struct.pack("<I", w)),
        (257, long_, 1, struct.pack("<I", h)),
        (258, short, c, struct.pack(f"<{c}H", *[bits] * c)),
        (259, short, 1, struct.pack("<H", 8)),  # Adobe deflate
        (262, short, 1, struct.pack("<H", 1 if c in (1, 2) else 2)),
        (273, long_, n, struct.pack(f"<{n}I", *offsets)),
        (277, short, 1, struct.pack("<H", c)),
        (278, long_, 1, struct.pack("<I", rows_per_strip)),
        (279, long_, n, struct.pack(f"<{n}I", *counts)),
        (284, short, 1, struct.pack("<H", 1)),
        (317, short, 1, struct.pack("<H", 2)),  # horizontal differencing
    ]
    if page.dpi:
        entries += [(282, rational, 1, struct.pack("<II", round(page.dpi[0] * 1000), 1000)),
                    (283, rational, 1, struct.pack("<II", round(page.dpi[1] * 1000), 1000)),
                    (296, short, 1, struct.pack("<H", 2))]
    if c in (2, 4):
        entries.append((338, short, 1, struct.pack("<H", 2)))  # unassociated alpha
    for tag, text in page.tags.items():
        value = text + b"\0"
        entries.append((tag, ascii_, len(value), value))
    if page.xmp:
        entries.append((700, byte, len(page.xmp), page.xmp))
    if page.icc:
        entries.append((34675, undefined, len(page.icc), page.icc))
    return sorted(entries)


def _tiff_directory(entries: list[tuple[int, int, int, bytes]], at: int) -> bytes:
    """One IFD at offset `at`, the last one (TiffWriter points it at the next), followed by
    the values too long to sit in their entries."""
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
