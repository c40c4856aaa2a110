"""Held-frame reuse: where a tile's input has not changed, its last upscaled output is the answer.

Anime holds each drawing for two or three frames and keeps backgrounds still while a mouth
moves. A tile's output depends only on its input, so an unchanged tile need not go through the
model again. Decoded held frames are not bit-identical, though: x264 leaves noise of up to
40-60 levels at a few pixels. `ReuseRule` tells noise from change, and `TileReuse` keeps, per
tile position, the input last *computed* there and its output, so that each new input is
judged against what the model really saw and errors cannot creep across a long hold.

The rule's limits come from bench/reuse_study.py (drawn 320x180 clips through x264 at CRF 18,
23 and 28, whole frames and 256- and 128-px tiles; README has the table). Against the input
computed last, held tiles differ by at most 0.9 levels on average and 10.1 in the worst 8x8
window, and seem to move by at most 0.03 px; the limits below reuse 98.8-100% of them. A mouth
of 20-70 changed pixels makes an 8x8 window differ by 29 levels or more, a fade a whole tile by
2.4 on average, and pans of 1, 0.5 and 0.25 px a frame move tiles by 0.23 px or more where the
mean alone does not catch them.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field

import cv2
import numpy as np

from upscaler.pixels import peak_of

LEVELS = 255.0  # differences are judged in 8-bit levels, whatever the source's bit depth


@dataclass(frozen=True)
class ReuseRule:
    """When a tile counts as unchanged: all three limits hold.

    mean_limit: the mean absolute difference over the tile, in 8-bit levels (a pixel's
      difference is the largest of its three channels'). Catches what changes everywhere a
      little: fades, pans, grain.
    window_limit: the same mean in every `window` x `window` square (sliding, so that a change
      on a block border is not split). Catches what changes much in a small place: a mouth, an
      eye, a hand.
    shift_limit: how far the tile's content may seem to move, in pixels (estimated_shift).
      Catches slow pans over plain areas, whose differences are small everywhere.
    """

    mean_limit: float = 0.5
    window_limit: float = 6.0
    window: int = 8
    shift_limit: float = 0.1

    def unchanged(self, current: np.ndarray, reference: np.ndarray) -> bool:
        """Whether (h, w, 3) pixel tiles (uint8 or uint16) are the same drawing up to coding
        noise."""
        levels = LEVELS / peak_of(current.dtype)
        # OpenCV, not numpy's max over the channel axis: 1 ms against 11 at 980x560.
        red, green, blue = cv2.split(cv2.absdiff(current, reference))
        diff = cv2.max(cv2.max(red, green), blue)
        # Cheapest first, on the integer pixels: most changed tiles fail the mean.
        if cv2.mean(diff)[0] * levels > self.mean_limit:
            return False
        if window_max(diff, self.window) * levels > self.window_limit:
            return False
        return estimated_shift(current, reference) <= self.shift_limit


def estimated_shift(current: np.ndarray, reference: np.ndarray) -> float:
    """How far, in pixels, the content of `reference` moved to make `current`.

    The least-squares fit of current - reference = -(u * d/dx + v * d/dy) reference over the
    tile (one step of Lucas-Kanade), on the mean of the channels in 8-bit levels. A ridge of 1
    level per pixel of gradient keeps flat tiles, where a shift changes nothing, near 0.
    """
    ref, cur = _luma(reference), _luma(current)
    diff = cv2.subtract(cur, ref)
    # Central differences, (next - previous) / 2.
    gx = cv2.Sobel(ref, cv2.CV_32F, 1, 0, ksize=1, scale=0.5).ravel()
    gy = cv2.Sobel(ref, cv2.CV_32F, 0, 1, ksize=1, scale=0.5).ravel()
    diff = diff.ravel()
    ridge = float(ref.size)
    a11 = float(np.dot(gx, gx)) + ridge
    a22 = float(np.dot(gy, gy)) + ridge
    a12 = float(np.dot(gx, gy))
    b1, b2 = float(np.dot(gx, diff)), float(np.dot(gy, diff))
    det = a11 * a22 - a12 * a12
    return float(np.hypot(a22 * b1 - a12 * b2, a11 * b2 - a12 * b1)) / det


def _luma(pixels: np.ndarray) -> np.ndarray:
    """The mean of the three channels, in 8-bit levels, float32."""
    weights = np.full((1, 3), LEVELS / peak_of(pixels.dtype) / 3, np.float32)
    return cv2.transform(pixels.astype(np.float32), weights)


def window_max(diff: np.ndarray, size: int) -> float:
    """The largest mean of the 2-D `diff` over any `size` x `size` square inside it."""
    height, width = diff.shape
    k_y, k_x = min(size, height), min(size, width)
    # With the anchor at the top left, each output pixel is the mean of the window below and
    # right of it; the last k-1 rows and columns reach past the edge and are left out.
    means = cv2.blur(np.ascontiguousarray(diff, np.float32), (k_x, k_y), anchor=(0, 0),
                     borderType=cv2.BORDER_CONSTANT)
    return float(means[:height - k_y + 1, :width - k_x + 1].max())


@dataclass
class _Held:
    input: np.ndarray
    output: np.ndarray


@dataclass
class TileReuse:
    """Per tile position, the last computed input and its output; consulted before the model.

    `lookup(key, tile)` returns the stored output when `tile` is unchanged from the input
    computed last at `key` (a tile position; its meaning is the caller's), else None; after
    running the model the caller `store`s the input and output. `reset()` forgets everything:
    called where a run of frames starts afresh (a video segment), so that each segment's
    output depends on its own frames only, as resume and a per-segment scale-out need.
    Memory: one input and one output per tile position, copies of both, as pixels: about
    33 MiB for 1080p to 4K in whole 8-bit frames.
    """

    rule: ReuseRule = field(default_factory=ReuseRule)
    _held: dict[Hashable, _Held] = field(default_factory=dict, init=False, repr=False)

    def lookup(self, key: Hashable, tile: np.ndarray) -> np.ndarray | None:
        held = self._held.get(key)
        if held is None or held.input.shape != tile.shape:
            return None
        return held.output if self.rule.unchanged(tile, held.input) else None

    def held(self, key: Hashable, tile: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """The input last computed at `key` and its output, when they are of `tile`'s shape:
        what dirty regions (dirty.py) are found against and pasted into."""
        held = self._held.get(key)
        if held is None or held.input.shape != tile.shape:
            return None
        return held.input, held.output

    def store(self, key: Hashable, tile: np.ndarray, output: np.ndarray) -> None:
        """Keep `tile` (copied: it may be a view of a frame that the decoder's next frame
        replaces) and `output`, which the caller hands over: it is made read-only, since it is
        handed out again, and not copied (a 4K output is 25 MB a frame)."""
        output.flags.writeable = False
        self._held[key] = _Held(np.array(tile, copy=True), output)

    def patch(self, key: Hashable, tile: np.ndarray, output: np.ndarray,
              parts: list[tuple[slice, slice]]) -> None:
        """After dirty regions were recomputed: `output` (handed over, as in `store`) is the
        held output now, and the held input takes `tile`'s pixels in `parts`, the input areas
        whose output was recomputed; elsewhere it keeps what was computed there before, so
        that later frames are still judged against what the model saw."""
        held = self._held[key]
        for y, x in parts:
            held.input[y, x] = tile[y, x]
        output.flags.writeable = False
        held.output = output

    def reset(self) -> None:
        self._held.clear()
