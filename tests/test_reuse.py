"""Held-frame reuse: the rule, the store, FrameUpscaler with it, and whole jobs through the CLI.

The clips are drawn by samples/anim.py (exact frames, so where a drawing changed is known) and
encoded with x264 at CRF 18, so that held drawings are not bit-identical after decoding. Each
job runs with and without reuse, both written losslessly (--crf 0), and the outputs are
compared frame by frame.
"""

from __future__ import annotations

import contextlib
import io
import re
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest
from anim import scene, write_clip
from clips import decode_all
from conftest import psnr
from draw import draw_cel
from test_tiling import FixedTileExecutor, OrtExecutor, SmallMemoryExecutor
from test_video_rerun import FAST as RERUN_FAST
from test_video_rerun import run_cli, stop_at_mux

from upscaler.cli import main
from upscaler.executors.base import ExecutorOptions
from upscaler.executors.registry import available_executors, create_executor
from upscaler.frame_upscaler import FrameUpscaler
from upscaler.models.registry import resolve_model
from upscaler.reuse import ReuseRule, TileReuse, estimated_shift

FAST = ["--model", "realesr-animevideov3", "--crf", "0", "--preset", "ultrafast"]
HEIGHT, WIDTH, FRAMES = 48, 80, 12
SUMMARY = re.compile(r"held drawings reused: (\d+) frames whole, (\d+) of (\d+) tiles")
DEPTHS = [np.uint8, np.uint16]


def pixels(levels: np.ndarray, dtype: type) -> np.ndarray:
    """Values in 8-bit levels as pixels of `dtype`, rounded and clamped (257 a level in 16
    bits, where a fraction of a level survives)."""
    per_level = 257 if dtype == np.uint16 else 1
    return np.clip(np.rint(levels * per_level), 0, 255 * per_level).astype(dtype)


# --- the rule and the store ---------------------------------------------------------------

@pytest.fixture
def tile() -> np.ndarray:
    """A drawn (32, 48, 3) tile in 8-bit levels, as floats to add changes to."""
    return draw_cel(32, 48).astype(np.float32)


@pytest.mark.parametrize("dtype", DEPTHS)
def test_rule_takes_coding_noise_for_unchanged(tile: np.ndarray, dtype: type) -> None:
    rng = np.random.default_rng(0)
    noisy = tile + rng.normal(0, 0.3, tile.shape).astype(np.float32)
    noisy[5, 7] += 40  # a few pixels far off, as x264 leaves at line art
    noisy[20, 30] -= 40
    assert ReuseRule().unchanged(pixels(noisy, dtype), pixels(tile, dtype))


@pytest.mark.parametrize("dtype", DEPTHS)
def test_rule_sees_a_small_local_change(tile: np.ndarray, dtype: type) -> None:
    changed = tile.copy()
    changed[10:13, 20:24, 0] += 60  # 12 pixels: a mouth opening
    assert not ReuseRule().unchanged(pixels(changed, dtype), pixels(tile, dtype))


@pytest.mark.parametrize("dtype", DEPTHS)
def test_rule_sees_a_uniform_shift_of_one_level(tile: np.ndarray, dtype: type) -> None:
    faded = pixels(tile * (1 - 2 / 255), dtype)  # a fade's step
    assert not ReuseRule().unchanged(faded, pixels(tile, dtype))


@pytest.mark.parametrize("dtype", DEPTHS)
@pytest.mark.parametrize(("dx", "moved"), [(0.0, False), (0.02, False), (0.25, True),
                                           (0.5, True)])
def test_rule_sees_a_slow_pan(dx: float, moved: bool, dtype: type) -> None:
    cel = draw_cel(64, 96).astype(np.float32)
    shift = np.float32([[1, 0, dx], [0, 1, 0]])
    panned = cv2.warpAffine(cel, shift, (96, 64), flags=cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_REFLECT)
    a, b = pixels(panned, dtype), pixels(cel, dtype)
    assert abs(estimated_shift(a, b) - dx) < 0.02
    assert ReuseRule().unchanged(a, b) is not moved


def test_store_judges_against_the_last_computed_input(tile: np.ndarray) -> None:
    # 16-bit pixels, so that a step can be a fraction of an 8-bit level; the drawing is kept
    # off black and white, so that no step is clamped away.
    inner = tile * 0.9 + 10
    first = pixels(inner, np.uint16)
    reuse = TileReuse()
    out = np.ones((4, 4, 3), np.uint16)
    assert reuse.lookup("a", first) is None
    reuse.store("a", first, out)
    step = 0.3  # each frame 0.3 levels on from the one before: under the 0.5 limit
    held = reuse.lookup("a", pixels(inner + step, np.uint16))
    assert held is not None and np.array_equal(held, out)
    # 0.6 levels from the computed input, though only 0.3 from the frame before: no creep.
    assert reuse.lookup("a", pixels(inner + 2 * step, np.uint16)) is None
    assert reuse.lookup("a", first[:, :16]) is None  # another shape is another tile
    held = reuse.lookup("a", first)
    assert held is not None and not held.flags.writeable
    reuse.reset()
    assert reuse.lookup("a", first) is None


def test_store_copies_the_tile_and_freezes_the_output(tile: np.ndarray) -> None:
    reuse = TileReuse()
    current = pixels(tile, np.uint8)
    out = np.ones((4, 4, 3), np.uint8)
    reuse.store("a", current, out)
    with pytest.raises(ValueError, match="read-only"):
        out[:] = 0  # handed out again, so nobody may change it in place
    tile_before = current.copy()
    current[:] = 0  # the decoder's next frame in the same buffer
    held = reuse.lookup("a", tile_before)
    assert held is not None and held.min() == 1


# --- FrameUpscaler ------------------------------------------------------------------------

def noisy_frames(n: int, height: int = 40, width: int = 56) -> list[np.ndarray]:
    """`n` copies of one cel with a little noise each, as decoded held frames are."""
    rng = np.random.default_rng(1)
    cel = draw_cel(height, width).astype(np.float32)
    return [pixels(cel + rng.normal(0, 0.2, cel.shape).astype(np.float32), np.uint8)
            for _ in range(n)]


# Asked when the test runs, not when every test worker collects this file: the question
# imports torch (1.2 s).
@pytest.mark.parametrize("name", ["ncnn", "onnxruntime", "openvino"])
def test_every_executor_reuses_whole_frames(name: str) -> None:
    if name not in available_executors():
        pytest.skip(f"{name} does not run here")
    options = ExecutorOptions(threads=2)
    with create_executor(name, resolve_model("realesr-animevideov3"), options) as executor:
        frames = FrameUpscaler(executor, reuse=TileReuse())
        first, second, third = noisy_frames(3)
        out = frames.upscale(first)
        np.testing.assert_array_equal(frames.upscale(second), out)
        moved = third.copy()
        moved[10:14, 20:24] = 255
        assert not np.array_equal(frames.upscale(moved), out)
    assert (frames.tiles_run, frames.tiles_reused, frames.frames_reused) == (2, 1, 1)


def test_fixed_shape_tiles_are_reused_one_by_one() -> None:
    anime = OrtExecutor("realesr-animevideov3")
    frames = FrameUpscaler(FixedTileExecutor(anime, 32), overlap=8, batch=2, reuse=TileReuse())
    plain = FrameUpscaler(FixedTileExecutor(anime, 32), overlap=8, batch=2)
    first, second = noisy_frames(2)
    frames.upscale(first)
    tiles = frames.tiles_run
    assert tiles > 1
    changed = second.copy()
    changed[2:6, 2:6] = 0  # inside the top-left tile only
    out = frames.upscale(changed)
    assert frames.tiles_run == tiles + 1 and frames.tiles_reused == tiles - 1
    assert frames.frames_reused == 0
    assert psnr(out, plain.upscale(changed), 255) > 50  # measured 54.7 dB


def test_out_of_memory_forgets_the_old_tiles() -> None:
    anime = OrtExecutor("realesr-animevideov3")
    frames = FrameUpscaler(SmallMemoryExecutor(anime, max_pixels=48 * 48), overlap=8,
                           reuse=TileReuse())
    first, second = noisy_frames(2, 64, 80)
    frames.upscale(first)  # whole frame refused, then tiled
    assert frames.oom_retries >= 1 and frames.tiles_reused == 0
    frames.upscale(second)
    assert frames.frames_reused == 1


def test_a_frame_with_alpha_counts_once_and_as_reused_only_when_neither_stream_ran() -> None:
    # An opaque alpha is the same every frame, so its stream is always reused: that must not
    # make the frame count as reused, nor count it twice.
    frames = FrameUpscaler(OrtExecutor("realesr-animevideov3"), reuse=TileReuse())
    (first,) = noisy_frames(1)
    other = 255 - first  # another drawing
    opaque = np.full_like(first, 255)
    for colours in (first, other, other):
        frames.upscale(colours)
        frames.upscale(opaque, stream="alpha")
    assert (frames.frames_run, frames.frames_reused) == (3, 1)  # the third frame alone
    frames.upscale(first)  # the colours run ...
    frames.upscale(opaque, stream="alpha")
    frames.upscale(first)  # ... and are held next, while the alpha changes
    frames.upscale(np.zeros_like(first), stream="alpha")
    assert (frames.frames_run, frames.frames_reused) == (5, 1)


# --- whole jobs through the CLI ------------------------------------------------------------

@dataclass
class Run:
    frames: list[np.ndarray]
    counts: tuple[int, int, int] | None  # frames reused whole, tiles reused, tiles


def upscale(src: Path, dst: Path, *extra: str) -> Run:
    text = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(text):
        assert main([str(src), "-o", str(dst), *FAST, *extra]) == 0
    found = SUMMARY.search(text.getvalue())
    counts = tuple(int(v) for v in found.groups()) if found else None
    return Run(decode_all(dst), counts)  # type: ignore[arg-type]


@dataclass
class Case:
    exact: list[np.ndarray]
    reuse: Run
    plain: Run

    def frame_psnr(self) -> list[float]:
        return [psnr(a, b, 255) for a, b in zip(self.reuse.frames, self.plain.frames,
                                                 strict=True)]

    def clip_psnr(self) -> float:
        """PSNR of the whole clip (of the mean squared error over all frames): at most the mean
        of the frames' PSNRs, and finite where some frames are identical."""
        return psnr(np.stack(self.reuse.frames), np.stack(self.plain.frames), 255)


SCENES = {"threes": {}, "twos": {}, "pan": {}, "fade": {}, "grain": {},
          "mouth": {"extra": ("--tile", "32", "--overlap", "8")}}


@pytest.fixture(scope="module")
def cases(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Case]:
    """Every scene of SCENES, upscaled with reuse and with --no-reuse."""
    tmp = tmp_path_factory.mktemp("reuse")
    out = {}
    for kind, how in SCENES.items():
        exact = scene(kind, FRAMES, HEIGHT, WIDTH)
        src = write_clip(tmp / f"{kind}.mkv", exact, crf=18)
        extra = how.get("extra", ())
        out[kind] = Case(exact, upscale(src, tmp / f"{kind}-reuse.mkv", *extra),
                         upscale(src, tmp / f"{kind}-plain.mkv", "--no-reuse", *extra))
    return out


@pytest.mark.slow
@pytest.mark.parametrize(("kind", "hold"), [("threes", 3), ("twos", 2)])
def test_held_drawings_are_reused(cases: dict[str, Case], kind: str, hold: int) -> None:
    case = cases[kind]
    assert case.plain.counts is None  # --no-reuse: nothing to report
    assert case.reuse.counts is not None
    reused, tiles_reused, tiles = case.reuse.counts
    held = FRAMES - (FRAMES + hold - 1) // hold  # every frame but a drawing's first
    assert held - 1 <= reused <= held and (tiles_reused, tiles) == (reused, FRAMES)
    # Measured: every frame >= 49.7 dB against --no-reuse, the clips 56.3 and 57.3 dB.
    assert min(case.frame_psnr()) >= 46
    assert case.clip_psnr() >= 52


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["pan", "fade"])
def test_pans_and_fades_are_never_reused(cases: dict[str, Case], kind: str) -> None:
    case = cases[kind]
    assert case.reuse.counts is not None and case.reuse.counts[1] == 0
    for a, b in zip(case.reuse.frames, case.plain.frames, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_grain_is_reused_only_where_the_decoder_repeated_a_frame(cases: dict[str, Case]) -> None:
    # x264 may code a grainy frame as a copy of the one before (at this tiny size it does once);
    # that one is reused and rightly so. Every frame equals the --no-reuse run's.
    case = cases["grain"]
    assert case.reuse.counts is not None and case.reuse.counts[0] <= 2
    for a, b in zip(case.reuse.frames, case.plain.frames, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_a_small_moving_mouth_is_recomputed(cases: dict[str, Case]) -> None:
    case = cases["mouth"]
    assert case.reuse.counts is not None
    frames_reused, tiles_reused, tiles = case.reuse.counts
    # Held frames are reused whole; where the mouth moved, only its tiles are run again.
    assert frames_reused >= 7 and tiles_reused > frames_reused * tiles / FRAMES
    changes = [i for i in range(1, FRAMES) if np.any(case.exact[i] != case.exact[i - 1])]
    assert changes  # the mouth does move
    diff = np.any(np.stack([case.exact[i] != case.exact[i - 1] for i in changes]), axis=(0, 3))
    ys, xs = np.nonzero(diff)
    # The mouth's box, upscaled x4, with a margin for the model's reach.
    box = (slice(4 * ys.min() - 8, 4 * ys.max() + 12), slice(4 * xs.min() - 8, 4 * xs.max() + 12))
    # Measured: >= 52.9 dB in the box on every frame; the old mouth there scores 14.
    for k, (a, b) in enumerate(zip(case.reuse.frames, case.plain.frames, strict=True)):
        assert psnr(a[box], b[box], 255) >= 46, f"frame {k}: mouth not recomputed"


@pytest.mark.slow
def test_reuse_starts_afresh_in_each_segment(tmp_path: Path) -> None:
    # Lossless, so a held frame decodes bit-identical and every one is reused: the count is
    # exact. 12 frames at 23.976 fps in 0.25 s segments are two segments of 6.
    src = write_clip(tmp_path / "still.mkv", scene("still", FRAMES, HEIGHT, WIDTH), crf=0)
    one = upscale(src, tmp_path / "one.mkv")
    two = upscale(src, tmp_path / "two.mkv", "--segment-seconds", "0.25")
    assert one.counts is not None and one.counts[0] == FRAMES - 1
    assert two.counts is not None and two.counts[0] == FRAMES - 2


def test_reuse_false_in_a_job_file(tmp_path: Path) -> None:
    src = write_clip(tmp_path / "still.mkv", scene("still", 3, 24, 32), crf=0)
    jobs = tmp_path / "jobs.yaml"
    jobs.write_text(f"defaults:\n  reuse: false\njobs:\n  - input: {src.name}\n"
                    "    output: out.mkv\n", encoding="utf-8")
    text = io.StringIO()
    with contextlib.redirect_stdout(text), contextlib.redirect_stderr(text):
        assert main(["--config", str(jobs), *FAST]) == 0
    assert "reused" not in text.getvalue()
    assert len(decode_all(tmp_path / "out.mkv")) == 3


@pytest.fixture
def noisy_still(tmp_path: Path) -> Path:
    """48 frames of one drawing through x264 at CRF 18: held, but not bit-identical."""
    return write_clip(tmp_path / "still.mkv", scene("still", 48, 36, 64), crf=18)


@pytest.mark.slow
def test_a_segment_redone_on_resume_comes_out_as_in_one_run(
        noisy_still: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    whole, out = tmp_path / "whole.mkv", tmp_path / "out.mkv"
    code, err = run_cli(capsys, str(noisy_still), "-o", str(whole), *RERUN_FAST, "--crf", "0")
    assert code == 0, err
    folder = stop_at_mux(capsys, noisy_still, out, "--crf", "0")
    segment = folder / "segment-00002.nut"
    segment.write_bytes(segment.read_bytes()[:1000])  # the third of 4 segments is redone alone
    code, err = run_cli(capsys, str(noisy_still), "-o", str(out), *RERUN_FAST, "--crf", "0")
    assert code == 0, err
    assert any("continuing at segment 3" in line for line in err), err
    for k, (a, b) in enumerate(zip(decode_all(out), decode_all(whole), strict=True)):
        np.testing.assert_array_equal(a, b, err_msg=f"frame {k}")
    # Without the reset at each segment, one run would differ: its segments would reuse
    # outputs of the segments before them.
    unsegmented = tmp_path / "unsegmented.mkv"
    code, err = run_cli(capsys, str(noisy_still), "-o", str(unsegmented), *RERUN_FAST,
                        "--crf", "0", "--segment-seconds", "60")
    assert code == 0, err
    assert not all(np.array_equal(a, b) for a, b in zip(decode_all(unsegmented),
                                                        decode_all(whole), strict=True))


def test_a_rerun_without_reuse_redoes_the_segments(
        noisy_still: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out.mkv"
    stop_at_mux(capsys, noisy_still, out)
    code, err = run_cli(capsys, str(noisy_still), "-o", str(out), *RERUN_FAST, "--no-reuse")
    assert code == 0, err
    assert "upscale: out.mkv: 4 finished segments of an earlier run discarded (reuse changed " \
           "since the earlier run); redoing them" in err
