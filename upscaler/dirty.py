"""Dirty regions: which parts of a tile changed, and the few rectangles that recompute them.

A held drawing whose mouth moves differs from the input last computed at its place in a few
blocks only. `changed_blocks` marks them: a block (BLOCK px square) changed when the worst 8x8
window centred in it fails the reuse rule's window limit (reuse.ReuseRule), or its mean difference,
its mean change of brightness or its own estimate of how far its content moved fail limits a
few times the rule's. Those are looser because a block's 256 pixels average coding noise far
less than a tile's: over the held blocks of drawn clips through x264 at CRF 18, the largest
were 2.3 levels, 1.2 levels and 0.7 px (99.9% under 2.2, 0.75 and 0.24), against 0.5, 0.5
and 0.1 for a tile. What a block cannot see, a change a little at a time everywhere (a fade,
grain), `global_change` sees on the whole tile, which then runs whole. All of it is
whole-array OpenCV/numpy work on the uint pixels, a few ms for a 640x360 frame.

`plan_regions` then grows the changed blocks into rectangles. An output pixel moves when an
input pixel within the model's reach of it changed (`Reach.change`), so each changed area
grows by that much: the part of the output to replace ("paste"). The model needs the input
around that part to compute it as it would on the whole tile (`Reach.context`), so the
rectangle it runs on grows by that much again, clipped to the tile: at the tile's (and so the
frame's) edge it stops where a whole-tile run stops, on the same border padding. Rectangles
whose runs overlap or lie close are merged while that costs no more model work, and when the
runs would cover most of the tile (WHOLE_SHARE) the tile runs whole instead.

Margins are the model's (models/registry.py, ModelSpec.reach): measured reaches well below the
receptive field derived from the graph (models/graph.py receptive_field), which bounds them;
docs/dirty_regions.md has the measurements.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from upscaler.pixels import peak_of
from upscaler.reuse import LEVELS, ReuseRule

BLOCK = 16  # input px; 16 keeps a mouth's few changed pixels to a small area
WHOLE_SHARE = 0.6  # when the rectangles' runs would cover more of the tile, it runs whole
BATCH_WASTE = 1.3  # rectangles run as one batch, padded to one shape, if that costs no more
# A block's limits, as multiples of the reuse rule's tile limits (see the module docstring).
BLOCK_MEAN = 5.0  # x mean_limit: the mean absolute difference (grain of 4 levels is ~4.5)
BLOCK_LIGHT = 2.0  # x mean_limit: the mean signed difference of brightness
BLOCK_SHIFT = 2.5  # x shift_limit: how far the block's content seems to move


@dataclass(frozen=True)
class Reach:
    """A model's margins around a change, in input pixels (see the module docstring)."""

    change: int
    context: int


@dataclass(frozen=True)
class Rect:
    """A rectangle of a tile, in its input pixels: rows y0:y1, columns x0:x1."""

    y0: int
    y1: int
    x0: int
    x1: int

    @property
    def area(self) -> int:
        return (self.y1 - self.y0) * (self.x1 - self.x0)

    @property
    def shape(self) -> tuple[int, int]:
        return self.y1 - self.y0, self.x1 - self.x0

    def grown(self, margin: int, height: int, width: int) -> Rect:
        """This rectangle `margin` px larger on every side, clipped to `height` x `width`."""
        return Rect(max(0, self.y0 - margin), min(height, self.y1 + margin),
                    max(0, self.x0 - margin), min(width, self.x1 + margin))

    def union(self, other: Rect) -> Rect:
        return Rect(min(self.y0, other.y0), max(self.y1, other.y1),
                    min(self.x0, other.x0), max(self.x1, other.x1))


@dataclass(frozen=True)
class Region:
    """One model run: the input rectangle `run`, and `paste`, the part of its output (inside
    it) that replaces the held output."""

    run: Rect
    paste: Rect


def changed_blocks(current: np.ndarray, reference: np.ndarray, rule: ReuseRule,
                   block: int = BLOCK) -> np.ndarray | None:
    """(ceil(h/block), ceil(w/block)) bools: the blocks of (h, w, 3) uint pixel tiles that
    changed past coding noise, by `rule`'s limits applied to each block; None when the change
    is everywhere (see `global_change`)."""
    height, width = current.shape[:2]
    rows, cols = -(-height // block), -(-width // block)
    levels = LEVELS / peak_of(current.dtype)
    red, green, blue = cv2.split(cv2.absdiff(current, reference))
    diff = cv2.max(cv2.max(red, green), blue).astype(np.float32) * np.float32(levels)
    # Means over the centred windows: a change counts in the block its window centre lies in;
    # the growth by the model's reach covers the window's other half.
    window = cv2.blur(diff, (rule.window, rule.window), borderType=cv2.BORDER_CONSTANT)
    changed = _block_reduce(window, rows, cols, block, np.max) > rule.window_limit
    means = _block_mean(diff, rows, cols, block)
    if global_change(means, rule):
        return None
    reference_luma, light = _luma_change(current, reference)
    changed |= means > BLOCK_MEAN * rule.mean_limit
    changed |= np.abs(_block_mean(light, rows, cols, block)) > BLOCK_LIGHT * rule.mean_limit
    changed |= _block_shift(reference_luma, light, rows, cols, block) > (
        BLOCK_SHIFT * rule.shift_limit)
    return changed


def global_change(block_means: np.ndarray, rule: ReuseRule) -> bool:
    """Whether a change is everywhere, so that no block may show it yet: most blocks' mean
    differences are past the rule's mean limit for a tile (a fade; grain, which x264 may
    smooth to under a block's limit). The median, not the mean: a strong local change (a
    blink on a small frame) moves the tile's mean past the limit, not the median block."""
    return float(np.median(block_means)) > rule.mean_limit


def _luma_change(current: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The reference's mean of channels and the current one's change from it, in 8-bit
    levels, float32."""
    weights = np.full((1, 3), LEVELS / peak_of(current.dtype) / 3, np.float32)
    ref = cv2.transform(reference.astype(np.float32), weights)
    return ref, cv2.transform(current.astype(np.float32), weights) - ref


def _padded(values: np.ndarray, rows: int, cols: int, block: int) -> np.ndarray:
    height, width = values.shape
    if (height, width) == (rows * block, cols * block):
        return values
    out = np.zeros((rows * block, cols * block), values.dtype)
    out[:height, :width] = values
    return out


def _block_reduce(values: np.ndarray, rows: int, cols: int, block: int, how: object,
                  ) -> np.ndarray:
    grid = _padded(values, rows, cols, block).reshape(rows, block, cols, block)
    return how(grid, axis=(1, 3))  # type: ignore[operator]  # np.max or np.sum


def _block_mean(values: np.ndarray, rows: int, cols: int, block: int) -> np.ndarray:
    """Means over each block's own pixels (edge blocks are partial)."""
    height, width = values.shape
    counts = np.outer(np.minimum(block, height - np.arange(rows) * block),
                      np.minimum(block, width - np.arange(cols) * block))
    return _block_reduce(values, rows, cols, block, np.sum) / counts


def _block_shift(ref: np.ndarray, diff: np.ndarray, rows: int, cols: int,
                 block: int) -> np.ndarray:
    """reuse.estimated_shift for every block at once, from the reference's luma and its
    change: the sums of its least-squares system taken per block."""
    gx = cv2.Sobel(ref, cv2.CV_32F, 1, 0, ksize=1, scale=0.5)
    gy = cv2.Sobel(ref, cv2.CV_32F, 0, 1, ksize=1, scale=0.5)
    sums = [_block_reduce(v, rows, cols, block, np.sum).astype(np.float64)
            for v in (gx * gx, gy * gy, gx * gy, gx * diff, gy * diff)]
    a11, a22, a12, b1, b2 = sums
    ridge = float(block * block)
    a11, a22 = a11 + ridge, a22 + ridge
    det = a11 * a22 - a12 * a12
    return np.hypot(a22 * b1 - a12 * b2, a11 * b2 - a12 * b1) / det


def plan_regions(changed: np.ndarray | None, height: int, width: int, reach: Reach,
                 block: int = BLOCK) -> list[Region] | None:
    """The model runs that recompute the `changed` blocks of a `height` x `width` tile; [] when
    nothing changed, None when the tile should run whole (as when `changed` is None)."""
    if changed is None:
        return None
    count, _, stats, _ = cv2.connectedComponentsWithStats(changed.astype(np.uint8),
                                                               connectivity=8)
    pastes = [Rect(int(y) * block, min(height, int(y + h) * block),
                   int(x) * block, min(width, int(x + w) * block)
                   ).grown(reach.change, height, width)
              for x, y, w, h, _ in stats[1:count]]
    pastes = _merge(pastes, reach.context, height, width)
    regions = [Region(p.grown(reach.context, height, width), p) for p in pastes]
    if sum(r.run.area for r in regions) > WHOLE_SHARE * height * width:
        return None
    return regions


def _merge(pastes: list[Rect], context: int, height: int, width: int) -> list[Rect]:
    """Merge two rectangles while their merged run costs no more than their two runs (which
    may overlap: then both compute the overlap)."""
    def cost(rect: Rect) -> int:
        return rect.grown(context, height, width).area

    rects = list(pastes)
    merged = True
    while merged and len(rects) > 1:
        merged = False
        best: tuple[int, int, int] | None = None  # (saving, i, j)
        for i in range(len(rects)):
            for j in range(i + 1, len(rects)):
                saving = cost(rects[i]) + cost(rects[j]) - cost(rects[i].union(rects[j]))
                if saving >= 0 and (best is None or saving > best[0]):
                    best = (saving, i, j)
        if best is not None:
            _, i, j = best
            rects[i] = rects[i].union(rects.pop(j))
            merged = True
    return rects


def batches(regions: list[Region], height: int, width: int) -> list[list[Region]]:
    """`regions` grouped into executor calls: all in one batch when running each on the
    largest run's shape (runs grown within the tile, pastes unchanged) wastes little, else one
    call each."""
    if len(regions) < 2:
        return [regions]
    shape_h = max(r.run.shape[0] for r in regions)
    shape_w = max(r.run.shape[1] for r in regions)
    if len(regions) * shape_h * shape_w > BATCH_WASTE * sum(r.run.area for r in regions):
        return [[r] for r in regions]
    return [[Region(_fit(r.run, shape_h, shape_w, height, width), r.paste) for r in regions]]


def _fit(run: Rect, shape_h: int, shape_w: int, height: int, width: int) -> Rect:
    """`run` grown to shape_h x shape_w about its centre, moved inside the tile."""
    y0 = min(max(0, run.y0 - (shape_h - run.shape[0]) // 2), height - shape_h)
    x0 = min(max(0, run.x0 - (shape_w - run.shape[1]) // 2), width - shape_w)
    return Rect(y0, y0 + shape_h, x0, x0 + shape_w)
