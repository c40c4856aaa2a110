"""A 2x model asked for 4x: run it twice, or once and resize? PSNR against the original.

    python bench/scale_passes.py
    python bench/scale_passes.py --models waifu2x-cunet-x2 --seeds 1 2 3

Drawn cels (samples/draw.py) and the bundled samples/cel.png are shrunk by 4 (area
averaging) and brought back to their size by each 2x model in two ways: the model once and a
Lanczos 2x (what --scale 4 does for models that do not repeat), and the model twice, the
second time on its own output (what it does for waifu2x, as waifu2x-ncnn-vulkan's -s 4 does).
Both are compared with the picture they were shrunk from; realesr-animevideov3 at its own 4x
is given beside them. PSNR against a clean original is a rough guide for models trained to
undo blur, noise and compression as well (Real-ESRGAN's and Real-CUGAN's sharpen).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from tta_quality import originals, psnr, shrink  # noqa: E402

import upscaler  # noqa: E402
from upscaler.channels import resize_to_scale  # noqa: E402

MODELS = ("waifu2x-cunet-x2", "waifu2x-anime-x2", "realcugan-x2-conservative",
          "realesr-animevideov3-x2")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument("--size", default="48x64", help="HxW of the shrunk drawn cels")
    args = parser.parse_args()
    height, width = (int(v) for v in args.size.split("x"))
    pictures = originals(4, (height, width), args.seeds)
    with upscaler.Upscaler(model="realesr-animevideov3") as up:
        at_4x = {label: psnr(up.upscale(shrink(p, 4)), p) for label, p in pictures.items()}
    for name in args.models:
        print(f"{name}:")
        with upscaler.Upscaler(model=name) as up:
            for label, original in pictures.items():
                once = up.upscale(shrink(original, 4))
                twice = up.upscale(once)
                resized = resize_to_scale(once, *original.shape[:2])
                one, two = psnr(resized, original), psnr(twice, original)
                print(f"  {label}: once + Lanczos {one:.2f} dB, twice {two:.2f} dB "
                      f"({two - one:+.2f}); animevideov3 4x {at_4x[label]:.2f} dB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
