"""How far to pad frames before the model (upscaler/borders.py), and with which mirror.

    python bench/border_pad.py --executor ncnn --models realesrgan-x4plus-anime realesr-animevideov3

Width: flat 40x40 frames of four colours, padded by each width (the same for every mirror on a
flat frame), upscaled whole; the table gives the largest distance of any output pixel from the
model's own answer for that colour in the middle of a 72x72 frame ("vs centre", the border
effect) and from the colour itself ("vs true", which includes the model's overall shift). The
width stored in the registry is the smallest with "vs centre" <= 1 for every colour.

Mirror: crops of samples' drawn cel upscaled alone, padded each way, against the same region
upscaled inside the full picture, where the model saw the real surroundings: PSNR of the outer
2 input pixels, averaged over four crops. Times are not measured here.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "samples")]

from draw import draw_cel  # noqa: E402

from upscaler.executors.base import ExecutorOptions  # noqa: E402
from upscaler.executors.registry import create_executor  # noqa: E402
from upscaler.frame_upscaler import FrameUpscaler  # noqa: E402
from upscaler.models.registry import resolve_model  # noqa: E402

COLOURS = ((200, 60, 30), (255, 0, 0), (240, 240, 240), (30, 80, 200))
WIDTHS = (0, 2, 4, 5, 6, 8, 10, 12, 16)
MIRRORS = (("none", 0), ("edge", 8), ("reflect", 8), ("symmetric", 8))
MARGIN = 24  # real context around each crop
CROPS = ((MARGIN, MARGIN), (MARGIN, 200), (140, MARGIN), (140, 200))  # 72x96 each


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b) ** 2))
    return 99.0 if mse == 0 else float(10 * np.log10(1 / mse))


def upscale_padded(run: FrameUpscaler, frame: np.ndarray, mode: str, width: int) -> np.ndarray:
    s = run.executor.scale
    padded = np.pad(frame, ((width, width), (width, width), (0, 0)), mode=mode) if width else frame
    out = run.upscale(padded)
    return out[width * s:out.shape[0] - width * s, width * s:out.shape[1] - width * s]


def widths(run: FrameUpscaler) -> None:
    print("   colour            " + " ".join(f"{w:3d}" for w in WIDTHS))
    for colour in COLOURS:
        c = np.array(colour, np.float32) / 255
        big = run.upscale(np.zeros((72, 72, 3), np.float32) + c)
        centre = np.rint(big[big.shape[0] // 2, big.shape[1] // 2] * 255)
        flat = np.zeros((40, 40, 3), np.float32) + c
        outs = [np.rint(upscale_padded(run, flat, "edge", w) * 255) for w in WIDTHS]
        print(f"   {colour!s:15s} vs centre " + " ".join(
            f"{np.abs(o - centre).max():3.0f}" for o in outs))
        print(f"   {'':15s} vs true   " + " ".join(
            f"{np.abs(o - np.array(colour)).max():3.0f}" for o in outs), flush=True)


def mirrors(run: FrameUpscaler) -> None:
    s = run.executor.scale
    picture = draw_cel(240, 320, t=0.25, seed=7).astype(np.float32) / 255  # samples/cel.png
    scores: dict[tuple[str, int], list[float]] = {m: [] for m in MIRRORS}
    h, w = 72, 96
    yy, xx = np.mgrid[0:h * s, 0:w * s]
    outer = np.minimum(np.minimum(yy, h * s - 1 - yy), np.minimum(xx, w * s - 1 - xx)) < 2 * s
    for y, x in CROPS:
        region = picture[y - MARGIN:y + h + MARGIN, x - MARGIN:x + w + MARGIN]
        truth = run.upscale(region)[MARGIN * s:-MARGIN * s, MARGIN * s:-MARGIN * s]
        crop = region[MARGIN:-MARGIN, MARGIN:-MARGIN]
        for mode, width in MIRRORS:
            out = upscale_padded(run, crop, mode, width)
            scores[(mode, width)].append(psnr(out[outer], truth[outer]))
    for (mode, width), values in scores.items():
        cells = " ".join(f"{v:5.1f}" for v in values)
        print(f"   {mode:9s} {width:2d} px: {cells}   mean {np.mean(values):5.1f} dB", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--executor", default="ncnn")
    parser.add_argument("--models", nargs="+",
                        default=["realesrgan-x4plus-anime", "realesr-animevideov3"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-mirrors", action="store_true")
    args = parser.parse_args()
    for name in args.models:
        options = ExecutorOptions(threads=args.threads,
                                  precision=None if args.executor == "ncnn" else "fp32")
        with create_executor(args.executor, resolve_model(name), options) as executor:
            run = FrameUpscaler(executor, tile=0)
            print(f"{name} on {args.executor}: max error (levels) by pad width")
            widths(run)
            if not args.skip_mirrors:
                print(f"{name}: outer 2 px PSNR against the picture's interior, by mirror")
                mirrors(run)


if __name__ == "__main__":
    main()
