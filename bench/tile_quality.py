"""What tiling costs in quality: PSNR of tiled against untiled upscaling of a drawn cel.

    python bench/tile_quality.py --size 96x128 --threads 2

For each model and each (tile, overlap), the cel is upscaled once whole and once tiled through
FrameUpscaler, and the two are compared. The differences come from the model seeing zeros
instead of neighbouring pixels at tile edges; the overlap and feathering exist to hide them. The
time column is one tiled run, only a rough guide on a shared CPU (bench_executors.py measures
speed properly).
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

from upscaler.executors.base import ExecutorOptions  # noqa: E402
from upscaler.executors.registry import create_executor  # noqa: E402
from upscaler.frame_upscaler import FrameUpscaler  # noqa: E402
from upscaler.models.registry import resolve_model  # noqa: E402

MODELS = ("realesr-animevideov3", "realesrgan-x4plus-anime")
CASES = ((32, 8), (32, 16), (48, 8), (48, 16), (64, 16), (64, 32))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(1 / mse)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="96x128", help="cel height x width (default 96x128)")
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--executor", default="onnxruntime")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    height, width = (int(v) for v in args.size.lower().split("x"))
    frame = draw_cel(height, width).astype(np.float32) / 255
    options = ExecutorOptions(precision="fp32", threads=args.threads)

    print(f"cel {height}x{width}, {args.executor} fp32, {args.threads} threads")
    print(f"{'model':<26}{'tile':>5}{'overlap':>8}{'tiles':>6}{'PSNR dB':>9}{'time s':>8}")
    for name in args.models:
        with contextlib.closing(create_executor(args.executor, resolve_model(name), options)) as ex:
            whole = FrameUpscaler(ex, tile=0).upscale(frame)
            for tile, overlap in CASES:
                upscaler = FrameUpscaler(ex, tile=tile, overlap=overlap)
                start = time.perf_counter()
                tiled = upscaler.upscale(frame)
                seconds = time.perf_counter() - start
                print(f"{name:<26}{tile:>5}{overlap:>8}{upscaler.tiles_run:>6}"
                      f"{psnr(tiled, whole):>9.2f}{seconds:>8.2f}")


if __name__ == "__main__":
    main()
