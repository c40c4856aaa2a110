"""Animated PNG, WebP and GIF through the `upscale` command: every frame, its timing and the loop
count kept (they used to come out as their first frame; GIF was not read at all)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import PIL.Image
import pytest
from conftest import psnr
from draw import draw_cel

from upscaler.cli import main

FAST = ["--model", "realesr-animevideov3", "--quiet"]
DURATIONS = [80, 120, 200]


def frames_rgba() -> list[np.ndarray]:
    """Three different 24x32 frames of a moving drawn cel, each with a moving transparent hole."""
    out = []
    for i in range(3):
        rgb = draw_cel(24, 32, t=i / 3, seed=4)
        yy, xx = np.mgrid[0:24, 0:32]
        alpha = np.where(np.hypot(yy - 12, xx - 8 - 6 * i) < 5, 0, 255).astype(np.uint8)
        out.append(np.dstack([rgb, alpha]))
    return out


def save_animation(path: Path, frames: list[np.ndarray], **options: object) -> Path:
    pictures = [PIL.Image.fromarray(f) for f in frames]
    if path.suffix == ".gif":
        options.setdefault("disposal", 2)
    pictures[0].save(path, save_all=True, append_images=pictures[1:], duration=DURATIONS,
                     **options)
    return path


def read_animation(path: Path) -> tuple[str, list[np.ndarray], list[int], int | None]:
    """(format, frames as RGBA, durations, loop) as Pillow, an independent reader, sees them."""
    with PIL.Image.open(path) as im:
        frames, durations = [], []
        for k in range(getattr(im, "n_frames", 1)):
            im.seek(k)
            frames.append(np.asarray(im.convert("RGBA")).astype(np.float64))
            durations.append(round(float(im.info.get("duration", 0))))
        return str(im.format), frames, durations, im.info.get("loop")


def upscale_still(tmp_path: Path, pixels: np.ndarray, name: str) -> np.ndarray:
    src = tmp_path / f"{name}.png"
    PIL.Image.fromarray(pixels).save(src)
    out = tmp_path / f"{name}_x4.png"
    assert main([str(src), "-o", str(out), *FAST]) == 0
    with PIL.Image.open(out) as im:
        return np.asarray(im.convert("RGBA")).astype(np.float64)


def shown(rgba: np.ndarray) -> np.ndarray:
    """What a viewer shows over black: colour weighted by alpha."""
    return rgba[..., :3] * (rgba[..., 3:] / 255)


# PSNR of what is shown, against the frame upscaled as a still: PNG and lossless WebP measured
# equal (inf); GIF, with 255 colours and 1-bit alpha a frame, 32.6-33.3 dB (34.9-35.1 dB where
# both are opaque).
@pytest.mark.parametrize(("suffix", "fmt", "options", "min_db"), [
    (".png", "PNG", {"loop": 3}, 90),
    (".webp", "WEBP", {"loop": 3, "lossless": True}, 90),
    (".gif", "GIF", {"loop": 3}, 30),
])
def test_every_frame_upscaled_with_its_timing(tmp_path: Path, suffix: str, fmt: str,
                                              options: dict[str, object], min_db: float) -> None:
    frames = frames_rgba()
    src = save_animation(tmp_path / f"anim{suffix}", frames, **options)
    _, source_frames, _, _ = read_animation(src)
    out = tmp_path / f"anim_x4{suffix}"
    assert main([str(src), "-o", str(out), *FAST]) == 0
    got_fmt, got, durations, loop = read_animation(out)
    assert (got_fmt, len(got), durations, loop) == (fmt, 3, DURATIONS, 3)
    for k, frame in enumerate(got):
        assert frame.shape == (96, 128, 4)
        still = upscale_still(tmp_path, source_frames[k].astype(np.uint8), f"frame{k}")
        assert psnr(shown(frame), shown(still), 255) >= min_db, f"frame {k}"
        # Transparency where the source frame had it, and nowhere else.
        assert np.array_equal(frame[..., 3] >= 128, still[..., 3] >= 128)


def test_gif_that_plays_once_still_plays_once_and_converts_to_webp(tmp_path: Path) -> None:
    frames = [f[..., :3] for f in frames_rgba()]  # opaque
    src = save_animation(tmp_path / "once.gif", frames)  # no loop block: plays once
    out = tmp_path / "once_x4.gif"
    assert main([str(src), "-o", str(out), *FAST]) == 0
    fmt, got, durations, loop = read_animation(out)
    assert (fmt, len(got), durations, loop) == ("GIF", 3, DURATIONS, None)
    assert all(f[..., 3].min() == 255 for f in got)
    webp = tmp_path / "once.webp"
    assert main([str(src), "-o", str(webp), *FAST]) == 0
    assert read_animation(webp)[0::2] == ("WEBP", DURATIONS)
    assert read_animation(webp)[3] == 1  # played once, as the GIF was


@pytest.mark.parametrize(("src_suffix", "loop", "out_suffix", "expected"), [
    (".gif", 5, ".webp", 6), (".gif", 5, ".png", 6), (".png", 3, ".gif", 2),
    (".png", 1, ".gif", None), (".webp", 1, ".gif", None), (".gif", 0, ".webp", 0),
    (".webp", 0, ".gif", 0), (".gif", 2, ".gif", 2),
    (".gif", 65535, ".webp", 65535)])  # 65536 plays: more than WebP's count holds
def test_how_often_an_animation_plays_is_kept_across_formats(
        tmp_path: Path, src_suffix: str, loop: int, out_suffix: str,
        expected: int | None) -> None:
    """A GIF's loop count is the plays after the first; APNG and WebP count every play. The
    number was copied as it was: a GIF that plays 6 times became a WebP that plays 5, an APNG
    that plays once a GIF that plays twice."""
    frames = [f[..., :3] for f in frames_rgba()]
    src = save_animation(tmp_path / f"in{src_suffix}", frames, loop=loop,
                         **({"lossless": True} if src_suffix == ".webp" else {}))
    out = tmp_path / f"out{out_suffix}"
    assert main([str(src), "-o", str(out), *FAST]) == 0
    assert read_animation(out)[3] == expected


def test_animation_to_a_still_format_is_refused_before_work(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = save_animation(tmp_path / "anim.png", frames_rgba())
    out = tmp_path / "out.jpg"
    assert main([str(src), "-o", str(out), *FAST]) == 2  # the format asked for, not the input
    err = capsys.readouterr().err
    assert err == (f"upscale: error: {out}: JPEG cannot hold an animation (3 frames); "
                   "write PNG, WebP or GIF\n")
    assert not out.exists()


def test_still_gif_is_read_and_written(tmp_path: Path) -> None:
    frame = frames_rgba()[0]
    src = tmp_path / "still.gif"
    PIL.Image.fromarray(frame).save(src)
    out = tmp_path / "still_x4.gif"
    assert main([str(src), "-o", str(out), *FAST]) == 0
    fmt, got, _, _ = read_animation(out)
    assert (fmt, len(got), got[0].shape) == ("GIF", 1, (96, 128, 4))
    assert (got[0][..., 3] == 0).any() and (got[0][..., 3] == 255).any()
