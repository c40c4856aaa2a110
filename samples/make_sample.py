"""Write samples/cel.png, the 320x240 drawn cel the README and quick manual runs use.

Run from anywhere: `python samples/make_sample.py`. The picture is drawn by `draw.draw_cel`, so
it is the same on every machine and the repo never needs a downloaded test image.
"""

from __future__ import annotations

from pathlib import Path

from draw import draw_cel

from upscaler.media.images import Image, write_image

HERE = Path(__file__).resolve().parent


def main() -> None:
    pixels = draw_cel(240, 320, t=0.25, seed=7)
    out = write_image(Image(pixels=pixels, source_format="PNG"), HERE / "cel.png")
    print(f"wrote {out} ({out.stat().st_size // 1024} KB)")


if __name__ == "__main__":
    main()
