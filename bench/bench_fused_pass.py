"""A compiled fused pass against the writer's OpenCV conversions, on one 4K frame.

The model's float output becomes pixels (`pixels.from_planes`) and the pixels become the
encoder's yuv420p planes (`YuvConverter.convert`): two OpenCV passes and some copies. This
times one numba kernel that does both in a pass over the float planes, as docs/fast_path.md
(0.2.15) reports. numba is not a dependency of upscaler; run it where it is installed:

    pip install numba && python bench/bench_fused_pass.py
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from upscaler.media.video.ycbcr import yuv_matrix
from upscaler.media.video.yuv import converter
from upscaler.pixels import from_planes

HEIGHT, WIDTH = 2160, 3840


def fused_kernel() -> Callable[..., None]:
    import numba

    @numba.njit(parallel=True, fastmath=True, cache=True)
    def fused(planes, m, rgb, y, cb, cr):  # type: ignore[no-untyped-def]
        # A pair of rows an iteration (one row of 4:2:0 chroma), each plane in a loop of its
        # own so that LLVM vectorises it; the rounded values stay in floats for the matrix.
        height, width = planes.shape[1], planes.shape[2]
        zero, top, half = np.float32(0.0), np.float32(255.0), np.float32(0.5)
        y0, y1, y2, y3 = m[0, 0], m[0, 1], m[0, 2], m[0, 3]
        b0, b1, b2, b3 = m[1, 0] / 4, m[1, 1] / 4, m[1, 2] / 4, m[1, 3]
        r0, r1, r2, r3 = m[2, 0] / 4, m[2, 1] / 4, m[2, 2] / 4, m[2, 3]
        for j in numba.prange(height // 2):
            values = np.empty((3, 2, width), np.float32)
            for dy in range(2):
                row = 2 * j + dy
                for c in range(3):
                    src, dst = planes[c, row], values[c, dy]
                    for x in range(width):
                        dst[x] = np.rint(min(max(src[x] * top, zero), top))
                r, g, b = values[0, dy], values[1, dy], values[2, dy]
                luma = y[row]
                for x in range(width):
                    luma[x] = np.uint8(y0 * r[x] + y1 * g[x] + y2 * b[x] + y3 + half)
                out = rgb[row].reshape(width * 3)
                for x in range(width):
                    out[3 * x] = np.uint8(r[x])
                    out[3 * x + 1] = np.uint8(g[x])
                    out[3 * x + 2] = np.uint8(b[x])
            cb_row, cr_row = cb[j], cr[j]
            r, g, b = values[0], values[1], values[2]
            for x in range(width // 2):
                sr = r[0, 2 * x] + r[0, 2 * x + 1] + r[1, 2 * x] + r[1, 2 * x + 1]
                sg = g[0, 2 * x] + g[0, 2 * x + 1] + g[1, 2 * x] + g[1, 2 * x + 1]
                sb = b[0, 2 * x] + b[0, 2 * x + 1] + b[1, 2 * x] + b[1, 2 * x + 1]
                cb_row[x] = np.uint8(b0 * sr + b1 * sg + b2 * sb + b3 + half)
                cr_row[x] = np.uint8(r0 * sr + r1 * sg + r2 * sb + r3 + half)

    return fused  # type: ignore[no-any-return]


def timed(run: Callable[[], object], calls: int = 10) -> str:
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    times.sort()
    return f"{times[0] * 1e3:.1f} ms best, {times[calls // 2] * 1e3:.1f} median"


def main() -> int:
    try:
        import numba
    except ImportError:
        raise SystemExit("numba is not installed: pip install numba") from None
    # A drawing upscaled by repeating pixels, as the instant model's output is.
    small = np.random.default_rng(0).random((3, HEIGHT // 4, WIDTH // 4), dtype=np.float32)
    planes = np.ascontiguousarray(small.repeat(4, 1).repeat(4, 2))
    matrix = yuv_matrix("bt709", "tv", 8, 255.0).astype(np.float32)
    rgb = np.empty((HEIGHT, WIDTH, 3), np.uint8)
    y = np.empty((HEIGHT, WIDTH), np.uint8)
    cb, cr = (np.empty((HEIGHT // 2, WIDTH // 2), np.uint8) for _ in range(2))

    fused = fused_kernel()
    start = time.perf_counter()
    fused(planes, matrix, rgb, y, cb, cr)
    print(f"numba: first call {time.perf_counter() - start:.2f} s (compiles, or loads its cache)")
    for threads in (1, numba.config.NUMBA_NUM_THREADS):
        numba.set_num_threads(threads)
        print(f"fused pass, {threads} thread(s): "
              f"{timed(lambda: fused(planes, matrix, rgb, y, cb, cr))}")

    pixels = np.empty((HEIGHT, WIDTH, 3), np.uint8)
    yuv = converter("yuv420p", "bt709", "tv", np.uint8, HEIGHT, WIDTH)
    assert yuv is not None
    print(f"OpenCV to pixels: {timed(lambda: from_planes(planes, np.uint8, pixels))}")
    print(f"OpenCV to Y'CbCr: {timed(lambda: yuv.convert(pixels))}")
    planes_out = yuv.convert(pixels)
    luma = planes_out[:HEIGHT * WIDTH].reshape(HEIGHT, WIDTH)
    print(f"same RGB: {np.array_equal(pixels, rgb)}; luma at most "
          f"{np.abs(luma.astype(int) - y).max()} code(s) apart")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
