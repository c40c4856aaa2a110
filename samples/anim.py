"""Drawn animation the way TV anime is made, for the held-frame reuse tests and benchmarks.

Each scene is a list of RGB uint8 frames and is exact before encoding, so where a frame
really changed is known; `write_clip` then encodes them with x264 the way a source arrives, so
that held drawings are no longer bit-identical after decoding.

    twos / threes   a figure moving one drawing every 2 / 3 frames over a still background
    mouth           a held figure whose small mouth opens and closes on threes
    lipflaps        as mouth, and the eyes blink (shut for one drawing in four)
    pan             the camera slides over the background, 1 px a frame (`pan_speed`)
    fade            a held drawing fading to black over the scene
    grain           a held drawing with new film grain on every frame
    cuts            three still shots, cut every 8 frames
    still           one drawing held throughout
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from draw import draw_details, draw_head, draw_landscape

from upscaler.media import ffmpeg

SCENES = ("twos", "threes", "mouth", "lipflaps", "pan", "fade", "grain", "cuts", "still")
MOUTH_CYCLE = (0.0, 0.5, 1.0, 0.5)  # open amounts, one per drawing


def background(height: int, width: int, seed: int = 0) -> np.ndarray:
    """The still layer: sky, hills, stars and text."""
    rng = np.random.default_rng(seed)
    img = draw_landscape(height, width, 0.0, rng)
    draw_details(img, rng)
    return img


def figure(bg: np.ndarray, drawing: int, mouth: float | None = 0.0,
           moves: bool = True, eyes: bool = True) -> np.ndarray:
    """`bg` with the head of drawing number `drawing`: it walks right and bobs as drawings go
    by (unless `moves` is off)."""
    img = bg.copy()
    height, width = img.shape[:2]
    step = drawing if moves else 0
    cx = int(width * 0.3) + 3 * step
    cy = int(height * 0.45) + (2 if step % 2 else 0)
    draw_head(img, cx, cy, int(min(height, width) * 0.2), mouth, eyes)
    return img


def scene(kind: str, frames: int, height: int = 180, width: int = 320, *,
          pan_speed: float = 1.0, seed: int = 0) -> list[np.ndarray]:
    """The exact frames of scene `kind` (see the module docstring)."""
    if kind not in SCENES:
        raise ValueError(f"unknown scene {kind!r}; one of {', '.join(SCENES)}")
    if kind in ("twos", "threes"):
        hold = 2 if kind == "twos" else 3
        bg = background(height, width, seed)
        drawings = {d: figure(bg, d) for d in range((frames + hold - 1) // hold)}
        return [drawings[i // hold] for i in range(frames)]
    if kind == "mouth":
        bg = background(height, width, seed)
        return [figure(bg, 0, MOUTH_CYCLE[(i // 3) % len(MOUTH_CYCLE)], moves=False)
                for i in range(frames)]
    if kind == "lipflaps":
        bg = background(height, width, seed)
        return [figure(bg, 0, MOUTH_CYCLE[(i // 3) % len(MOUTH_CYCLE)], moves=False,
                       eyes=(i // 3) % 4 != 2) for i in range(frames)]
    if kind == "pan":
        travel = int(np.ceil(pan_speed * frames)) + 1
        wide = figure(background(height, width + travel, seed), 0)
        shifts = [np.float32([[1, 0, -pan_speed * i], [0, 1, 0]]) for i in range(frames)]
        return [cv2.warpAffine(wide, m, (width, height), flags=cv2.INTER_LINEAR) for m in shifts]
    if kind == "fade":
        still = figure(background(height, width, seed), 0).astype(np.float32)
        return [np.round(still * (1 - i / frames)).astype(np.uint8) for i in range(frames)]
    if kind == "grain":
        still = figure(background(height, width, seed), 0).astype(np.float32)
        rng = np.random.default_rng(seed + 1)
        return [np.clip(still + rng.normal(0, 4, still.shape[:2])[..., None], 0, 255)
                .round().astype(np.uint8) for _ in range(frames)]
    if kind == "cuts":
        shots = [figure(background(height, width, seed + k), k) for k in range(3)]
        return [shots[(i // 8) % 3] for i in range(frames)]
    return [figure(background(height, width, seed), 0)] * frames


def write_clip(path: Path, frames: list[np.ndarray], crf: int = 18,
               rate: str = "24000/1001") -> Path:
    """Encode `frames` with x264 at `crf` (yuv420p, BT.709 limited range) into `path`."""
    height, width = frames[0].shape[:2]
    args = [ffmpeg.ffmpeg_exe(), "-hide_banner", "-v", "error", "-y",
            "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-framerate", rate,
            "-i", "pipe:0",
            "-vf", "scale=out_color_matrix=bt709:out_range=tv:flags=accurate_rnd+full_chroma_inp,"
                   "format=yuv420p,setparams=colorspace=bt709:color_primaries=bt709"
                   ":color_trc=bt709:range=tv",
            "-c:v", "libx264", "-crf", str(crf), "-pix_fmt", "yuv420p", "-colorspace", "bt709",
            "-color_primaries", "bt709", "-color_trc", "bt709", "-color_range", "tv",
            str(path)]
    with ffmpeg.Process(args, path, stdin=True) as proc:
        for frame in frames:
            proc.stdin.write(np.ascontiguousarray(frame).tobytes())
        proc.finish("writing a drawn clip failed")
    return path
