"""What --tta buys: PSNR against the picture a smaller one was made from, with and without it.

    python bench/tta_quality.py
    python bench/tta_quality.py --models realesr-animevideov3 --seeds 1 2

Each drawn cel (samples/draw.py, at the model's scale times --size) and the bundled
samples/cel.png are shrunk by the model's scale (area averaging), upscaled back through the
Python API once plainly and once with tta=True, and compared with the picture they were shrunk
from. These models were trained to undo blur, noise and compression as well as size, so PSNR
against a clean original is a rough guide to sharpness, not the last word; the seconds are one
run each on whatever machine this is.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "samples")]

from draw import draw_cel  # noqa: E402

import upscaler  # noqa: E402
from upscaler.models.registry import resolve_model  # noqa: E402

MODELS = ("realesr-animevideov3", "realesrgan-x4plus-anime", "realcugan-x2-conservative")


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255**2 / mse)


def originals(scale: int, size: tuple[int, int], seeds: list[int]) -> dict[str, np.ndarray]:
    """name -> an RGB uint8 picture whose sides divide by `scale`."""
    height, width = size[0] * scale, size[1] * scale
    pictures = {f"drawn cel, seed {s}": draw_cel(height, width, seed=s) for s in seeds}
    with Image.open(ROOT / "samples" / "cel.png") as im:
        cel = np.asarray(im.convert("RGB"))
    pictures["samples/cel.png"] = cel[: cel.shape[0] // scale * scale,
                                      : cel.shape[1] // scale * scale]
    return pictures


def shrink(picture: np.ndarray, scale: int) -> np.ndarray:
    height, width = picture.shape[:2]
    return cv2.resize(picture, (width // scale, height // scale), interpolation=cv2.INTER_AREA)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument("--size", default="72x96", help="HxW of the shrunk drawn cels")
    args = parser.parse_args()
    size = tuple(int(v) for v in args.size.split("x"))
    for name in args.models:
        scale = resolve_model(name).scale or 4
        gains = []
        print(f"{name} (x{scale}):")
        for label, original in originals(scale, (size[0], size[1]), args.seeds).items():
            small = shrink(original, scale)
            row = []
            for tta in (False, True):
                with upscaler.Upscaler(model=name, tta=tta) as up:
                    start = time.perf_counter()
                    out = up.upscale(small)
                    seconds = time.perf_counter() - start
                row.append((psnr(out, original), seconds))
            (plain, t_plain), (tta_db, t_tta) = row
            gains.append(tta_db - plain)
            print(f"  {label} {small.shape[1]}x{small.shape[0]}: plain {plain:.2f} dB "
                  f"({t_plain:.2f} s), tta {tta_db:.2f} dB ({t_tta:.2f} s), "
                  f"{tta_db - plain:+.2f} dB")
        print(f"  median gain {statistics.median(gains):+.2f} dB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
