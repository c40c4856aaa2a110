"""Dirty regions: only the changed part of a held drawing goes through the model.

The receptive field from the graph, the change detection on blocks, FrameUpscaler on real
executors (whole frames, tiles, fixed shapes, frame edges), the Python API's frame sequences
with alpha, and whole jobs through the CLI against --no-reuse. Clips are drawn by
samples/anim.py and go through x264 at CRF 18, so that held drawings are not bit-identical.
"""

from __future__ import annotations

import contextlib
import io
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from anim import scene, write_clip
from clips import decode_all
from conftest import psnr
from draw import draw_cel
from test_tiling import FixedTileExecutor, OrtExecutor

import upscaler
from upscaler.cli import main
from upscaler.dirty import Reach, changed_blocks, plan_regions
from upscaler.executors.base import ExecutorOptions
from upscaler.executors.registry import available_executors, create_executor
from upscaler.frame_upscaler import FrameUpscaler
from upscaler.models.graph import Conv, Graph, receptive_field
from upscaler.models.registry import resolve_model
from upscaler.reuse import ReuseRule, TileReuse

# ncnn on every OS: on macOS `auto` picks Core ML, whose fixed shapes recompute a changed tile
# whole (test_a_fixed_shape_executor_recomputes_whole_tiles), not the dirty regions asserted here.
FAST = ["--model", "realesr-animevideov3", "--executor", "ncnn", "--crf", "0", "--preset",
        "ultrafast"]
SHARE = re.compile(r"the model ran on ([\d.]+)% of the pixels")
VIDEO = resolve_model("realesr-animevideov3")


# --- the receptive field ------------------------------------------------------------------

def test_receptive_fields_of_the_named_models() -> None:
    # animevideov3: 18 3x3 convolutions at the input's size; x4plus-anime: 92 at the input's
    # size, then two at 2x, two at 4x (half and a quarter of an input pixel each).
    assert VIDEO.receptive_field() == 18.0
    assert resolve_model("realesrgan-x4plus-anime").receptive_field() == 93.25


@dataclass(frozen=True)
class GlobalPool:
    """A layer the reach does not know, as Real-CUGAN's squeeze-and-excitation pooling."""

    input: str
    output: str


def test_an_unknown_layer_sees_the_whole_frame() -> None:
    weight = np.zeros((3, 3, 5, 5), np.float32)
    conv = Conv("in", "a", weight, None, pad=(2, 2, 2, 2), dilation=(2, 2))
    assert receptive_field(Graph("in", "a", (conv,))) == 4.0
    pooled = Graph("in", "b", (conv, GlobalPool("a", "b")))  # type: ignore[arg-type]
    assert receptive_field(pooled) is None


# --- finding what changed -----------------------------------------------------------------

def noisy(cel: np.ndarray, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(np.rint(cel + rng.normal(0, 0.2, cel.shape)), 0, 255).astype(np.uint8)


def test_blocks_mark_a_mouth_and_not_noise() -> None:
    cel = draw_cel(96, 128).astype(np.float32)
    first, second = noisy(cel, 0), noisy(cel, 1)
    rule = ReuseRule()
    assert not changed_blocks(second, first, rule).any()
    second[40:46, 70:78] = (150, 40, 60)  # a mouth opens inside block (2, 4)
    changed = changed_blocks(second, first, rule)
    assert changed[2, 4] and changed.sum() <= 4
    regions = plan_regions(changed, 96, 128, VIDEO.dirty_reach())
    assert regions is not None and len(regions) == 1
    run, paste = regions[0].run, regions[0].paste
    assert paste.y0 <= 40 - 12 and paste.y1 >= 46 + 12 and run.y0 == paste.y0 - 12
    assert run.shape <= (80, 80)  # at most 2x2 blocks, grown by 12 + 12 px
    faded = np.clip(cel * 0.99, 0, 255).astype(np.uint8)  # a fade's step, 1% darker
    assert changed_blocks(faded, first, rule) is None
    grain = np.clip(cel + np.random.default_rng(2).normal(0, 2, cel.shape), 0, 255)
    assert changed_blocks(grain.astype(np.uint8), first, rule) is None


def test_most_of_a_tile_changed_runs_it_whole() -> None:
    changed = np.zeros((6, 8), bool)
    changed[1:5, 1:7] = True
    assert plan_regions(changed, 96, 128, Reach(8, 8)) is None
    assert plan_regions(np.zeros((6, 8), bool), 96, 128, Reach(8, 8)) == []


# --- FrameUpscaler ------------------------------------------------------------------------

def mouth_frames(height: int = 96, width: int = 160, at: tuple[int, int] = (50, 90),
                 ) -> list[np.ndarray]:
    """A held cel, noisy as decoded, whose 'mouth' opens in the second frame and closes in
    the third."""
    cel = draw_cel(height, width).astype(np.float32)
    frames = [noisy(cel, k) for k in range(3)]
    y, x = at
    frames[1][y:y + 5, x:x + 8] = (150, 40, 60)
    return frames


def compare(frames: FrameUpscaler, plain: FrameUpscaler, inputs: list[np.ndarray],
            ) -> list[float]:
    return [psnr(np.array(frames.upscale(f)), np.array(plain.upscale(f)), 255) for f in inputs]


# Which executors run here is asked when the test runs, not when every test worker collects
# this file: the question imports torch (1.2 s).
@pytest.mark.parametrize("name", ["ncnn", "onnxruntime", "openvino", "torch"])
def test_every_executor_recomputes_only_the_mouth(name: str) -> None:
    if name not in available_executors():
        pytest.skip(f"{name} does not run here")
    with create_executor(name, VIDEO, ExecutorOptions(threads=2)) as executor:
        frames = FrameUpscaler(executor, border=VIDEO.border, reuse=TileReuse(),
                               reach=VIDEO.dirty_reach())
        plain = FrameUpscaler(executor, border=VIDEO.border)
        scores = compare(frames, plain, mouth_frames())
    assert frames.tiles_patched == 2 and frames.tiles_run == 3
    # The first frame whole, then two small rectangles of about a quarter of it each: 0.497.
    assert frames.pixels_run / frames.full_pixels < 0.55
    assert min(scores) >= 48, scores  # measured 51.8 dB on ncnn and ONNX Runtime


def test_a_change_at_the_frame_edge_uses_the_border_padding() -> None:
    anime = OrtExecutor("realesr-animevideov3")
    frames = FrameUpscaler(anime, border=VIDEO.border, reuse=TileReuse(),
                           reach=VIDEO.dirty_reach())
    plain = FrameUpscaler(anime, border=VIDEO.border)
    inputs = mouth_frames(at=(0, 0))
    for k, f in enumerate(inputs):
        ours, theirs = np.array(frames.upscale(f)), np.array(plain.upscale(f))
        corner = (slice(0, 64), slice(0, 64))
        # Measured: the corner identical to the whole frame's (the frame 51.6 dB: held noise).
        assert psnr(ours[corner], theirs[corner], 255) >= 50, f"frame {k}"
    assert frames.tiles_patched == 2


def test_tiles_recompute_their_own_dirty_regions() -> None:
    anime = OrtExecutor("realesr-animevideov3")
    frames = FrameUpscaler(anime, tile=96, overlap=20, border=VIDEO.border,
                           reuse=TileReuse(), reach=VIDEO.dirty_reach())
    plain = FrameUpscaler(anime, tile=96, overlap=20, border=VIDEO.border)
    scores = compare(frames, plain, mouth_frames(128, 192))
    # 6 tiles: the first frame runs them all, then the mouth's are patched, the rest held.
    assert frames.tiles_patched >= 2 and frames.tiles_reused >= 6
    assert min(scores) >= 48, scores  # measured 51.4 dB


def test_a_fixed_shape_executor_recomputes_whole_tiles() -> None:
    fixed = FixedTileExecutor(OrtExecutor("realesr-animevideov3"), 64)
    frames = FrameUpscaler(fixed, overlap=16, reuse=TileReuse(), reach=VIDEO.dirty_reach())
    for f in mouth_frames():
        frames.upscale(f)
    assert frames.tiles_patched == 0 and frames.tiles_reused > 0


# --- the Python API: a sequence of frames with alpha --------------------------------------

def test_api_frame_sequences_with_alpha() -> None:
    rgb = mouth_frames()
    alpha = np.full((96, 160), 255, np.uint8)
    alpha[:, :40] = np.linspace(0, 255, 40, dtype=np.uint8)
    frames = [np.dstack([f, alpha]) for f in rgb]
    frames[2] = frames[2].copy()
    frames[2][60:66, 120:128, 3] = 0  # a hole opens in the alpha alone
    with upscaler.Upscaler(model="realesr-animevideov3", executor="onnxruntime",
                           threads=2) as up:
        ours = list(up.upscale_frames(frames))
        work = up._pipeline.frames
        assert work.tiles_patched >= 3 and work.pixels_run / work.full_pixels < 0.5
        alone = [up.upscale(f) for f in frames]  # one by one: nothing held between calls
    for k, (a, b) in enumerate(zip(ours, alone, strict=True)):
        assert a.shape == (384, 640, 4)
        assert psnr(a, b, 255) >= 45, f"frame {k}"
    with upscaler.Upscaler(model="realesr-animevideov3", executor="onnxruntime", threads=2,
                           reuse=False) as up:
        assert [p.shape for p in up.upscale_frames([rgb[0][..., 0]])] == [(384, 640)]
        with pytest.raises(upscaler.errors.UsageError, match="uint8 or uint16"):
            list(up.upscale_frames([np.zeros((4, 4), np.float32)]))


# --- whole jobs through the CLI ------------------------------------------------------------

@dataclass
class Run:
    frames: list[np.ndarray]
    share: float | None


def upscale(src: Path, dst: Path, *extra: str) -> Run:
    text = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(text):
        assert main([str(src), "-o", str(dst), *FAST, *extra]) == 0
    found = SHARE.search(text.getvalue())
    return Run(decode_all(dst), float(found.group(1)) / 100 if found else None)


@pytest.fixture(scope="module")
def jobs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Run, Run]]:
    """Lip flaps (9 frames) and a pan (6), 112x192, each with reuse and with --no-reuse."""
    tmp = tmp_path_factory.mktemp("dirty")
    out = {}
    for kind, frames in (("lipflaps", 9), ("pan", 6)):
        src = write_clip(tmp / f"{kind}.mkv", scene(kind, frames, 112, 192), crf=18)
        out[kind] = (upscale(src, tmp / f"{kind}-reuse.mkv"),
                     upscale(src, tmp / f"{kind}-plain.mkv", "--no-reuse"))
    return out


def frame_psnr(runs: tuple[Run, Run]) -> list[float]:
    return [psnr(a, b, 255) for a, b in zip(runs[0].frames, runs[1].frames, strict=True)]


@pytest.mark.slow
def test_lip_flaps_compute_a_small_share(jobs: dict[str, tuple[Run, Run]]) -> None:
    ours, plain = jobs["lipflaps"]
    assert plain.share is None  # --no-reuse: nothing to report
    # The first frame whole, then two changed drawings on a part each: measured 0.162.
    assert ours.share is not None and ours.share < 0.2
    scores = frame_psnr(jobs["lipflaps"])
    held = scores[1:]  # the first frame is computed whole by both: identical
    assert min(held) >= 49 and np.mean(held) >= 50, scores  # measured 52.1 and 52.5 dB


@pytest.mark.slow
def test_a_pan_is_not_reused_into_a_smear(jobs: dict[str, tuple[Run, Run]]) -> None:
    ours, _ = jobs["pan"]
    assert ours.share is not None and ours.share > 0.95
    assert min(frame_psnr(jobs["pan"])) >= 50  # measured: every frame identical


@pytest.mark.slow
def test_a_10bit_clip_patches_its_mouth_in_16_bits(tmp_path: Path) -> None:
    # The deep path: frames decode as uint16, blocks are compared in 16 bits, the job writes
    # 10-bit HEVC; --crf 0 so that outputs compare.
    from upscaler.media import ffmpeg

    eight = write_clip(tmp_path / "lipflaps8.mkv", scene("lipflaps", 7, 112, 192), crf=18)
    src = tmp_path / "lipflaps10.mkv"
    ffmpeg.run([ffmpeg.ffmpeg_exe(), "-hide_banner", "-v", "error", "-y", "-i", str(eight),
                "-c:v", "libx265", "-x265-params", "log-level=error", "-crf", "16",
                "-pix_fmt", "yuv420p10le", str(src)], src)
    ours = upscale(src, tmp_path / "reuse.mkv")
    plain = upscale(src, tmp_path / "plain.mkv", "--no-reuse")
    assert ours.frames[0].dtype == np.uint16 and ours.frames[0].shape == (448, 768, 3)
    assert ours.share is not None and ours.share < 0.25  # measured 0.208
    scores = [psnr(a, b, 65535) for a, b in zip(ours.frames, plain.frames, strict=True)]
    # Measured 55.7-57.6 dB; the first frame, computed whole by both, 59.0 (HEVC at CRF 0
    # is not lossless).
    assert min(scores[1:]) >= 52, scores


@pytest.mark.slow
def test_an_animated_png_patches_colour_and_alpha_apart(tmp_path: Path) -> None:
    import PIL.Image

    cel = draw_cel(96, 160).astype(np.float32)
    alpha = np.full((96, 160), 255, np.uint8)
    alpha[:, :40] = np.linspace(0, 255, 40, dtype=np.uint8)
    frames = [np.dstack([noisy(cel, k), alpha]) for k in range(5)]
    frames[1][50:55, 90:98, :3] = (150, 40, 60)  # the mouth opens, then closes
    frames[3][60:66, 120:128, 3] = 0  # a hole opens in the alpha alone
    src = tmp_path / "anim.png"
    first, *rest = (PIL.Image.fromarray(f) for f in frames)
    first.save(src, save_all=True, append_images=rest, duration=100, loop=0)
    runs = {}
    for name, extra in (("reuse", []), ("plain", ["--no-reuse"])):
        dst = tmp_path / f"{name}.png"
        text = io.StringIO()
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(text):
            assert main([str(src), "-o", str(dst), "--model", "realesr-animevideov3",
                         "--executor", "ncnn", *extra]) == 0
        with PIL.Image.open(dst) as im:
            assert im.n_frames == 5
            runs[name] = []
            for k in range(5):
                im.seek(k)
                runs[name].append(np.asarray(im.convert("RGBA")))
        found = SHARE.search(text.getvalue())
        runs[f"{name} share"] = float(found.group(1)) / 100 if found else None
    assert runs["plain share"] is None
    assert runs["reuse share"] is not None and runs["reuse share"] < 0.35  # measured 0.298
    for k, (a, b) in enumerate(zip(runs["reuse"], runs["plain"], strict=True)):
        assert a.shape == (384, 640, 4)
        # Measured: colours 51.2-52.1 dB after the first frame, alpha identical.
        assert psnr(a[..., :3], b[..., :3], 255) >= 48, f"colour of frame {k}"
        assert psnr(a[..., 3], b[..., 3], 255) >= 48, f"alpha of frame {k}"
    assert runs["reuse"][3][250:254, 490:500, 3].max() < 40  # the hole is there, upscaled
    assert runs["reuse"][2][250:254, 490:500, 3].min() == 255
