"""Image reading and writing on real files, and the channel conversions around the model."""

from __future__ import annotations

import os
import re
import struct
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import PIL.Image
import pytest
from conftest import INSTANT_MODEL, psnr
from draw import draw_cel
from PIL import ImageCms, ImageOps

from upscaler import Upscaler
from upscaler.channels import from_model_output, resize_to_scale, settle_alpha, to_model_input
from upscaler.cli import main
from upscaler.errors import FormatError, MediaError
from upscaler.image_data import icc_space
from upscaler.media.images import Image, is_image_path, read_image, write_image
from upscaler.media.images import write as images_write
from upscaler.pixels import from_planes, to_planes

SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def _random(shape: tuple[int, ...], dtype: type = np.uint8, seed: int = 0) -> np.ndarray:
    peak = np.iinfo(dtype).max
    return np.random.default_rng(seed).integers(0, peak + 1, shape).astype(dtype)


def _pil_array(path: Path) -> np.ndarray:
    with PIL.Image.open(path) as im:
        return np.asarray(im).copy()


# --- round trips --------------------------------------------------------------------------------


@pytest.mark.parametrize("ext", [".png", ".tif", ".tiff", ".bmp", ".webp"])
def test_lossless_formats_round_trip_exactly(tmp_path: Path, cel: np.ndarray, ext: str) -> None:
    path = write_image(Image(cel), tmp_path / f"cel{ext}")
    back = read_image(path)
    assert back.pixels.dtype == np.uint8
    np.testing.assert_array_equal(back.pixels, cel)
    assert back.lossless


def test_jpeg_round_trips_closely_and_reports_its_quality(tmp_path: Path, cel: np.ndarray) -> None:
    back = read_image(write_image(Image(cel), tmp_path / "cel.jpg"))
    assert back.source_format == "JPEG" and not back.lossless
    assert back.quality == 95
    assert psnr(back.pixels, cel, peak=255) > 38


def test_jpeg_quality_is_estimated_and_never_lowered(tmp_path: Path, cel: np.ndarray) -> None:
    src = tmp_path / "q70.jpg"
    PIL.Image.fromarray(cel).save(src, quality=70)
    image = read_image(src)
    assert image.quality == 70
    assert read_image(write_image(image, tmp_path / "default.jpg")).quality == 95
    assert read_image(write_image(image, tmp_path / "asked.jpg", quality=60)).quality == 60
    PIL.Image.fromarray(cel).save(tmp_path / "q98.jpg", quality=98)
    best = read_image(tmp_path / "q98.jpg")
    assert read_image(write_image(best, tmp_path / "kept.jpg")).quality == 98


def test_webp_is_lossy_only_when_asked_or_the_source_was(tmp_path: Path, cel: np.ndarray) -> None:
    lossy = read_image(write_image(Image(cel), tmp_path / "q.webp", quality=80))
    assert not lossy.lossless
    assert 30 < psnr(lossy.pixels, cel, peak=255) < float("inf")
    from_jpeg = read_image(write_image(Image(cel), tmp_path / "cel.jpg"))
    assert not read_image(write_image(from_jpeg, tmp_path / "j.webp")).lossless


def test_rgba_png_and_webp_keep_alpha_and_hidden_colour(tmp_path: Path) -> None:
    px = _random((24, 40, 4))
    px[:4, :, 3] = 0  # fully transparent rows whose colour must survive too
    for ext in (".png", ".webp", ".tiff"):
        back = read_image(write_image(Image(px), tmp_path / f"a{ext}"))
        np.testing.assert_array_equal(back.pixels, px, err_msg=ext)


@pytest.mark.parametrize("ext", [".png", ".tiff"])
@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_16bit_stays_16bit(tmp_path: Path, ext: str, channels: int) -> None:
    px = _random((20, 30, channels), np.uint16, seed=channels)
    back = read_image(write_image(Image(px, dpi=(300.0, 300.0)), tmp_path / f"deep{ext}"))
    assert back.pixels.dtype == np.uint16
    assert back.pixels.max() > 255
    assert back.dpi == (300.0, 300.0)
    if channels == 2 and ext == ".tiff":  # documented: written as RGBA, values intact
        expected = np.concatenate([px[..., :1]] * 3 + [px[..., 1:]], axis=2)
        np.testing.assert_array_equal(back.pixels, expected)
    else:
        np.testing.assert_array_equal(back.pixels, px)


@pytest.mark.parametrize("ext", [".png", ".tiff"])
def test_16bit_files_from_other_writers_read_exactly(tmp_path: Path, ext: str) -> None:
    rgb = _random((16, 12, 3), np.uint16)
    cv2.imwrite(str(tmp_path / f"rgb{ext}"), rgb[..., ::-1])
    np.testing.assert_array_equal(read_image(tmp_path / f"rgb{ext}").pixels, rgb)
    rgba = _random((16, 12, 4), np.uint16, seed=1)
    cv2.imwrite(str(tmp_path / f"rgba{ext}"), rgba[..., [2, 1, 0, 3]])
    np.testing.assert_array_equal(read_image(tmp_path / f"rgba{ext}").pixels, rgba)
    gray = _random((16, 12), np.uint16, seed=2)
    PIL.Image.fromarray(gray).save(tmp_path / f"gray{ext}")
    back = read_image(tmp_path / f"gray{ext}")
    assert back.pixels.shape == (16, 12, 1) and back.pixels.dtype == np.uint16
    np.testing.assert_array_equal(back.pixels[..., 0], gray)


@pytest.mark.parametrize("ext", [".png", ".tiff", ".bmp", ".jpg"])
def test_gray_stays_gray(tmp_path: Path, ext: str) -> None:
    gray = np.tile(np.arange(0, 256, 4, dtype=np.uint8), (16, 1))
    path = tmp_path / f"g{ext}"
    PIL.Image.fromarray(gray).save(path)
    back = read_image(path)
    assert back.pixels.shape == (16, 64, 1) and back.is_gray
    again = read_image(write_image(back, tmp_path / f"again{ext}"))
    assert again.pixels.shape == (16, 64, 1)
    if ext != ".jpg":
        np.testing.assert_array_equal(again.pixels[..., 0], gray)


def test_palette_png_with_transparency_becomes_rgba(tmp_path: Path) -> None:
    idx = np.array([[0, 1, 2, 1]] * 3, np.uint8)
    im = PIL.Image.new("P", (4, 3))
    im.putdata(idx.ravel().tolist())
    im.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * 759)
    im.save(tmp_path / "p.png", transparency=bytes([255, 128, 0]))
    px = read_image(tmp_path / "p.png").pixels
    assert px.shape == (3, 4, 4)
    np.testing.assert_array_equal(px[0, 0], [255, 0, 0, 255])
    np.testing.assert_array_equal(px[0, 1], [0, 255, 0, 128])
    np.testing.assert_array_equal(px[0, 2], [0, 0, 255, 0])
    im.save(tmp_path / "opaque.png")
    assert read_image(tmp_path / "opaque.png").pixels.shape == (3, 4, 3)


def test_16bit_grey_with_a_colour_key_keeps_its_transparency(tmp_path: Path) -> None:
    """A 16-bit grey PNG whose tRNS names the grey that is transparent came out opaque (8-bit
    grey and 16-bit RGB with a key kept theirs)."""
    grey = (np.random.default_rng(11).integers(0, 4, (16, 24)) * 1000).astype(np.uint16)
    PIL.Image.fromarray(grey).save(tmp_path / "key.png", transparency=1000)
    out = tmp_path / "out.png"
    assert main([str(tmp_path / "key.png"), "-o", str(out), *INSTANT_MODEL, "--quiet"]) == 0
    written = cv2.imread(str(out), cv2.IMREAD_UNCHANGED)[::4, ::4]  # grey + alpha, widened
    assert written.dtype == np.uint16
    np.testing.assert_array_equal(written[..., 0], grey)
    np.testing.assert_array_equal(written[..., 3] == 0, grey == 1000)


def test_lab_tiff_becomes_rgb_without_its_lab_profile(tmp_path: Path) -> None:
    """"LAB" has an A in it: a Lab TIFF came out RGBA, still carrying its Lab profile on RGB
    pixels, which a colour-managed viewer shows wrongly."""
    rgb = _random((16, 24, 3), seed=1)
    PIL.Image.fromarray(rgb).convert("LAB").save(tmp_path / "lab.tif")
    image = read_image(tmp_path / "lab.tif")
    assert image.pixels.shape == (16, 24, 3)
    assert image.icc_profile is None or icc_space(image.icc_profile) == "RGB"
    assert psnr(image.pixels, rgb, 255) > 30  # Lab's rounding


def test_exif_pixel_size_of_the_stored_picture_is_not_kept(tmp_path: Path) -> None:
    """The Exif IFD's PixelXDimension and PixelYDimension said 24x16 of a 64x96 output."""
    exif = PIL.Image.Exif()
    exif[0x0112] = 6
    details = exif.get_ifd(0x8769)
    details.update({0xA002: 24, 0xA003: 16, 0x9003: "2020:01:01 00:00:00"})
    PIL.Image.fromarray(np.zeros((16, 24, 3), np.uint8)).save(tmp_path / "cam.jpg", exif=exif)
    out = tmp_path / "out.jpg"
    assert main([str(tmp_path / "cam.jpg"), "-o", str(out), *INSTANT_MODEL, "--quiet"]) == 0
    with PIL.Image.open(out) as im:
        assert im.size == (64, 96)
        assert dict(im.getexif().get_ifd(0x8769)) == {0x9003: "2020:01:01 00:00:00"}
    # No Exif IFD is added where there was none, nor left with no entries.
    for name, sizes_only in (("make", False), ("sizes", True)):
        exif = PIL.Image.Exif()
        exif[0x010F] = "Cam"
        if sizes_only:
            exif.get_ifd(0x8769).update({0xA002: 24, 0xA003: 16})
        PIL.Image.fromarray(np.zeros((16, 24, 3), np.uint8)).save(tmp_path / f"{name}.jpg",
                                                                    exif=exif)
        out = tmp_path / f"{name}_out.jpg"
        assert main([str(tmp_path / f"{name}.jpg"), "-o", str(out), *INSTANT_MODEL,
                     "--quiet"]) == 0
        with PIL.Image.open(out) as im:
            assert dict(im.getexif()) == {0x010F: "Cam"}


def test_a_picture_over_pillows_warning_size_gets_one_line(tmp_path: Path) -> None:
    """Pillow warns of a decompression bomb from 89 megapixels: two lines of Python's went to
    the terminal before the job's own (in a folder job, through its bar)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    src = tmp_path / "huge.png"  # 10000x10000 declared, its data cut short
    src.write_bytes(b"\x89PNG\r\n\x1a\n"
                    + chunk(b"IHDR", struct.pack(">IIBBBBB", 10000, 10000, 8, 0, 0, 0, 0))
                    + chunk(b"IDAT", zlib.compress(b"\0" * 1000)) + chunk(b"IEND", b""))
    done = subprocess.run([sys.executable, "-m", "upscaler", str(src), "-o",
                           str(tmp_path / "out.png"), *INSTANT_MODEL, "--quiet"],
                          capture_output=True, text=True, check=False)
    assert (done.returncode, done.stderr) == (
        5, f"upscale: error: {src}: damaged or truncated image: image file is truncated "
           "(0 bytes not processed)\n")


def test_cmyk_jpeg_becomes_rgb(tmp_path: Path) -> None:
    PIL.Image.new("CMYK", (6, 4), (0, 255, 255, 0)).save(tmp_path / "c.jpg", quality=100)
    image = read_image(tmp_path / "c.jpg")
    assert image.pixels.shape == (4, 6, 3) and image.icc_profile is None
    assert image.pixels[..., 0].min() > 240 and image.pixels[..., 1:].max() < 15


def test_gray_to_webp_is_written_as_rgb(tmp_path: Path) -> None:
    gray = _random((8, 8, 2))
    back = read_image(write_image(Image(gray), tmp_path / "g.webp"))
    expected = np.concatenate([gray[..., :1]] * 3 + [gray[..., 1:]], axis=2)
    np.testing.assert_array_equal(back.pixels, expected)


def test_exif_orientation_6_jpeg_is_read_upright(tmp_path: Path) -> None:
    px = np.zeros((32, 48, 3), np.uint8)
    px[:, :24] = (250, 20, 20)  # left half red: after a clockwise turn it is the top half
    im = PIL.Image.fromarray(px)
    exif = im.getexif()
    exif[0x0112] = 6
    exif[0x010F] = "TestCam"
    im.save(tmp_path / "turned.jpg", exif=exif, quality=95)
    image = read_image(tmp_path / "turned.jpg")
    assert image.pixels.shape == (48, 32, 3)
    assert image.pixels[:20, :, 0].min() > 200 and image.pixels[28:, :, 0].max() < 60
    with PIL.Image.open(tmp_path / "turned.jpg") as ref:
        np.testing.assert_array_equal(image.pixels, np.asarray(ImageOps.exif_transpose(ref)))
    out = write_image(image, tmp_path / "upright.png")
    with PIL.Image.open(out) as written:
        tags = written.getexif()
        assert 0x0112 not in tags and tags[0x010F] == "TestCam"
        assert written.size == (32, 48)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_orientation_matches_pillow(tmp_path: Path, orientation: int) -> None:
    im = PIL.Image.fromarray(_random((5, 7, 3)))
    exif = im.getexif()
    exif[0x0112] = orientation
    im.save(tmp_path / "o.png", exif=exif)
    with PIL.Image.open(tmp_path / "o.png") as ref:
        expected = np.asarray(ImageOps.exif_transpose(ref))
    np.testing.assert_array_equal(read_image(tmp_path / "o.png").pixels, expected)


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_large_png_is_written_band_by_band_as_pillow_reads_it(
        tmp_path: Path, channels: int, monkeypatch: pytest.MonkeyPatch) -> None:
    # From BANDED_PNG_BYTES up, 8-bit PNGs stream through png.py; here every size does. The
    # pixels are a view of a larger canvas, as an upscaled frame is (never copied whole).
    monkeypatch.setattr(images_write, "BANDED_PNG_BYTES", 0)
    canvas = _random((700, 530, channels), seed=channels)
    canvas[:300, :200] = 90  # flat areas, where the filter matters
    view = canvas[5:-5, 7:-3]
    assert not view.flags.c_contiguous
    image = Image(view, icc_profile=SRGB if channels > 2 else None, dpi=(300.0, 150.0))
    path = write_image(image, tmp_path / "big.png")
    with PIL.Image.open(path) as im:
        assert im.mode == {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[channels]
        assert im.info.get("icc_profile") == (SRGB if channels > 2 else None)
        assert tuple(round(d) for d in im.info["dpi"]) == (300, 150)
        back = np.asarray(im)
    np.testing.assert_array_equal(back.reshape(view.shape), view)
    np.testing.assert_array_equal(read_image(path).pixels.reshape(view.shape), view)
    # As small as Pillow's own file, within 3% (Paeth on every row against its adaptive choice).
    pillow = tmp_path / "pillow.png"
    PIL.Image.fromarray(np.ascontiguousarray(view.squeeze(2) if channels == 1 else view)).save(
        pillow, compress_level=6)
    assert path.stat().st_size <= 1.03 * pillow.stat().st_size


@pytest.mark.parametrize("src_ext", [".png", ".jpg", ".tiff"])
@pytest.mark.parametrize("dst_ext", [".png", ".webp", ".tiff", ".jpg"])
def test_icc_profile_is_carried(tmp_path: Path, cel: np.ndarray, src_ext: str,
                                dst_ext: str) -> None:
    src = tmp_path / f"src{src_ext}"
    PIL.Image.fromarray(cel).save(src, icc_profile=SRGB)
    image = read_image(src)
    assert image.icc_profile == SRGB
    out = write_image(image, tmp_path / f"dst{dst_ext}")
    with PIL.Image.open(out) as written:
        assert written.info.get("icc_profile") == SRGB


@pytest.mark.parametrize("ext", [".png", ".tiff"])
def test_icc_profile_is_carried_at_16bit(tmp_path: Path, ext: str) -> None:
    px = _random((8, 8, 3), np.uint16)
    back = read_image(write_image(Image(px, icc_profile=SRGB), tmp_path / f"p{ext}"))
    assert back.icc_profile == SRGB


def test_icc_profile_of_the_wrong_colour_space_is_dropped(tmp_path: Path) -> None:
    gray = Image(_random((8, 8, 1)), icc_profile=SRGB)
    assert read_image(write_image(gray, tmp_path / "g.png")).icc_profile is None


def test_bmp_drops_icc_but_keeps_pixels(tmp_path: Path, cel: np.ndarray) -> None:
    back = read_image(write_image(Image(cel, icc_profile=SRGB), tmp_path / "c.bmp"))
    assert back.icc_profile is None
    np.testing.assert_array_equal(back.pixels, cel)


def test_jpeg_drops_opaque_alpha_refuses_transparency_or_flattens(tmp_path: Path) -> None:
    px = np.full((8, 8, 4), 200, np.uint8)
    px[..., 3] = 255
    assert read_image(write_image(Image(px), tmp_path / "opaque.jpg")).pixels.shape == (8, 8, 3)
    px[..., 3] = 0
    with pytest.raises(FormatError, match=r"t\.jpg.*transparency"):
        write_image(Image(px), tmp_path / "t.jpg")
    assert not (tmp_path / "t.jpg").exists()
    flat = read_image(write_image(Image(px), tmp_path / "f.bmp", background=(10, 20, 30)))
    np.testing.assert_array_equal(flat.pixels[0, 0], [10, 20, 30])


def test_16bit_to_8bit_formats_rounds(tmp_path: Path) -> None:
    px = np.array([[[0, 128, 65535]], [[257 * 100 + 128, 257 * 100 + 129, 300]]], np.uint16)
    back = read_image(write_image(Image(px), tmp_path / "d.bmp"))
    assert back.pixels.dtype == np.uint8
    np.testing.assert_array_equal(back.pixels.reshape(-1), [0, 0, 255, 100, 101, 1])


def test_format_argument_overrides_the_extension(tmp_path: Path, cel: np.ndarray) -> None:
    out = write_image(Image(cel), tmp_path / "x.png", fmt="jpg")
    assert read_image(out).source_format == "JPEG"
    with pytest.raises(MediaError, match="'xcf'"):
        write_image(Image(cel), tmp_path / "x.png", fmt="xcf")
    with pytest.raises(MediaError, match="extension"):
        write_image(Image(cel), tmp_path / "x.unknown")


# --- errors -------------------------------------------------------------------------------------


# Pillow warns about the cut-off TIFF directory before failing; the failure is what counts here.
@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")
@pytest.mark.parametrize("ext", [".png", ".jpg", ".webp", ".tiff"])
def test_truncated_file_raises_media_error_naming_it(tmp_path: Path, cel: np.ndarray,
                                                      ext: str) -> None:
    whole = write_image(Image(cel), tmp_path / f"whole{ext}").read_bytes()
    cut = tmp_path / f"cut{ext}"
    cut.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(MediaError, match=re.escape(f"cut{ext}")) as info:
        read_image(cut)
    assert info.value.path == cut


@pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow's own, about what it skips
def test_damaged_files_of_every_kind_give_our_one_line_error(tmp_path: Path) -> None:
    """Cut, zeroed and bit-flipped files of every kind read as a picture or fail with our
    MediaError naming the file, never another exception: Pillow raised TypeError for a cut
    multi-page TIFF, IndexError for a cut GIF, RuntimeError and ZeroDivisionError for damaged
    AVIFs, each a traceback. 30 damaged copies each, seeded (12,000 found nothing more)."""
    import random

    cel = draw_cel(24, 32, seed=1)
    made = tmp_path / "made"
    made.mkdir()
    frames = [PIL.Image.fromarray(draw_cel(24, 32, seed=s)) for s in range(3)]
    frames[0].save(made / "anim.png", save_all=True, append_images=frames[1:], duration=90)
    for ext in (".gif", ".webp", ".avif"):
        frames[0].save(made / f"anim{ext}", save_all=True, append_images=frames[1:],
                       duration=90)
    frames[0].save(made / "pages.tiff", save_all=True, append_images=frames[1:])
    frames[0].save(made / "still.avif", quality=80)
    for ext in (".png", ".jpg", ".webp"):
        write_image(Image(cel), made / f"still{ext}")
    write_image(Image(cel.astype(np.uint16) * 257), made / "deep.png")
    write_image(Image(cel.astype(np.uint16) * 257), made / "deep.tiff")
    rng = random.Random(7)
    for source in sorted(made.iterdir()):
        whole = source.read_bytes()
        for n in range(30):
            data = bytearray(whole)
            how = n % 3
            if how == 0:
                data = data[:rng.randrange(8, len(data))]
            elif how == 1:
                at = rng.randrange(len(data))
                data[at:at + 16] = bytes(len(data[at:at + 16]))
            else:
                for _ in range(rng.randrange(1, 6)):
                    data[rng.randrange(len(data))] = rng.randrange(256)
            damaged = tmp_path / f"damaged{source.suffix}"
            damaged.write_bytes(bytes(data))
            try:
                read_image(damaged)
            except MediaError as e:
                assert e.path == damaged and "\n" not in str(e), (source.name, n, str(e))


@pytest.mark.parametrize("ext", [".png", ".tiff"])
def test_truncated_16bit_file_raises_media_error(tmp_path: Path, ext: str) -> None:
    whole = write_image(Image(_random((64, 64, 3), np.uint16)), tmp_path / f"w{ext}")
    cut = tmp_path / f"cut{ext}"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(MediaError, match=re.escape(f"cut{ext}")):
        read_image(cut)


XMP = ('<?xpacket begin="" id="W5M0MpCehiHzreSzNTczkc9d"?><x:xmpmeta xmlns:x="adobe:ns:meta/">'
       '<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description '
       'dc:creator="作者" xmlns:dc="http://purl.org/dc/elements/1.1/"/></rdf:RDF></x:xmpmeta>'
       '<?xpacket end="w"?>')


def test_text_metadata_is_kept(tmp_path: Path) -> None:
    """A picture's text besides EXIF was dropped: a Stable Diffusion PNG's generation
    parameters, comments, XMP (credits, rights). Each format keeps what it has a place for,
    8-bit and 16-bit, and a PNG output takes a JPEG's XMP and comment under PNG's keywords."""
    from conftest import INSTANT_MODEL
    from PIL import PngImagePlugin

    from upscaler.cli import main

    src = tmp_path / "in"
    src.mkdir()
    cel = PIL.Image.fromarray(draw_cel(24, 32, seed=3))
    text = PngImagePlugin.PngInfo()
    text.add_text("parameters", "1girl, masterpiece\nSteps: 20, Sampler: Euler a")
    text.add_itxt("Comment", "日本語のコメント")
    text.add_itxt("XML:com.adobe.xmp", XMP)
    cel.save(src / "sd.png", pnginfo=text)
    deep = np.asarray(cel).astype(np.uint16) * 257
    PIL.Image.frombytes("I;16", (32, 24), deep[..., 0].tobytes()).save(src / "deep.png",
                                                                      pnginfo=text)
    cel.save(src / "photo.jpg", comment=b"drawn by hand", xmp=XMP.encode())
    cel.save(src / "cel.webp", xmp=XMP.encode(), lossless=True)
    cel.save(src / "cel.tiff", tiffinfo={700: XMP.encode()})
    write_image(Image(deep, xmp=XMP.encode()), src / "deep.tiff")
    cel.save(src / "cel.gif", comment=b"a gif comment")
    out = tmp_path / "out"
    assert main([str(src), "-o", str(out), "-q", *INSTANT_MODEL]) == 0
    assert main([str(src / "photo.jpg"), "-o", str(tmp_path / "photo.png"), "-q",
                 *INSTANT_MODEL]) == 0

    def kept(path: Path) -> tuple[dict[str, str], bytes | None, bytes | None]:
        with PIL.Image.open(path) as im:
            xmp = im.info.get("xmp")
            return (dict(getattr(im, "text", {})), xmp.encode() if isinstance(xmp, str)
                    else xmp, im.info.get("comment"))

    png_text = {"parameters": "1girl, masterpiece\nSteps: 20, Sampler: Euler a",
                "Comment": "日本語のコメント", "XML:com.adobe.xmp": XMP}
    assert kept(out / "sd.png")[0] == png_text
    assert kept(out / "deep.png")[0] == png_text
    assert kept(out / "photo.jpg")[1:] == (XMP.encode(), b"drawn by hand")
    for name in ("cel.webp", "cel.tiff", "deep.tiff"):
        assert kept(out / name)[1] == XMP.encode(), name
    assert kept(out / "cel.gif")[2] == b"a gif comment"
    assert kept(tmp_path / "photo.png")[0] == {"XML:com.adobe.xmp": XMP,
                                               "Comment": "drawn by hand"}


def test_a_tiffs_artist_and_copyright_travel_with_it(tmp_path: Path) -> None:
    """A TIFF's descriptive tags (artist, copyright, description...) were dropped; they are
    written back into a TIFF, 8-bit and 16-bit, and as EXIF (the same tags) into the formats
    that hold it, and a JPEG's EXIF artist becomes a TIFF's tag."""
    from conftest import INSTANT_MODEL

    from upscaler.cli import main

    src = tmp_path / "in"
    src.mkdir()
    # As other programs write them: UTF-8 bytes in TIFF's ASCII fields.
    tags = {270: "表紙のカラー原稿", 315: "山田 花子", 33432: "(c) 2026 Hanako Yamada"}
    stored = {tag: text.encode("utf-8") for tag, text in tags.items()}
    cel = PIL.Image.fromarray(draw_cel(24, 32, seed=1))
    cel.save(src / "cover.tiff", tiffinfo=stored)
    write_image(Image(draw_cel(24, 32, seed=2).astype(np.uint16) * 257,
                      exif=_exif_of(stored)), src / "deep.tiff")
    cel.save(src / "photo.jpg", exif=_exif_of({315: b"Taro"}))
    out = tmp_path / "out"
    assert main([str(src), "-o", str(out), "-q", *INSTANT_MODEL]) == 0
    for name in ("cover.tiff", "deep.tiff"):
        with PIL.Image.open(out / name) as im:
            assert _texts(im.tag_v2) == tags, name
    assert main([str(src / "cover.tiff"), "-o", str(tmp_path / "cover.png"), "-q",
                 *INSTANT_MODEL]) == 0
    assert main([str(src / "photo.jpg"), "-o", str(tmp_path / "photo.tiff"), "-q",
                 *INSTANT_MODEL]) == 0
    with PIL.Image.open(tmp_path / "cover.png") as im:
        assert _texts(im.getexif()) == tags
    with PIL.Image.open(tmp_path / "photo.tiff") as im:
        assert im.tag_v2.get(315) == "Taro"


def _exif_of(tags: dict[int, bytes]) -> bytes:
    exif = PIL.Image.Exif()
    for tag, value in tags.items():
        exif[tag] = value
    return exif.tobytes()


def _texts(found: Any) -> dict[int, str]:
    """Text tags as written: Pillow reads their bytes as Latin-1."""
    return {tag: found[tag].encode("latin-1").decode("utf-8") for tag in (270, 315, 33432)
            if tag in found}


def test_a_tiff_of_many_pages_is_written_a_page_at_a_time(tmp_path: Path) -> None:
    """A scanned book in one TIFF was upscaled whole before a byte was written: every page at
    4x in memory at once. Each page is now encoded as it is upscaled. 48 pages of 64x64 come to
    9.4 MB of outputs; the job's own allocations peaked at 3.0 MB this way (12.5 MB holding
    them all)."""
    import tracemalloc

    from conftest import INSTANT_MODEL

    import upscaler

    pages = [PIL.Image.fromarray(draw_cel(64, 64, seed=n)) for n in range(48)]
    pages[0].save(tmp_path / "book.tiff", save_all=True, append_images=pages[1:],
                  compression="tiff_deflate")
    # The source's pages too are decoded one at a time, as the job reaches each: reading
    # the book holds its file's bytes and its first page (12 KB; all 48 decoded held 0.5 MB).
    read_image(tmp_path / "book.tiff")  # Pillow's first TIFF sets up caches of its own
    tracemalloc.start()
    try:
        book = read_image(tmp_path / "book.tiff")
        held = tracemalloc.get_traced_memory()[0] - (tmp_path / "book.tiff").stat().st_size
    finally:
        tracemalloc.stop()
    assert len(book.pages) == 47 and held < 0.1e6, held  # measured 0.03 MB
    assert np.array_equal(book.pages[-1].pixels, np.asarray(pages[-1]))
    options = {"model": INSTANT_MODEL[1], "executor": "onnxruntime"}
    upscaler.upscale_path(tmp_path / "book.tiff", tmp_path / "warm.tiff", **options)
    tracemalloc.start()
    try:
        upscaler.upscale_path(tmp_path / "book.tiff", tmp_path / "book_x4.tiff", **options)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4.5e6, peak
    with PIL.Image.open(tmp_path / "book_x4.tiff") as im:
        assert im.n_frames == 48 and im.size == (256, 256)
    assert (tmp_path / "book_x4.tiff").read_bytes() == (tmp_path / "warm.tiff").read_bytes()


def test_avif_in_and_out(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """AVIF, the web's newer format for art: a folder of them was skipped as "not images we
    read". Stills, alpha and animations come back as AVIF with their XMP and timing, close to
    the same pictures written losslessly; 10-bit ones, which Pillow reads as 8, are refused."""
    import subprocess

    from conftest import INSTANT_MODEL

    from upscaler.cli import main
    from upscaler.media import ffmpeg

    src = tmp_path / "in"
    src.mkdir()
    PIL.Image.fromarray(draw_cel(24, 32, seed=1)).save(src / "cel.avif", quality=90,
                                                       xmp=XMP.encode())
    rgba = np.dstack([draw_cel(24, 32, seed=2),
                      np.tile(np.linspace(0, 255, 32, dtype=np.uint8), (24, 1))])
    PIL.Image.fromarray(rgba).save(src / "alpha.avif", quality=90)
    frames = [PIL.Image.fromarray(draw_cel(24, 32, seed=s)) for s in range(3)]
    frames[0].save(src / "anim.avif", save_all=True, append_images=frames[1:],
                   duration=[100, 200, 300], quality=90)
    out = tmp_path / "out"
    assert main([str(src), "-o", str(out), "-q", *INSTANT_MODEL]) == 0
    for name in ("cel", "alpha"):
        assert main([str(src / f"{name}.avif"), "-o", str(tmp_path / f"{name}.png"), "-q",
                     *INSTANT_MODEL]) == 0
        with PIL.Image.open(out / f"{name}.avif") as im:
            got = np.asarray(im)
            xmp = im.info.get("xmp")
        lossless = _pil_array(tmp_path / f"{name}.png")
        # Measured: 40.8 and 41.6 dB on the colours, 55.3 on the alpha (quality 95, 4:4:4).
        assert got.shape == lossless.shape and psnr(got[..., :3], lossless[..., :3], 255) > 38
        if name == "alpha":
            assert psnr(got[..., 3], lossless[..., 3], 255) > 50
        else:
            assert xmp == XMP.encode()
    # --format avif, on the command line and in a job file.
    PIL.Image.fromarray(draw_cel(24, 32, seed=3)).save(tmp_path / "cel3.png")
    assert main([str(tmp_path / "cel3.png"), "-o", f"{tmp_path / 'as'}/", "--format", "avif",
                 "-q", *INSTANT_MODEL]) == 0
    job = tmp_path / "job.yaml"
    job.write_text(f"defaults: {{format: avif, quality: 80}}\njobs: [{{input: cel3.png, output: "
                   f"'{tmp_path / 'job'}/'}}]\n", encoding="utf-8")
    assert main(["--config", str(job), "-q", *INSTANT_MODEL]) == 0
    for made in (tmp_path / "as" / "cel3.avif", tmp_path / "job" / "cel3.avif"):
        with PIL.Image.open(made) as im:
            assert im.format == "AVIF" and im.size == (128, 96)
    with PIL.Image.open(out / "anim.avif") as im:
        durations = []
        for n in range(im.n_frames):
            im.seek(n)
            im.load()
            durations.append(im.info["duration"])
        assert durations == [100, 200, 300] and im.size == (128, 96)

    deep = tmp_path / "deep.avif"
    made = subprocess.run([ffmpeg.ffmpeg_exe(), "-v", "error", "-i", str(tmp_path / "cel.png"),
                           "-c:v", "libaom-av1", "-pix_fmt", "yuv420p10le", "-still-picture",
                           "1", str(deep)], capture_output=True, check=False)
    if made.returncode == 0:  # an ffmpeg with libaom, as imageio-ffmpeg's
        assert main([str(deep), "-o", str(tmp_path / "deep_x4.avif"), "-q",
                     *INSTANT_MODEL]) == 5
        assert "an AVIF of 10 or 12 bits, which Pillow reads as 8" in capsys.readouterr().err


def test_a_pngs_colour_chunks_are_kept(tmp_path: Path) -> None:
    """gAMA, cHRM, sRGB and cICP say how a PNG without an ICC profile is to be shown (a 1.8
    gamma, HDR's PQ in cICP); they were dropped, and viewers that honour them showed the output
    in other colours than the source."""
    import struct

    from conftest import INSTANT_MODEL
    from PIL import PngImagePlugin

    from upscaler.cli import main
    from upscaler.media.images.png import colour_chunks

    src = tmp_path / "in"
    src.mkdir()
    gamma = ((b"cHRM", struct.pack(">8I", 31270, 32900, 64000, 33000, 30000, 60000, 15000,
                                    6000)), (b"gAMA", struct.pack(">I", 55556)))
    hdr = ((b"cICP", bytes([9, 16, 0, 1])), (b"sRGB", b"\0"))
    for name, chunks, pixels in (("mac.png", gamma, draw_cel(24, 32, seed=1)),
                                 ("hdr.png", hdr, draw_cel(24, 32, seed=2)[..., :1]
                                  .astype(np.uint16) * 257)):
        info = PngImagePlugin.PngInfo()
        for kind, body in chunks:
            info.add(kind, body)
        mode = "I;16" if pixels.dtype == np.uint16 else "RGB"
        PIL.Image.frombytes(mode, (32, 24), np.ascontiguousarray(pixels).tobytes()).save(
            src / name, pnginfo=info)
        assert colour_chunks((src / name).read_bytes()) == chunks
    out = tmp_path / "out"
    assert main([str(src), "-o", str(out), "-q", *INSTANT_MODEL]) == 0
    assert colour_chunks((out / "mac.png").read_bytes()) == gamma
    assert colour_chunks((out / "hdr.png").read_bytes()) == hdr  # our own 16-bit writer's


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")  # Pillow's, on the cut-off page
def test_every_page_of_a_tiff_is_upscaled(tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    """A TIFF of several pages (a scanned chapter in one file) came out as its first page alone,
    the others lost without a word. Every page is upscaled now, each as it would be alone, at
    its own size and depth, into one TIFF; a format without pages is refused before the model."""
    from conftest import INSTANT_MODEL

    from upscaler.cli import main

    src, alone = tmp_path / "scans", tmp_path / "alone"
    src.mkdir()
    alone.mkdir()
    pages = [PIL.Image.fromarray(draw_cel(24, 32, seed=1)),
             PIL.Image.fromarray(draw_cel(16, 20, seed=2)).convert("L"),
             PIL.Image.fromarray(np.asarray(PIL.Image.fromarray(draw_cel(12, 20, seed=3))
                                            .convert("L")).astype(np.uint16) * 257)]
    pages[0].save(src / "chapter.tiff", save_all=True, append_images=pages[1:], dpi=(300, 300))
    deep = [draw_cel(20, 12, seed=4).astype(np.uint16) * 257,
            draw_cel(10, 14, seed=5).astype(np.uint16) * 257]
    assert cv2.imwritemulti(str(src / "deep.tiff"), [d[..., ::-1] for d in deep])
    for n, page in enumerate(pages):
        page.save(alone / f"chapter{n}.tiff", dpi=(300, 300))
    for n, page in enumerate(deep):
        cv2.imwrite(str(alone / f"deep{n}.tiff"), page[..., ::-1])
    out = tmp_path / "out"
    assert main([str(src), "-o", str(out), "-q", *INSTANT_MODEL]) == 0
    assert main([str(alone), "-o", str(tmp_path / "alone_out"), "-q", *INSTANT_MODEL]) == 0

    def pages_of(path: Path) -> list[np.ndarray]:
        ok, read = cv2.imreadmulti(str(path), flags=cv2.IMREAD_UNCHANGED)
        assert ok, path
        return [m[..., None] if m.ndim == 2 else m for m in read]

    for name, count in (("chapter", 3), ("deep", 2)):
        got = pages_of(out / f"{name}.tiff")
        expected = [pages_of(tmp_path / "alone_out" / f"{name}{n}.tiff")[0]
                    for n in range(count)]
        assert [(g.shape, g.dtype) for g in got] == [(e.shape, e.dtype) for e in expected]
        assert all(np.array_equal(g, e) for g, e in zip(got, expected, strict=True)), name
    with PIL.Image.open(out / "chapter.tiff") as im:
        assert [im.seek(n) or (im.mode, im.size, im.info["dpi"]) for n in range(3)] == [
            ("RGB", (128, 96), (300, 300)), ("L", (80, 64), (300, 300)),
            ("I;16", (80, 48), (300, 300))]

    assert main([str(src / "chapter.tiff"), "-o", str(tmp_path / "chapter.png"), "-q",
                 *INSTANT_MODEL]) == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"upscale: error: {tmp_path / 'chapter.png'}: PNG cannot hold the 3 pages of a TIFF; "
        "write TIFF")

    # A later page cut off: the file is damaged, and said so in a line (Pillow's TypeError
    # came out as a traceback).
    cut = tmp_path / "cut.tiff"
    whole = (src / "chapter.tiff").read_bytes()
    cut.write_bytes(whole[:len(whole) * 77 // 100])  # into the third page's directory
    assert main([str(cut), "-o", str(tmp_path / "cut_out.tiff"), "-q", *INSTANT_MODEL]) == 5
    assert capsys.readouterr().err.splitlines()[-1].startswith(
        f"upscale: error: {cut}: damaged or truncated image: a page after the first cannot "
        "be read")


def test_text_file_named_png_and_missing_file_raise_media_error(tmp_path: Path) -> None:
    fake = tmp_path / "notes.png"
    fake.write_text("this is not a picture\n")
    with pytest.raises(MediaError, match=r"notes\.png.*not an image"):
        read_image(fake)
    with pytest.raises(MediaError, match=r"missing\.png"):
        read_image(tmp_path / "missing.png")


# --- atomic writing -----------------------------------------------------------------------------


def test_write_leaves_only_the_final_file(tmp_path: Path, cel: np.ndarray) -> None:
    for ext in (".png", ".jpg", ".webp", ".tiff", ".bmp"):
        write_image(Image(cel), tmp_path / f"out{ext}")
    write_image(Image(_random((8, 8, 3), np.uint16)), tmp_path / "deep.png")
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["deep.png", "out.bmp", "out.jpg", "out.png", "out.tiff", "out.webp"]


def test_failed_write_keeps_the_old_file_and_no_temp(tmp_path: Path, cel: np.ndarray,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    target = write_image(Image(cel), tmp_path / "keep.png")
    before = target.read_bytes()

    def disk_full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(images_write.os, "fsync", disk_full)
    with pytest.raises(MediaError, match=r"keep\.png.*No space left"):
        write_image(Image(cel[::2, ::2].copy()), target)
    monkeypatch.undo()
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["keep.png"]


def test_write_into_a_missing_folder_raises_media_error(tmp_path: Path, cel: np.ndarray) -> None:
    with pytest.raises(MediaError, match="nowhere"):
        write_image(Image(cel), tmp_path / "nowhere" / "x.png")


def test_written_file_permissions_follow_the_umask(tmp_path: Path, cel: np.ndarray) -> None:
    old = os.umask(0o022)
    try:
        out = write_image(Image(cel), tmp_path / "p.png")
    finally:
        os.umask(old)
    assert out.stat().st_mode & 0o777 == 0o644


def test_is_image_path() -> None:
    assert is_image_path("a/b.PNG") and is_image_path("x.jpeg") and is_image_path("y.tif")
    assert not is_image_path("clip.mp4") and not is_image_path("._x.png")
    assert not is_image_path("notes.txt")


# --- channels around the model ------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_channels_round_trip_exactly(dtype: type, channels: int) -> None:
    px = _random((9, 11, channels), dtype, seed=channels)
    src = to_model_input(Image(px))
    assert src.rgb.dtype == dtype and src.rgb.shape == (9, 11, 3)
    assert src.rgb.flags.c_contiguous
    assert (src.alpha is not None) == (channels in (2, 4))
    assert src.alpha is None or (src.alpha.dtype == dtype and src.alpha.shape == (9, 11))
    assert src.gray == (channels in (1, 2))
    # Through the model's edge and back: float32 planes in [0, 1], then pixels again.
    planes = to_planes(src.rgb[None])
    assert planes.dtype == np.float32 and planes.shape == (1, 3, 9, 11)
    assert planes.min() >= 0.0 and planes.max() <= 1.0
    rgb = from_planes(planes[0], dtype)
    back = from_model_output(rgb, src.alpha, like=src)
    assert back.dtype == dtype
    np.testing.assert_array_equal(back, px)


def test_from_model_output_rounds_clips_and_takes_luma() -> None:
    src = to_model_input(np.zeros((1, 3, 2), np.uint8))
    model_rgb = np.array([[[0.6 / 255, 0.6 / 255, 0.6 / 255], [1.5, 1.5, 1.5],
                           [1.0, 0.0, 0.0]]], np.float32)
    model_alpha = np.array([[-0.2, 1.2, 0.4 / 255]], np.float32)
    # The model's edge rounds and clips its float output (the alpha runs as gray RGB)...
    rgb = from_planes(np.ascontiguousarray(model_rgb.transpose(2, 0, 1)), np.uint8)
    alpha = from_planes(np.repeat(model_alpha[None], 3, axis=0), np.uint8)[..., 0]
    # ...and the layout comes back with the luma of the colour.
    out = from_model_output(rgb, alpha, like=src)
    np.testing.assert_array_equal(out[0, :, 0], [1, 255, 76])  # rounded; clipped; BT.601 luma
    np.testing.assert_array_equal(out[0, :, 1], [0, 255, 0])
    with pytest.raises(ValueError, match="alpha"):
        from_model_output(rgb, None, like=src)
    deep = to_model_input(np.zeros((1, 1), np.uint16))
    red = np.array([[[65535, 0, 0]]], np.uint16)
    np.testing.assert_array_equal(from_model_output(red, None, like=deep), [[[19595]]])


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_settle_alpha_keeps_flat_areas_exact_and_edges_as_upscaled(dtype: type) -> None:
    peak = np.iinfo(dtype).max
    source = np.zeros((16, 16), dtype)
    source[:, 8:] = peak
    upscaled = np.repeat(np.repeat(source, 4, 0), 4, 1).astype(np.float64)
    model = np.rint(np.clip(upscaled * 0.99 + 0.004 * peak, 0, peak)).astype(dtype)
    settled = settle_alpha(model, source)
    assert settled.shape == (64, 64) and settled.dtype == dtype
    assert np.all(settled[:, :4 * 5] == 0) and np.all(settled[:, 4 * 11:] == peak)
    np.testing.assert_array_equal(settled[:, 28:36], model[:, 28:36])  # the edge


def test_resize_to_scale() -> None:
    arr = np.zeros((4, 4, 3), np.float32)
    arr[:2, :2] = 1.0
    small = resize_to_scale(arr, 2, 2)
    np.testing.assert_allclose(small[..., 0], [[1.0, 0.0], [0.0, 0.0]])  # area averaging
    big = resize_to_scale(arr, 9, 7)
    assert big.shape == (9, 7, 3) and big.min() >= 0.0 and big.max() <= 1.0
    single = resize_to_scale(np.ones((4, 4, 1), np.float32) * 0.5, 8, 8)
    assert single.shape == (8, 8, 1)
    np.testing.assert_allclose(single, 0.5, atol=1e-6)
    assert resize_to_scale(arr, 4, 4) is arr


def test_a_constant_alpha_costs_no_model_run_and_comes_back_exact() -> None:
    # An opaque RGBA picture (a screenshot, an illustration saved with alpha) is common, and
    # settle_alpha would have thrown every pixel of the model's alpha away: one run, not two.
    rgb = draw_cel(32, 48)
    with Upscaler(model="realesr-animevideov3", executor="onnxruntime", threads=2) as up:
        colours = up.upscale(rgb)
        for value in (255, 0, 77):
            out = up.upscale(np.dstack([rgb, np.full((32, 48), value, np.uint8)]))
            np.testing.assert_array_equal(out[..., :3], colours)
            assert (out[..., 3] == value).all()
        assert up._pipeline.frames.tiles_run == 4  # the colours, once a picture
