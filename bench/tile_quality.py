"""What tiling costs in quality: PSNR of tiled against untiled upscaling of a drawn cel.

    python bench/tile_quality.py --size 96x128 --threads 2
    python bench/tile_quality.py --plans 360x640 480x854 --models realesrgan-x4plus-anime

For each model and each (largest tile side, overlap), the cel is upscaled once whole and once
tiled through FrameUpscaler (the fewest tiles under that side, dividing the frame evenly), and
the two are compared. The differences come from the model seeing zeros instead of neighbouring
pixels at tile edges; the overlap and feathering exist to hide them.

--plans compares, on frames of the given sizes, the default tile plans users get: the memory
rule (tiling.choose_tile under the executor's budget, registry.tile_budget, at each of
--overlaps) against the fixed square tiles of earlier versions (256 px for x4plus-anime, 1024
for animevideov3, overlap 16), each against the untiled frame, with the model work of each plan
and the share of 8-bit output values that differ from the untiled frame's (and the largest
difference). The time column is one run, only a rough guide on a shared CPU
(bench_executors.py measures speed properly).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "samples")]

from draw import draw_cel  # noqa: E402

from upscaler.executors.base import Executor, ExecutorOptions  # noqa: E402
from upscaler.executors.registry import create_executor, tile_budget  # noqa: E402
from upscaler.frame_upscaler import FrameUpscaler  # noqa: E402
from upscaler.models.registry import resolve_model  # noqa: E402
from upscaler.pixels import run_pixels  # noqa: E402
from upscaler.tiling import Stitcher, TilePlan, choose_tile, plan_tiles  # noqa: E402

MODELS = ("realesr-animevideov3", "realesrgan-x4plus-anime")
CASES = ((32, 8), (32, 16), (48, 8), (48, 16), (48, 24), (64, 16), (64, 24), (64, 32))
OLD_SQUARE = {"realesrgan-x4plus-anime": 256, "realesr-animevideov3": 1024}


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR of two 8-bit frames, as the job writes them."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255**2 / mse)


def parse_size(text: str) -> tuple[int, int]:
    height, width = (int(v) for v in text.lower().split("x"))
    return height, width


def changed_8bit(a: np.ndarray, b: np.ndarray) -> tuple[float, int]:
    """Share of 8-bit output values that differ, and the largest step."""
    diff = np.abs(a.astype(np.int16) - b.astype(np.int16))
    return float(np.count_nonzero(diff)) / diff.size, int(diff.max())


def run_plan(executor: Executor, frame: np.ndarray, plan: TilePlan) -> np.ndarray:
    """`frame` (H, W, 3) upscaled tile by tile along `plan`, as FrameUpscaler would."""
    stitcher = Stitcher(plan)
    for tile in plan.tiles:
        piece = np.ascontiguousarray(frame[None, tile.y, tile.x])
        stitcher.add(tile, run_pixels(executor, piece)[0])
    return stitcher.result()


def cases(executor: Executor, name: str, height: int, width: int) -> None:
    frame = draw_cel(height, width)
    whole = FrameUpscaler(executor).upscale(frame)
    for tile, overlap in CASES:
        upscaler = FrameUpscaler(executor, tile=tile, overlap=overlap)
        start = time.perf_counter()
        tiled = upscaler.upscale(frame)
        seconds = time.perf_counter() - start
        shape = "x".join(map(str, upscaler.plan(height, width).tile))
        print(f"{name:<26}{tile:>5}{overlap:>8}{shape:>8}{upscaler.tiles_run:>6}"
              f"{psnr(tiled, whole):>9.2f}{seconds:>8.2f}", flush=True)


def plans(executor: Executor, name: str, height: int, width: int, overlaps: list[int],
          budget: int) -> None:
    frame = draw_cel(height, width)
    whole = FrameUpscaler(executor).upscale(frame)
    scale = executor.scale
    candidates = {f"square {OLD_SQUARE[name]}/16": plan_tiles(
        height, width, OLD_SQUARE[name], 16, scale, pad_to_tile=False)}
    for overlap in overlaps:
        shape = choose_tile(height, width, overlap, max_pixels=budget)
        candidates[f"memory /{overlap}"] = plan_tiles(height, width, shape, overlap, scale,
                                                      pad_to_tile=False)
    for label, plan in candidates.items():
        start = time.perf_counter()
        out = run_plan(executor, frame, plan)
        seconds = time.perf_counter() - start
        shape = "x".join(map(str, plan.tile))
        share, step = changed_8bit(out, whole)
        print(f"{name:<26}{height}x{width:<6}{label:<14}{shape:>9}{len(plan.tiles):>6}"
              f"{plan.overlap_share:>9.1%}{psnr(out, whole):>9.2f}{share:>10.4%}{step:>5}"
              f"{seconds:>8.1f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="96x128", help="cel height x width (default 96x128)")
    parser.add_argument("--plans", nargs="*", default=None, metavar="HxW",
                        help="compare the default plans on frames of these sizes instead")
    parser.add_argument("--overlaps", type=int, nargs="+", default=[16],
                        help="overlaps of the memory plans for --plans (default 16)")
    parser.add_argument("--budget-executor", default=None,
                        help="whose memory budget the plans follow (default: --executor)")
    parser.add_argument("--memory", type=float, default=None,
                        help="GiB of RAM (total and available) the budget assumes "
                             "(default: measured)")
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--executor", default="onnxruntime")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    options = ExecutorOptions(precision="fp32", threads=args.threads)

    print(f"{args.executor} fp32, {args.threads} threads")
    if args.plans is None:
        height, width = parse_size(args.size)
        print(f"cel {height}x{width}")
        print(f"{'model':<26}{'tile':>5}{'overlap':>8}{'shape':>8}{'tiles':>6}{'PSNR dB':>9}"
              f"{'time s':>8}")
    else:
        print(f"{'model':<26}{'frame':<11}{'plan':<14}{'tile':>9}{'tiles':>6}{'overlap':>9}"
              f"{'PSNR dB':>9}{'8-bit chg':>10}{'max':>5}{'time s':>8}")
    for name in args.models:
        with contextlib.closing(create_executor(args.executor, resolve_model(name), options)) as ex:
            if args.plans is None:
                cases(ex, name, height, width)
            # The budget is taken before any run: a whole frame's activations, freed to the
            # allocator, would otherwise shrink the "available" memory it is measured from.
            ram = None if args.memory is None else int(args.memory * (1 << 30))
            budget = tile_budget(args.budget_executor or args.executor, resolve_model(name),
                                 free_memory=ram, total_memory=ram)
            for size in args.plans or ():
                plans(ex, name, *parse_size(size), args.overlaps, budget)


if __name__ == "__main__":
    main()
