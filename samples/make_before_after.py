"""Write samples/before_after.png for README.md: a crop of samples/cel.png enlarged 4x by
repeating pixels (left) beside the same crop upscaled by `upscale` with its defaults (right).

Run from the repository root: python samples/make_before_after.py
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from PIL import Image

from upscaler.cli import main

HERE = Path(__file__).resolve().parent
CROP = (40, 10, 200, 130)  # the face and a few stars, in sample pixels


def run() -> Path:
    with tempfile.TemporaryDirectory() as tmp:
        upscaled = Path(tmp) / "cel_x4.png"
        code = main([str(HERE / "cel.png"), "-o", str(upscaled), "--quiet"])
        if code:
            sys.exit(code)
        with Image.open(HERE / "cel.png") as before, Image.open(upscaled) as after:
            left = before.convert("RGB").crop(CROP)
            left = left.resize((left.width * 4, left.height * 4), Image.Resampling.NEAREST)
            right = after.convert("RGB").crop(tuple(4 * v for v in CROP))
            canvas = Image.new("RGB", (left.width * 2 + 8, left.height), "white")
            canvas.paste(left, (0, 0))
            canvas.paste(right, (left.width + 8, 0))
    out = HERE / "before_after.png"
    canvas.save(out, optimize=True)
    return out


if __name__ == "__main__":
    print(run())
