"""Held-frame reuse: where a tile's input has not changed, its last upscaled output is the answer.

Anime holds each drawing for two or three frames and keeps backgrounds still while a mouth
moves. A tile's output depends only on its input, so an unchanged tile need not go through the
model again. Decoded held frames are not bit-identical, though: x264 leaves noise of up to
40-50 levels at a few pixels. `ReuseRule` tells noise from change, and `TileReuse` keeps, per
tile position, the input last *computed* there and its output, so that each new input is
judged against what the model really saw and errors cannot creep across a long hold.

The rule's numbers come from bench/reuse_study.py (drawn clips through x264 at CRF 18, 23 and
28; see README): held tiles differ from their computed input by at most 0.9 levels on average
and 8.3 in an 8x8 window (almost always under 0.5 and 3); a moving mouth of about 60 pixels
changes an 8x8 window by at least 29 levels, a fade a whole tile by at least 2.6 on average.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field

import cv2
import numpy as np

LEVELS = 255.0  # differences are judged in 8-bit levels, whatever the source's bit depth


@dataclass(frozen=True)
class ReuseRule:
    """When a tile counts as unchanged: both limits hold, in 8-bit levels.

    mean_limit: the mean absolute difference over the tile. Catches what changes everywhere a
      little: fades, slow pans, grain.
    window_limit: the mean absolute difference in every `window` x `window` square (sliding,
      so a change on a block border is not split). Catches what changes much in a small place:
      a mouth, an eye, a hand.
    A pixel's difference is the largest of its three channels'.
    """

    mean_limit: float = 0.5
    window_limit: float = 3.0
    window: int = 8

    def unchanged(self, current: np.ndarray, reference: np.ndarray) -> bool:
        """Whether float (3, h, w) tiles in [0, 1] are the same drawing up to coding noise."""
        diff = np.abs(current - reference).max(axis=0)
        # The mean is cheap and rejects most changed tiles before the window pass.
        if float(diff.mean()) * LEVELS > self.mean_limit:
            return False
        return window_max(diff, self.window) * LEVELS <= self.window_limit


def window_max(diff: np.ndarray, size: int) -> float:
    """The largest mean of the 2-D `diff` over any `size` x `size` square inside it."""
    k_y, k_x = min(size, diff.shape[0]), min(size, diff.shape[1])
    sums = cv2.integral(np.ascontiguousarray(diff, np.float32), sdepth=cv2.CV_64F)
    windows = sums[k_y:, k_x:] - sums[:-k_y, k_x:] - sums[k_y:, :-k_x] + sums[:-k_y, :-k_x]
    return float(windows.max()) / (k_y * k_x)


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
    Memory: one input and one output per tile position, copies of both.
    """

    rule: ReuseRule = field(default_factory=ReuseRule)
    _held: dict[Hashable, _Held] = field(default_factory=dict, init=False, repr=False)

    def lookup(self, key: Hashable, tile: np.ndarray) -> np.ndarray | None:
        held = self._held.get(key)
        if held is None or held.input.shape != tile.shape:
            return None
        return held.output if self.rule.unchanged(tile, held.input) else None

    def store(self, key: Hashable, tile: np.ndarray, output: np.ndarray) -> None:
        # Copies: the tile may be a view of a whole batch, and an executor may reuse its
        # output buffer on the next call.
        out = np.array(output, dtype=np.float32, copy=True)
        out.flags.writeable = False  # handed out again; nobody may change it in place
        self._held[key] = _Held(np.array(tile, dtype=np.float32, copy=True), out)

    def reset(self) -> None:
        self._held.clear()
