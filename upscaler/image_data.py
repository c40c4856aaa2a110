"""What a still picture is once read: its pixels and the metadata needed to write it back.

An `Image` keeps the pixels exactly as stored (8 or 16 bits; gray, gray+alpha, RGB or RGBA, in
RGB order) and what is needed to write them back faithfully: the ICC profile, the DPI, the EXIF
block and a hint of the source's compression quality. An animated picture carries its other
frames and its timing in an `Animation`. The format tables here are shared by the
reader (images_read.py) and the writer (images_write.py).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import features

IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".png", ".apng", ".jpg", ".jpeg", ".jpe", ".jfif", ".webp", ".tif", ".tiff", ".bmp", ".gif",
     ".avif"}
)

FORMAT_BY_EXTENSION = {
    ".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".jpe": "JPEG", ".jfif": "JPEG",
    ".webp": "WEBP", ".tif": "TIFF", ".tiff": "TIFF", ".bmp": "BMP", ".gif": "GIF",
    ".apng": "PNG", ".avif": "AVIF",
}
FORMAT_ALIASES = {"JPG": "JPEG", "TIF": "TIFF", "MPO": "JPEG", "APNG": "PNG"}
WRITABLE_FORMATS: tuple[str, ...] = ("PNG", "JPEG", "WEBP", "TIFF", "BMP", "GIF", "AVIF")
ANIMATED_FORMATS = frozenset({"PNG", "WEBP", "GIF", "AVIF"})
EXIF_FORMATS = frozenset({"PNG", "JPEG", "WEBP", "AVIF"})
# The tags of a TIFF that describe the picture rather than its layout (description, make,
# model, software, date, artist, copyright). EXIF's first directory has the same ones, so they
# travel as EXIF to the formats that hold it, and back into a TIFF's own tags.
DESCRIPTIVE_TAGS = (270, 271, 272, 305, 306, 315, 33432)


@dataclass(frozen=True, eq=False)  # arrays have no single truth value
class Animation:
    """The frames after the first of an animated picture, and how they play.

    `frames` are whole pictures (any disposal and blending of the file already applied), each
    like `Image.pixels`. `durations` holds one display time in milliseconds per frame, the
    first frame's included. `plays`: how many times it plays, 0 for forever; the formats say it
    differently (a GIF's loop count is the plays after the first, and a GIF without one plays
    once; APNG and WebP count every play), so it is read and written as each format says it.
    """

    frames: tuple[np.ndarray, ...]
    durations: tuple[int, ...]
    plays: int = 0

    def __post_init__(self) -> None:
        if len(self.durations) != len(self.frames) + 1:
            raise ValueError(f"{len(self.durations)} durations for {len(self.frames) + 1} frames")


@dataclass(frozen=True, eq=False)  # arrays have no single truth value
class Image:
    """A still picture and the metadata needed to write it back.

    `pixels` is (H, W, C) uint8 or uint16 with C = 1 (gray), 2 (gray+alpha), 3 (RGB) or
    4 (RGBA), upright, in RGB order. `exif` is a raw EXIF block as Pillow writes it (starting
    with b"Exif\\0\\0"), without the orientation tag. `quality` is the estimated JPEG quality of
    the source; `lossless` says whether the source was stored without loss. `animation`,
    for an animated picture, holds the frames after `pixels` and their timing. `text` is a
    PNG's text chunks, (keyword, text) in order (a Stable Diffusion picture's generation
    parameters, a comment, PNG's own XMP); `xmp` an XMP packet of another format (JPEG, WebP,
    TIFF), `comment` a JPEG's or GIF's comment. `pages` holds the pages after this one of a
    TIFF of several, each a picture of its own (size, depth, channels, profile); a TIFF read
    from a file decodes each as it is asked for (read.TiffPages).
    `png_colour` holds a PNG's colour chunks (gAMA, cHRM, sRGB, cICP) as stored, (type, body):
    how its values are to be shown where it has no ICC profile, for a PNG output.
    """

    pixels: np.ndarray
    icc_profile: bytes | None = None
    source_format: str | None = None
    dpi: tuple[float, float] | None = None
    exif: bytes | None = None
    quality: int | None = None
    lossless: bool = True
    animation: Animation | None = None
    text: tuple[tuple[str, str], ...] = ()
    xmp: bytes | None = None
    comment: bytes | None = None
    pages: Sequence[Image] = ()
    png_colour: tuple[tuple[bytes, bytes], ...] = ()

    def __post_init__(self) -> None:
        for p in self.frames:
            if p.ndim != 3 or p.shape[2] not in (1, 2, 3, 4) or p.dtype not in (np.uint8,
                                                                                 np.uint16):
                raise ValueError(f"pixels must be (H, W, 1-4) uint8 or uint16, not {p.shape} "
                                 f"{p.dtype}")
            if p.shape != self.pixels.shape or p.dtype != self.pixels.dtype:
                raise ValueError(f"every frame must be {self.pixels.shape} {self.pixels.dtype}, "
                                 f"not {p.shape} {p.dtype}")

    @property
    def frames(self) -> tuple[np.ndarray, ...]:
        """Every frame's pixels, in order; a still picture has one."""
        return (self.pixels, *(self.animation.frames if self.animation else ()))

    def with_frames(self, frames: Sequence[np.ndarray]) -> Image:
        """This picture with new pixels for each of its frames, everything else kept."""
        if len(frames) != len(self.frames):
            raise ValueError(f"{len(frames)} frames given for {len(self.frames)}")
        animation = self.animation and dataclasses.replace(self.animation,
                                                           frames=tuple(frames[1:]))
        return dataclasses.replace(self, pixels=frames[0], animation=animation)

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


def avif_supported() -> bool:
    """Whether this Pillow reads and writes AVIF (11.3 and newer, built with libavif)."""
    try:
        return bool(features.check("avif"))
    except (ValueError, KeyError):  # a Pillow older than its AVIF plugin
        return False
