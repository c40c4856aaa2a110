"""Milliseconds per frame spent blending tiles, without any model: the CPU cost that a fast GPU
executor would wait on.

    python bench/bench_stitch.py [--height 1080] [--width 1920] [--tile 512] [--scale 4]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from upscaler.tiling import Stitcher, plan_tiles


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--height", type=int, default=1080)
    parser.add_argument("--width", type=int, default=1920)
    parser.add_argument("--tile", type=int, default=512)
    parser.add_argument("--overlap", type=int, default=16)
    parser.add_argument("--scale", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    plan = plan_tiles(args.height, args.width, args.tile, args.overlap, args.scale,
                      pad_to_tile=False)
    rng = np.random.default_rng(0)
    tiles = [rng.random((3, t.out_y.stop - t.out_y.start, t.out_x.stop - t.out_x.start),
                        dtype=np.float32) for t in plan.tiles]
    best = float("inf")
    for _ in range(args.repeat):
        start = time.perf_counter()
        stitcher = Stitcher(plan)
        for tile, upscaled in zip(plan.tiles, tiles, strict=True):
            stitcher.add(tile, upscaled)
        stitcher.result()
        best = min(best, time.perf_counter() - start)
    print(f"{args.height}x{args.width} x{args.scale}, {len(plan.tiles)} tiles of {args.tile}: "
          f"{best * 1000:.0f} ms per frame (best of {args.repeat})")


if __name__ == "__main__":
    main()
