"""Draw anime-like test pictures: flat colour fills, dark line art, soft shading and text.

Used by the sample scripts in this folder and by the tests, so that every picture the project is
checked on is made from code in the repo rather than downloaded. `draw_cel` is one still; the
layers it is made of (`draw_landscape`, `draw_head`, `draw_details`) are also used on their own
by anim.py to animate a figure over a still background.
"""

from __future__ import annotations

import math

import cv2
import numpy as np


def draw_cel(height: int = 256, width: int = 256, t: float = 0.0, seed: int = 0) -> np.ndarray:
    """An RGB uint8 (height, width, 3) cel; `t` in [0, 1) moves the figure for animation."""
    rng = np.random.default_rng(seed)
    img = draw_landscape(height, width, t, rng)
    s = min(height, width)
    draw_head(img, int(width * (0.35 + 0.3 * t)), int(height * 0.45), int(s * 0.2))
    draw_details(img, rng)
    return img


def line_width(img: np.ndarray) -> int:
    return max(1, min(img.shape[:2]) // 128)


def draw_landscape(height: int, width: int, t: float, rng: np.random.Generator) -> np.ndarray:
    """A sky gradient with three outlined hills; `t` moves the hills' crests."""
    y = np.mgrid[0:height, 0:width][0].astype(np.float32)
    top, bottom = np.array([120, 180, 250]), np.array([250, 220, 200])
    mix = (y / max(height - 1, 1))[..., None]
    img = np.ascontiguousarray((top * (1 - mix) + bottom * mix).astype(np.uint8))
    s = min(height, width)
    line = line_width(img)
    for k in range(3):
        pts = [(0, height)]
        for i in range(9):
            px = i * width / 8
            py = height * (0.65 + 0.08 * k) + s * 0.05 * math.sin(i * 1.3 + k + 2 * math.pi * t)
            pts.append((int(px), int(py)))
        pts.append((width, height))
        colour = [int(c) for c in rng.integers(40, 200, 3)]
        poly = np.array(pts, np.int32)
        cv2.fillPoly(img, [poly], colour, lineType=cv2.LINE_AA)
        cv2.polylines(img, [poly], False, (30, 20, 40), line, lineType=cv2.LINE_AA)
    return img


def draw_head(img: np.ndarray, cx: int, cy: int, r: int, mouth: float | None = None,
              eyes: bool = True) -> None:
    """A character-like head of radius `r` at (cx, cy): face, hair, eyes, with cel shading.

    mouth: None draws none; 0 a closed mouth (a short line), up to 1 a mouth open about r/6.
    eyes: open, or shut (a blink: each eye a short line).
    """
    line = line_width(img)
    cv2.circle(img, (cx, cy), r, (250, 220, 200), -1, cv2.LINE_AA)
    cv2.ellipse(img, (cx + r // 4, cy + r // 6), (r // 2, r // 1), 0, -60, 80, (225, 190, 175), -1,
                cv2.LINE_AA)
    cv2.circle(img, (cx, cy), r, (40, 25, 30), line + 1, cv2.LINE_AA)
    cv2.ellipse(img, (cx, cy - r // 3), (r + r // 8, r // 1), 0, 180, 360, (200, 60, 90), -1,
                cv2.LINE_AA)
    cv2.ellipse(img, (cx, cy - r // 3), (r + r // 8, r // 1), 0, 180, 360, (40, 25, 30), line,
                cv2.LINE_AA)
    for ex in (-1, 1):
        ec = (cx + ex * r // 3, cy + r // 6)
        if not eyes:
            half = max(r // 8, 2)
            cv2.line(img, (ec[0] - half, ec[1]), (ec[0] + half, ec[1]), (20, 20, 40), line,
                     cv2.LINE_AA)
            continue
        cv2.ellipse(img, ec, (max(r // 8, 2), max(r // 5, 3)), 0, 0, 360, (60, 120, 200), -1,
                    cv2.LINE_AA)
        cv2.ellipse(img, ec, (max(r // 8, 2), max(r // 5, 3)), 0, 0, 360, (20, 20, 40), line,
                    cv2.LINE_AA)
        cv2.circle(img, (ec[0] - r // 20, ec[1] - r // 12), max(r // 20, 1), (255, 255, 255), -1,
                   cv2.LINE_AA)
    if mouth is not None:
        centre, half_width = (cx, cy + r // 2 + r // 8), max(r // 8, 2)
        opening = round(mouth * r / 12)
        if opening < 1:
            cv2.line(img, (cx - half_width, centre[1]), (cx + half_width, centre[1]),
                     (120, 40, 50), line, cv2.LINE_AA)
        else:
            cv2.ellipse(img, centre, (half_width, opening), 0, 0, 360, (150, 40, 60), -1,
                        cv2.LINE_AA)
            cv2.ellipse(img, centre, (half_width, opening), 0, 0, 360, (60, 20, 30), line,
                        cv2.LINE_AA)


def draw_details(img: np.ndarray, rng: np.random.Generator) -> None:
    """Stars and text: fine detail where tile seams would show."""
    height, width = img.shape[:2]
    s = min(height, width)
    for _ in range(12):
        sx, sy = int(rng.integers(0, width)), int(rng.integers(0, height // 3))
        cv2.drawMarker(img, (sx, sy), (255, 255, 230), cv2.MARKER_STAR, max(s // 32, 4), 1)
    cv2.putText(img, "upscaler", (width // 20, height - height // 12), cv2.FONT_HERSHEY_SIMPLEX,
                s / 400, (20, 20, 20), line_width(img), cv2.LINE_AA)
