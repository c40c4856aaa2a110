"""What a still picture is once read: its pixels and the metadata needed to write it back.

An `Image` keeps the pixels exactly as stored (8 or 16 bits; gray, gray+alpha, RGB or RGBA, in
RGB order) and what is needed to write them back faithfully: the ICC profile, the DPI, the EXIF
block and a hint of the source's compression quality. The format tables here are shared by the
reader (images_read.py) and the writer (images_write.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".png", ".jpg", ".jpeg", ".jpe", ".jfif", ".webp", ".tif", ".tiff", ".bmp"}
)

FORMAT_BY_EXTENSION = {
    ".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".jpe": "JPEG", ".jfif": "JPEG",
    ".webp": "WEBP", ".tif": "TIFF", ".tiff": "TIFF", ".bmp": "BMP",
}
FORMAT_ALIASES = {"JPG": "JPEG", "TIF": "TIFF", "MPO": "JPEG"}
WRITABLE_FORMATS: tuple[str, ...] = ("PNG", "JPEG", "WEBP", "TIFF", "BMP")
EXIF_FORMATS = frozenset({"PNG", "JPEG", "WEBP"})


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


def icc_space(icc: bytes) -> str:
    """The data colour space an ICC profile declares: 'RGB', 'GRAY', 'CMYK', ..."""
    return icc[16:20].decode("ascii", "replace").strip() if len(icc) >= 20 else ""
