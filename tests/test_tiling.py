"""The tile plan, the stitcher, and FrameUpscaler driving a real ONNX Runtime session."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from conftest import ROOT, psnr
from draw import draw_cel

from upscaler.config import Options
from upscaler.errors import ExecutorError, MediaError, OutOfMemoryError, UsageError
from upscaler.executors.registry import tile_budget
from upscaler.frame_upscaler import FrameUpscaler
from upscaler.models.builds import onnx_file
from upscaler.models.registry import resolve_model
from upscaler.pipeline import Upscaler
from upscaler.pixels import to_planes
from upscaler.tiling import (
    WORK_TIE,
    Stitcher,
    axis_count,
    axis_tile,
    choose_tile,
    feather,
    plan_axis,
    plan_tiles,
)


class OrtExecutor:
    """A minimal Executor on a real ONNX Runtime CPU session (fp32, 2 threads)."""

    fixed_tile: tuple[int, int] | None = None

    def __init__(self, model: str) -> None:
        ref = resolve_model(model)
        assert ref.scale is not None
        self.name = f"ort-{model}"
        self.scale = ref.scale
        options = ort.SessionOptions()
        options.intra_op_num_threads = 2
        options.inter_op_num_threads = 1
        # As the job's own session (executors/onnxruntime.py): idle threads that spin took a
        # twentieth of this file's CPU, from the test worker beside it.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self._session = ort.InferenceSession(str(onnx_file(ref)), options,
                                             providers=["CPUExecutionProvider"])
        self._input = self._session.get_inputs()[0].name
        self.calls: list[tuple[int, ...]] = []

    def run(self, batch: np.ndarray) -> np.ndarray:
        self.calls.append(batch.shape)
        return self._session.run(None, {self._input: batch})[0]

    def close(self) -> None:
        pass


class FixedTileExecutor:
    """The real executor restricted to one input shape, as a Core ML model is."""

    def __init__(self, inner: OrtExecutor, tile: int, max_batch: int | None = None) -> None:
        self.inner, self.fixed_tile, self.max_batch = inner, (tile, tile), max_batch
        self.name, self.scale = "fixed", inner.scale

    def run(self, batch: np.ndarray) -> np.ndarray:
        if batch.shape[2:] != self.fixed_tile:
            raise ExecutorError(f"this model only takes {self.fixed_tile} tiles")
        if self.max_batch is not None and len(batch) > self.max_batch:
            raise OutOfMemoryError(f"batch {len(batch)} does not fit")
        return self.inner.run(batch)

    def close(self) -> None:
        pass


class ReshapingExecutor(FixedTileExecutor):
    """The real executor restricted to one shape at a time that it can be rebuilt for, as a
    Core ML executor building its package from ncnn weights is."""

    can_reshape = True

    def __init__(self, inner: OrtExecutor) -> None:
        super().__init__(inner, 1)
        self.fixed_tile = None  # type: ignore[assignment]  # no shape until the first plan
        self.shapes: list[tuple[int, int]] = []

    def reshape(self, height: int, width: int) -> None:
        self.fixed_tile = (height, width)
        self.shapes.append((height, width))


class SmallMemoryExecutor:
    """The real executor, failing as a small GPU would on inputs larger than `max_pixels`."""

    fixed_tile = None

    def __init__(self, inner: OrtExecutor, max_pixels: int) -> None:
        self.inner, self.max_pixels = inner, max_pixels
        self.name, self.scale = "small", inner.scale
        self.refused = 0

    def run(self, batch: np.ndarray) -> np.ndarray:
        if batch.shape[2] * batch.shape[3] > self.max_pixels:
            self.refused += 1
            raise OutOfMemoryError(f"{batch.shape} does not fit")
        return self.inner.run(batch)

    def close(self) -> None:
        pass


@pytest.fixture(scope="module")
def anime() -> OrtExecutor:
    return OrtExecutor("realesr-animevideov3")


@pytest.fixture(scope="module")
def frame() -> np.ndarray:
    return draw_cel(96, 128)


@pytest.fixture(scope="module")
def untiled(anime: OrtExecutor, frame: np.ndarray) -> np.ndarray:
    return FrameUpscaler(anime, tile=0).upscale(frame)


# --- The plan -------------------------------------------------------------------------------

@pytest.mark.parametrize(("height", "width", "tile", "overlap"), [
    (96, 128, 32, 8), (96, 128, 48, 16), (96, 128, 64, 16), (37, 53, 32, 8), (50, 50, 32, 16),
    (1080, 1920, 512, 16), (33, 200, 32, 0), (500, 31, 64, 30),
])
def test_plan_covers_every_pixel_with_full_tiles(height: int, width: int, tile: int,
                                                 overlap: int) -> None:
    plan = plan_tiles(height, width, tile, overlap, scale=4)
    hits = np.zeros(plan.padded_shape, np.int32)
    for t in plan.tiles:
        assert (t.y.stop - t.y.start, t.x.stop - t.x.start) == (tile, tile) == plan.tile
        assert (t.out_y.start, t.out_x.start) == (t.y.start * 4, t.x.start * 4)
        assert (t.out_y.stop, t.out_x.stop) == (t.y.stop * 4, t.x.stop * 4)
        hits[t.y, t.x] += 1
    assert hits.min() >= 1
    for axis, length in ((plan.rows, height), (plan.cols, width)):
        starts = [s.start for s in axis.spans]
        # Edge tiles are shifted inward: nothing past the image unless it is shorter than a tile.
        assert axis.padded == max(length, tile)
        assert starts[0] == 0 and axis.spans[-1].stop == axis.padded
        overlaps = [a.stop - b.start for a, b in zip(axis.spans, axis.spans[1:], strict=False)]
        assert all(o >= overlap for o in overlaps)
        # Counted first, then spread evenly: the overlaps differ by at most one pixel.
        assert not overlaps or max(overlaps) - min(overlaps) <= 1
        assert [s.before for s in axis.spans[1:]] == overlaps
        assert [s.after for s in axis.spans[:-1]] == overlaps


def test_plan_uses_the_fewest_tiles() -> None:
    assert len(plan_axis(128, 48, 16).spans) == 4  # 3 would leave overlaps of 8
    assert len(plan_axis(112, 48, 16).spans) == 3
    assert len(plan_axis(48, 48, 16).spans) == 1


# --- Choosing the tile shape by memory ---------------------------------------------------------

# Budgets in input pixels: x4plus-anime (16 KiB a pixel) and animevideov3 (1152 bytes) each in
# 2 GiB, as onnxruntime gets them with 8 GiB of RAM (registry.tile_budget).
X4PLUS_BUDGET = (2 << 30) // (16 << 10)
ANIMEVIDEO_BUDGET = (2 << 30) // 1152


def grid_counts(height: int, width: int, shape: tuple[int, int], overlap: int) -> tuple[int, int]:
    return axis_count(height, shape[0], overlap), axis_count(width, shape[1], overlap)


@pytest.mark.parametrize(("height", "width"), [(180, 320), (96, 128), (1, 1), (5, 3000)])
def test_whole_frame_when_it_fits(height: int, width: int) -> None:
    assert choose_tile(height, width, 16) == (height, width)  # no limits at all
    assert choose_tile(height, width, 16, max_pixels=height * width) == (height, width)
    assert choose_tile(height, width, 16, max_side=max(height, width)) == (height, width)
    assert choose_tile(180, 320, 16, max_pixels=X4PLUS_BUDGET) == (180, 320)


def every_grid(height: int, width: int, overlap: int, max_pixels: int,
               max_side: int) -> dict[tuple[int, int], tuple[int, int]]:
    """Model pixels and tile count of every grid of equal, evenly dividing tiles that covers
    the frame within the limits, by tile shape; grids that cannot come within WORK_TIE of the
    least work (they cover at least (H + (rows-1) overlap) x (W + (cols-1) overlap)) are left
    out."""
    grids: dict[tuple[int, int], tuple[int, int]] = {}

    def hopeless(rows: int, cols: int) -> bool:
        least = min((work for work, _ in grids.values()), default=None)
        bound = (height + (rows - 1) * overlap) * (width + (cols - 1) * overlap)
        return least is not None and bound > least * WORK_TIE

    for rows in range(1, height + 1):
        tile_h = axis_tile(height, rows, overlap)
        if (rows > 1 and tile_h <= overlap) or hopeless(rows, 1):
            break
        for cols in range(1, width + 1):
            tile_w = axis_tile(width, cols, overlap)
            if (cols > 1 and tile_w <= overlap) or hopeless(rows, cols):
                break
            if tile_h * tile_w <= max_pixels and max(tile_h, tile_w) <= max_side:
                count = int(np.prod(grid_counts(height, width, (tile_h, tile_w), overlap)))
                grids[tile_h, tile_w] = (count * tile_h * tile_w, count)
    return grids


@pytest.mark.parametrize(("height", "width", "overlap", "max_pixels", "max_side"), [
    (180, 320, 16, 40_000, 10_000), (180, 320, 16, 10_000, 10_000), (720, 1280, 16,
    X4PLUS_BUDGET, 10_000), (1080, 1920, 16, X4PLUS_BUDGET, 10_000), (1080, 1920, 16,
    ANIMEVIDEO_BUDGET, 10_000), (1080, 1920, 16, 10**9, 512), (97, 301, 8, 3000, 64),
    (360, 640, 32, 20_000, 150), (720, 1280, 16, 97_656, 10_000), (1080, 1920, 16, 110_196,
    10_000),
])
def test_least_work_tiles_that_fit_divide_the_frame_evenly(
        height: int, width: int, overlap: int, max_pixels: int, max_side: int) -> None:
    shape = choose_tile(height, width, overlap, max_pixels=max_pixels, max_side=max_side)
    tile_h, tile_w = shape
    assert tile_h * tile_w <= max_pixels and max(shape) <= max_side
    rows, cols = grid_counts(height, width, shape, overlap)
    # Against every grid that fits: the least work, or within 1% of it with fewer tiles.
    grids = every_grid(height, width, overlap, max_pixels, max_side)
    least = min(work for work, _ in grids.values())
    work, count = grids[shape]
    assert work <= least * WORK_TIE
    assert count == min(n for w, n in grids.values() if w <= least * WORK_TIE)
    # Even division: each axis's tile is the shortest that its count of tiles can have.
    assert tile_h == axis_tile(height, rows, overlap) and tile_w == axis_tile(width, cols, overlap)
    plan = plan_tiles(height, width, shape, overlap, scale=4, pad_to_tile=False)
    assert len(plan.tiles) == rows * cols == count and plan.model_pixels == work
    assert plan.padded_shape == (height, width)
    hits = np.zeros((height, width), np.int32)
    for t in plan.tiles:
        assert (t.y.stop - t.y.start, t.x.stop - t.x.start) == shape
        hits[t.y, t.x] += 1
    assert hits.min() >= 1
    for axis in (plan.rows, plan.cols):
        overlaps = [a.stop - b.start for a, b in zip(axis.spans, axis.spans[1:], strict=False)]
        assert all(o >= overlap for o in overlaps)
        # A tile count divides an axis evenly, so no overlap is much more than asked for.
        assert all(o < overlap + len(axis.spans) for o in overlaps)


def test_rectangular_tiles_where_they_waste_less() -> None:
    # Two tiles for 1920x1080 animevideov3: side by side, 968x1080, not stacked 1920x548.
    assert choose_tile(1080, 1920, 16, max_pixels=ANIMEVIDEO_BUDGET) == (1080, 968)
    assert choose_tile(1920, 1080, 16, max_pixels=ANIMEVIDEO_BUDGET) == (968, 1080)
    # A 320-px axis in two: 168 px each, not the 256 + 256 of a fixed square tile.
    assert choose_tile(180, 320, 16, max_pixels=180 * 200) == (180, 168)


@pytest.mark.parametrize(("executor", "model", "frame", "most"), [
    ("ncnn", "realesrgan-x4plus-anime", (180, 320), 0.0),
    ("ncnn", "realesrgan-x4plus-anime", (720, 1280), 0.061),
    ("ncnn", "realesrgan-x4plus-anime", (1080, 1920), 0.076),
    ("onnxruntime", "realesrgan-x4plus-anime", (1080, 1920), 0.076),
    ("ncnn", "realesr-animevideov3", (720, 1280), 0.013),
    ("ncnn", "realesr-animevideov3", (1080, 1920), 0.024),
])
def test_overlap_share_of_model_work_at_default_budgets(executor: str, model: str,
                                                        frame: tuple[int, int],
                                                        most: float) -> None:
    # The budget of a machine with 24 GiB of RAM, most of it free: the 2 GiB cap.
    budget = tile_budget(executor, resolve_model(model), total_memory=24 << 30,
                         free_memory=20 << 30)
    height, width = frame
    plan = plan_tiles(height, width, choose_tile(height, width, 16, max_pixels=budget), 16,
                      scale=4, pad_to_tile=False)
    assert plan.model_pixels >= height * width
    assert plan.overlap_share <= most < 0.10


def test_choose_tile_is_symmetric_in_its_axes() -> None:
    for height, width in [(180, 320), (1080, 1920), (97, 301)]:
        for budget in (3000, 20_000, X4PLUS_BUDGET):
            tall = choose_tile(width, height, 8, max_pixels=budget)
            wide = choose_tile(height, width, 8, max_pixels=budget)
            count = np.prod(grid_counts(height, width, wide, 8))
            assert count == np.prod(grid_counts(width, height, tall, 8))


def test_choose_tile_refuses_limits_no_tile_fits() -> None:
    with pytest.raises(UsageError):
        choose_tile(100, 100, 16, max_pixels=200)
    with pytest.raises(UsageError):
        choose_tile(100, 100, 16, max_side=16)


def test_only_an_axis_shorter_than_the_tile_is_padded() -> None:
    plan = plan_tiles(20, 100, 32, 8, scale=2)
    assert plan.padded_shape == (32, 100)
    assert len(plan.rows.spans) == 1 and len(plan.cols.spans) == 4
    image = np.arange(20 * 100 * 3, dtype=np.uint16).reshape(20, 100, 3)
    padded = plan.pad(image)
    assert padded.shape == (32, 100, 3) and padded.dtype == image.dtype
    np.testing.assert_array_equal(padded[:20], image)
    np.testing.assert_array_equal(padded[20:], image[18:6:-1])  # mirrored, not invented
    assert plan.crop(np.zeros((64, 200, 3))).shape == (40, 200, 3)
    assert plan_tiles(40, 100, 32, 8).pad(image) is image


@pytest.mark.parametrize(("tile", "overlap"), [(16, 16), (8, 16), (32, -1)])
def test_plan_rejects_tiles_no_larger_than_the_overlap(tile: int, overlap: int) -> None:
    with pytest.raises(UsageError):
        plan_tiles(64, 64, tile, overlap)


def test_feather_ramps_only_between_tiles() -> None:
    first, middle, last = plan_axis(100, 40, 10).spans
    for span in (first, middle, last):
        w = feather(span, 2)
        assert w.shape == (80,) and w.min() > 0 and w.max() == 1
    assert feather(first, 2)[0] == 1 and feather(last, 2)[-1] == 1  # image borders: no ramp
    assert feather(middle, 2)[0] < 0.01 and feather(middle, 2)[-1] < 0.01
    assert feather(middle, 2)[40] == 1  # the centre


@pytest.mark.parametrize(("height", "width", "tile", "overlap"), [
    (96, 128, 32, 8), (37, 53, 16, 4), (50, 50, 32, 16), (20, 70, 32, 8),
])
def test_stitching_exact_tiles_gives_back_the_exact_frame(height: int, width: int, tile: int,
                                                          overlap: int) -> None:
    # Tiles upscaled by pixel repetition agree wherever they overlap, so any blending weights
    # that are normalised correctly must reproduce the repeated frame exactly: blended in
    # float and rounded back, equal values give back the very same pixels.
    image = np.random.default_rng(1).integers(0, 256, (height, width, 3), np.uint8)
    plan = plan_tiles(height, width, tile, overlap, scale=2)
    padded = plan.pad(image)
    stitcher = Stitcher(plan)
    for t in plan.tiles:
        stitcher.add(t, padded[t.y, t.x].repeat(2, axis=0).repeat(2, axis=1))
    result = stitcher.result()
    assert result.dtype == np.uint8
    np.testing.assert_array_equal(result, image.repeat(2, axis=0).repeat(2, axis=1))


def test_stitcher_refuses_wrong_or_missing_tiles() -> None:
    plan = plan_tiles(64, 64, 48, 16, scale=2)
    stitcher = Stitcher(plan)
    with pytest.raises(ExecutorError):
        stitcher.add(plan.tiles[0], np.zeros((48, 48, 3), np.uint8))
    with pytest.raises(ExecutorError):
        stitcher.add(plan.tiles[0], np.zeros((3, 96, 96), np.uint8))  # channels first
    stitcher.add(plan.tiles[0], np.zeros((96, 96, 3), np.uint8))
    with pytest.raises(ExecutorError):
        stitcher.result()


# --- FrameUpscaler on real ONNX Runtime -----------------------------------------------------

def test_untiled_run_is_one_call_clamped(anime: OrtExecutor, frame: np.ndarray) -> None:
    upscaler = FrameUpscaler(anime, tile=0)
    out = upscaler.upscale(frame)
    assert out.shape == (384, 512, 3) and out.dtype == np.uint8
    raw = anime.run(to_planes(frame[None]))  # the float planes the model was given
    assert raw.min() < 0 or raw.max() > 1  # the model overshoots on line art...
    # ...and the frame is clamped (and rounded), not wrapped around
    clamped = np.clip(np.rint(raw[0].transpose(1, 2, 0) * 255), 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(out, clamped)
    assert upscaler.tiles_run == 1 and upscaler.plans_built == 1
    assert anime.calls[-2] == (1, 3, 96, 128)


# Measured 49.9, 59.0 and 61.1 dB on the uint8 frames, as bench/tile_quality.py and README
# give them (float frames, before the frame path kept pixels, scored 51.1, 63.2 and 65.5 dB:
# most of the drop is the rounding of both outputs to uint8).
@pytest.mark.parametrize(("tile", "overlap", "min_db"), [(32, 8, 47), (48, 16, 56), (64, 16, 58)])
def test_tiled_matches_untiled(anime: OrtExecutor, frame: np.ndarray, untiled: np.ndarray,
                               tile: int, overlap: int, min_db: float) -> None:
    upscaler = FrameUpscaler(anime, tile=tile, overlap=overlap)
    out = upscaler.upscale(frame)
    assert out.shape == untiled.shape
    assert psnr(out, untiled, 255) >= min_db
    assert upscaler.tiles_run == len(plan_tiles(96, 128, tile, overlap).tiles) > 1


@pytest.mark.slow  # 3.7-6.3 s on the shared 2-core machine
def test_tiled_matches_untiled_for_x4plus_anime() -> None:
    executor = OrtExecutor("realesrgan-x4plus-anime")
    frame = draw_cel(64, 96)
    whole = FrameUpscaler(executor).upscale(frame)
    # Evenly divided tiles overlap by little more than asked: RRDBNet wants 24 px for 45 dB
    # where animevideov3 is content with 8 (bench/tile_quality.py).
    tiled = FrameUpscaler(executor, tile=48, overlap=24).upscale(frame)
    assert psnr(tiled, whole, 255) >= 46  # measured 49.2 dB


def test_frame_smaller_than_the_tile_is_not_padded_for_a_flexible_executor(
        anime: OrtExecutor) -> None:
    frame = draw_cel(24, 40)
    anime.calls.clear()
    out = FrameUpscaler(anime, tile=64).upscale(frame)
    assert anime.calls == [(1, 3, 24, 40)]  # padding to 64x64 would be wasted work
    np.testing.assert_array_equal(out, FrameUpscaler(anime).upscale(frame))


def test_an_axis_shorter_than_the_tile_gets_tiles_of_its_length(anime: OrtExecutor) -> None:
    frame = draw_cel(24, 100)
    anime.calls.clear()
    out = FrameUpscaler(anime, tile=64, overlap=16).upscale(frame)
    # Two tiles divide the 100 px axis evenly: 58 + 58 with an overlap of 16.
    assert {shape[2:] for shape in anime.calls} == {(24, 58)} and len(anime.calls) == 2
    assert out.shape == (96, 400, 3)


def test_frame_smaller_than_a_fixed_tile_is_reflect_padded(anime: OrtExecutor) -> None:
    frame = draw_cel(24, 40)
    anime.calls.clear()
    out = FrameUpscaler(FixedTileExecutor(anime, 64)).upscale(frame)
    assert anime.calls == [(1, 3, 64, 64)]
    assert out.shape == (96, 160, 3)
    # Only the model's view of the bottom and right borders differs (mirrored pixels there
    # instead of its zero padding); misplaced cropping would score far lower.
    assert psnr(out, FrameUpscaler(anime).upscale(frame), 255) >= 35  # measured 38.6 dB


def test_odd_frame_size(anime: OrtExecutor) -> None:
    frame = draw_cel(37, 53)
    out = FrameUpscaler(anime, tile=32, overlap=8).upscale(frame)
    assert out.shape == (148, 212, 3)
    assert psnr(out, FrameUpscaler(anime).upscale(frame), 255) >= 47  # measured 50.4 dB


def test_batch_size_does_not_change_the_result(anime: OrtExecutor, frame: np.ndarray) -> None:
    anime.calls.clear()
    one = FrameUpscaler(anime, tile=32, overlap=8, batch=1).upscale(frame)
    n_tiles = len(anime.calls)
    anime.calls.clear()
    three = FrameUpscaler(anime, tile=32, overlap=8, batch=3).upscale(frame)
    assert n_tiles == 20  # 4 rows x 5 columns; 20 = 6 * 3 + 2, so the last batch is short
    assert [c[0] for c in anime.calls] == [3] * 6 + [2]
    np.testing.assert_array_equal(one, three)


def test_fixed_tile_executor_forces_its_tile(anime: OrtExecutor, frame: np.ndarray,
                                             untiled: np.ndarray) -> None:
    upscaler = FrameUpscaler(FixedTileExecutor(anime, 48), tile=0, overlap=16, batch=None)
    anime.calls.clear()
    assert psnr(upscaler.upscale(frame), untiled, 255) >= 61  # measured 63.9 dB
    assert upscaler.plan(96, 128).tile == (48, 48)
    # None batches all of a frame's tiles into one call on a fixed-shape executor.
    assert anime.calls == [(len(upscaler.plan(96, 128).tiles), 3, 48, 48)]


def test_fixed_tile_executor_out_of_memory_halves_the_batch(anime: OrtExecutor) -> None:
    frame = draw_cel(64, 80)
    executor = FixedTileExecutor(anime, 48, max_batch=1)
    upscaler = FrameUpscaler(executor, overlap=16, batch=4)
    out = upscaler.upscale(frame)
    assert (upscaler.batch, upscaler.plan(64, 80).tile, upscaler.oom_retries) == (1, (48, 48), 2)
    assert psnr(out, FrameUpscaler(anime).upscale(frame), 255) >= 61  # measured 63.8 dB


def test_out_of_memory_shrinks_the_tile_and_keeps_it(anime: OrtExecutor, frame: np.ndarray,
                                                     untiled: np.ndarray) -> None:
    executor = SmallMemoryExecutor(anime, max_pixels=48 * 48)
    upscaler = FrameUpscaler(executor, tile=0, overlap=16)
    out = upscaler.upscale(frame)
    # Whole frame, then 64 (512 and above exceed the frame), then 32, which fits.
    assert upscaler.tile == 32 and executor.refused == 2 and upscaler.oom_retries == 2
    assert psnr(out, untiled, 255) >= 53  # measured 55.9 dB
    upscaler.upscale(frame)
    assert executor.refused == 2 and upscaler.frames_run == 2


def test_memory_budget_runs_whole_frames_that_fit(anime: OrtExecutor, frame: np.ndarray,
                                                  untiled: np.ndarray) -> None:
    anime.calls.clear()
    upscaler = FrameUpscaler(anime, overlap=16, max_pixels=96 * 128)
    np.testing.assert_array_equal(upscaler.upscale(frame), untiled)
    assert anime.calls == [(1, 3, 96, 128)]


def test_memory_budget_cuts_the_fewest_even_tiles(anime: OrtExecutor, frame: np.ndarray,
                                                  untiled: np.ndarray) -> None:
    anime.calls.clear()
    upscaler = FrameUpscaler(anime, overlap=16, max_pixels=96 * 80)
    out = upscaler.upscale(frame)
    # Two 96x72 tiles (72 + 72 - 16 = 128), not a grid of squares.
    assert anime.calls == [(1, 3, 96, 72)] * 2
    assert upscaler.pixels_run == 2 * 96 * 72 and upscaler.frame_pixels == 96 * 128
    assert psnr(out, untiled, 255) >= 63  # measured 66.2 dB


def test_a_reshaping_executor_gets_the_planned_shape(anime: OrtExecutor, frame: np.ndarray,
                                                     untiled: np.ndarray) -> None:
    executor = ReshapingExecutor(anime)
    upscaler = FrameUpscaler(executor, overlap=16, batch=None, max_pixels=96 * 128)
    anime.calls.clear()
    np.testing.assert_array_equal(upscaler.upscale(frame), untiled)
    assert executor.shapes == [(96, 128)] and anime.calls == [(1, 3, 96, 128)]
    # A frame over the budget: the shape of its even tiles, all of them in one call, no padding.
    small = FrameUpscaler(executor, overlap=16, batch=None, max_pixels=96 * 80)
    anime.calls.clear()
    assert psnr(small.upscale(frame), untiled, 255) >= 63  # measured 66.2 dB
    assert executor.shapes[-1] == (96, 72) and anime.calls == [(2, 3, 96, 72)]
    small.upscale(frame)
    assert len(executor.shapes) == 2  # the same frame size keeps its shape


def test_out_of_memory_under_a_budget_halves_the_tile(anime: OrtExecutor, frame: np.ndarray,
                                                      untiled: np.ndarray) -> None:
    # The budget estimate was too generous: the whole frame fails, then 64-px tiles do.
    executor = SmallMemoryExecutor(anime, max_pixels=40 * 40)
    upscaler = FrameUpscaler(executor, overlap=16, max_pixels=96 * 128)
    out = upscaler.upscale(frame)
    assert upscaler.tile == 32 and executor.refused == 2
    assert max(upscaler.plan(96, 128).tile) <= 32
    assert psnr(out, untiled, 255) >= 53  # measured 55.9 dB


def test_out_of_memory_at_the_smallest_tile_raises(anime: OrtExecutor) -> None:
    frame = draw_cel(40, 40)
    upscaler = FrameUpscaler(SmallMemoryExecutor(anime, max_pixels=16 * 16), tile=64)
    with pytest.raises(OutOfMemoryError):
        upscaler.upscale(frame)
    assert upscaler.tile == 32


def test_plan_is_built_once_per_frame_size(anime: OrtExecutor) -> None:
    upscaler = FrameUpscaler(anime, tile=32, overlap=8)
    small = draw_cel(40, 48)
    for _ in range(3):
        upscaler.upscale(small)
    assert upscaler.plans_built == 1 and upscaler.frames_run == 3
    upscaler.upscale(draw_cel(48, 40))
    assert upscaler.plans_built == 2


def test_rejects_bad_arguments(anime: OrtExecutor) -> None:
    with pytest.raises(UsageError):
        FrameUpscaler(anime, tile=16, overlap=16)
    with pytest.raises(UsageError):
        FrameUpscaler(anime, tile=64, batch=0)
    with pytest.raises(MediaError):
        FrameUpscaler(anime).upscale(np.zeros((8, 8), np.uint8))
    with pytest.raises(MediaError):
        FrameUpscaler(anime).upscale(np.zeros((8, 8, 3), np.float32))  # pixels, not floats


@pytest.mark.parametrize("make", [lambda ex: ex, lambda ex: FixedTileExecutor(ex, 32)])
def test_border_padding_keeps_flat_frames_flat(anime: OrtExecutor, make: object) -> None:
    """Whole frames, tiles and fixed-shape tiles: every one touching the frame edge is padded."""
    flat = np.full((20, 44, 3), (200, 60, 30), np.uint8)
    executor = make(anime)  # type: ignore[operator]
    # Twice the border, as the pipeline sets it (pipeline._overlap): at 8 px the seams are
    # 2 levels off.
    upscaler = FrameUpscaler(executor, tile=48, overlap=20, border=10)
    out = upscaler.upscale(flat).astype(np.int32)
    assert out.shape == (80, 176, 3)
    assert np.abs(out - out[40, 88]).max() <= 1  # measured 1; 6 and 4 without the border
    bare = FrameUpscaler(executor, tile=48, overlap=8).upscale(flat).astype(np.int32)
    assert np.abs(bare - bare[40, 88]).max() >= 4


@pytest.mark.parametrize(("model", "given", "tile", "expected"), [
    ("realesrgan-x4plus-anime", None, None, 24),  # the model's own
    ("realesr-animevideov3", None, None, 20),  # 16, raised to twice its 10-px border
    ("realesr-animevideov3", 30, None, 30),  # the user's, when larger
    ("realesrgan-x4plus-anime", 4, None, 10),  # ...and never below twice the border
    ("realesrgan-x4plus-anime", None, 32, 16),  # a small --tile keeps it to half a tile
])
def test_overlap_defaults_to_the_models(model: str, given: int | None, tile: int | None,
                                        expected: int) -> None:
    options = Options(model=model, executor="onnxruntime", overlap=given, tile=tile)
    with Upscaler(options) as upscaler:
        assert upscaler.frames.overlap == expected
        assert upscaler.identity()["overlap"] == str(expected)


# docs/performance.md's overlap table, as the job plans it: the default overlap of each model
# (24 px for x4plus-anime, 2x the 10-px border for animevideov3), the budget with 24 GiB of RAM
# (the 2 GiB cap decides), the frame padded by the model's border first.
README_TABLE = [
    ("realesrgan-x4plus-anime", "ncnn", ["0, whole (+8.9%)", "10.8%, 9 tiles (+2.2%)",
                                         "12.3%, 20 tiles (+1.5%)"]),
    ("realesrgan-x4plus-anime", "onnxruntime", ["0, whole (+8.9%)", "9.2%, 8 tiles (+2.2%)",
                                                "11.2%, 18 tiles (+1.5%)"]),
    ("realesrgan-x4plus-anime", "coreml", ["0, whole (+8.9%)", "5.2%, 4 tiles (+2.2%)",
                                           "7.3%, 9 tiles (+1.5%)"]),
    ("realesr-animevideov3", "ncnn", ["0, whole (+18.1%)", "1.5%, 2 tiles (+4.4%)",
                                      "4.1%, 5 tiles (+2.9%)"]),
]


@pytest.mark.parametrize(("name", "executor", "cells"), README_TABLE)
def test_readme_overlap_table_at_the_default_overlap(name: str, executor: str,
                                                     cells: list[str]) -> None:
    from upscaler.models.registry import resolve_model
    from upscaler.pipeline import _overlap

    model = resolve_model(name)
    overlap = _overlap(Options(), model)
    assert overlap == (24 if "x4plus" in name else 20)
    budget = tile_budget(executor, model, total_memory=24 << 30, free_memory=24 << 30)
    readme = (ROOT / "docs" / "performance.md").read_text(encoding="utf-8")
    for (height, width), cell in zip([(180, 320), (720, 1280), (1080, 1920)], cells,
                                     strict=True):
        h, w = height + 2 * model.border, width + 2 * model.border
        plan = plan_tiles(h, w, choose_tile(h, w, overlap, max_pixels=budget), overlap,
                          model.scale, pad_to_tile=False)
        work = f"{100 * plan.overlap_share:.1f}%" if len(plan.tiles) > 1 else "0"
        tiles = f"{len(plan.tiles)} tiles" if len(plan.tiles) > 1 else "whole"
        border = f"+{100 * (h * w / (height * width) - 1):.1f}%"
        assert f"{work}, {tiles} ({border})" == cell
        assert f"| {width}x{height} |" in readme and cell in readme
