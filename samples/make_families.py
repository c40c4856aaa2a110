"""Write samples/families.png for README.md: one crop of samples/cel.png at 2x, left to right
enlarged by repeating pixels, then through a model of each family (Real-ESRGAN, Real-CUGAN,
waifu2x), each run by `upscale` with its defaults.

Run from the repository root: python samples/make_families.py
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from PIL import Image

from upscaler.cli import main

HERE = Path(__file__).resolve().parent
CROP = (60, 60, 180, 130)  # the face, in sample pixels
MODELS = ("realesr-animevideov3-x2", "realcugan-x2-conservative", "waifu2x-cunet-x2")


def run() -> Path:
    with tempfile.TemporaryDirectory() as tmp, Image.open(HERE / "cel.png") as cel:
        crop = cel.convert("RGB").crop(CROP)
        src = Path(tmp) / "crop.png"
        crop.save(src)
        panels = [crop.resize((crop.width * 2, crop.height * 2), Image.Resampling.NEAREST)]
        for model in MODELS:
            out = Path(tmp) / f"{model}.png"
            code = main([str(src), "-o", str(out), "--model", model, "--quiet"])
            if code:
                sys.exit(code)
            with Image.open(out) as upscaled:
                panels.append(upscaled.convert("RGB"))
        gap = 4
        width = sum(p.width for p in panels) + gap * (len(panels) - 1)
        sheet = Image.new("RGB", (width, panels[0].height), (255, 255, 255))
        x = 0
        for panel in panels:
            sheet.paste(panel, (x, 0))
            x += panel.width + gap
        target = HERE / "families.png"
        sheet.save(target, optimize=True)
        return target


if __name__ == "__main__":
    print(run())
