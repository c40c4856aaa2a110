"""The text a picture carries besides its pixels and profile, and where each format keeps it.

What travels: a PNG's text chunks (a Stable Diffusion picture's generation parameters,
comments, PNG's own XMP), an XMP packet (JPEG, WebP, TIFF), a JPEG's or GIF's comment, and a
TIFF's descriptive tags (artist, copyright...), which EXIF's first directory shares. The reader
gathers them into the `Image`; the writer asks here what the output's format takes of them.
"""

from __future__ import annotations

import struct

import PIL.Image
from PIL import PngImagePlugin

from upscaler.image_data import DESCRIPTIVE_TAGS, Image
from upscaler.media.images.png import XMP_KEYWORD, text_chunks

_TIFF_XMP = 700  # the tag TIFF keeps an XMP packet in


def as_bytes(value: object) -> bytes | None:
    """A metadata value Pillow gives as bytes or text, as bytes; None for none."""
    if isinstance(value, str):
        return value.encode("utf-8") or None
    return bytes(value) if isinstance(value, (bytes, bytearray)) and value else None


def tiff_description(im: PIL.Image.Image) -> bytes | None:
    """The TIFF page's descriptive tags (DESCRIPTIVE_TAGS) as an EXIF block."""
    exif = PIL.Image.Exif()
    for tag in DESCRIPTIVE_TAGS:
        value = im.tag_v2.get(tag)  # type: ignore[attr-defined]
        if isinstance(value, str) and value.strip("\0 "):
            # Pillow reads the bytes as Latin-1 and would write text back as ASCII, '?' for
            # the rest: the bytes as they were (UTF-8, often) are kept instead.
            exif[tag] = value.encode("latin-1", "replace")
    return exif.tobytes() if len(exif) else None


def png_text(image: Image) -> list[tuple[str, str]]:
    """The text chunks a PNG of `image` gets: its own, and the XMP packet and comment of
    another format's source under PNG's keywords for them."""
    entries = list(image.text)
    keywords = {keyword for keyword, _ in entries}
    if image.xmp and XMP_KEYWORD not in keywords:
        entries.append((XMP_KEYWORD, image.xmp.decode("utf-8", "replace")))
    if image.comment and "Comment" not in keywords:
        entries.append(("Comment", image.comment.decode("utf-8", "replace")))
    return entries


def descriptive_tags(exif: bytes | None) -> dict[int, bytes]:
    """The descriptive tags (DESCRIPTIVE_TAGS) of an EXIF block, for a TIFF's own, as the
    bytes they were stored as (Pillow reads them as Latin-1: UTF-8 text comes back whole)."""
    if not exif:
        return {}
    parsed = PIL.Image.Exif()
    try:
        parsed.load(exif)
    except (OSError, SyntaxError, ValueError, struct.error):
        return {}
    return {tag: value.encode("latin-1", "replace") for tag in DESCRIPTIVE_TAGS
            if isinstance(value := parsed.get(tag), str) and value}


def xmp_of(image: Image) -> bytes | None:
    """`image`'s XMP packet, from a PNG's text chunk where it came from a PNG."""
    if image.xmp:
        return image.xmp
    packet = dict(image.text).get(XMP_KEYWORD)
    return packet.encode("utf-8") if packet else None


def text_options(fmt: str, image: Image) -> dict[str, object]:
    """Pillow's save options that carry `image`'s text (PNG text chunks, XMP, a comment) in
    `fmt`, where the format has a place for it, and a PNG's colour chunks into a PNG."""
    opts: dict[str, object] = {}
    xmp = xmp_of(image)
    if fmt == "PNG":
        info = PngImagePlugin.PngInfo()
        for kind, body in (*image.png_colour, *text_chunks(png_text(image))):
            info.add(kind, body)
        opts["pnginfo"] = info
    elif fmt in ("JPEG", "WEBP", "AVIF") and xmp:
        opts["xmp"] = xmp
    elif fmt == "TIFF":
        tags: dict[int, object] = dict(descriptive_tags(image.exif))
        if xmp:
            tags[_TIFF_XMP] = xmp
        if tags:
            opts["tiffinfo"] = tags
    comment = image.comment or dict(image.text).get("Comment", "").encode("utf-8")
    if fmt in ("JPEG", "GIF") and comment:
        opts["comment"] = comment
    return opts
