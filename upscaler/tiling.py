"""Tile plans and the feathering stitcher.

A plan cuts a frame into a grid of equal tiles that overlap by at least `overlap` pixels so that
the seams can be blended away. `choose_tile` picks the tile shape: the whole frame when it fits
the limits (a memory budget in pixels and a cap on the side), otherwise the grid of tiles that
fit with the least model work, then the fewest tiles. Each axis is divided evenly by its tile
count, so a 320-pixel axis cut in two gets two 168-pixel tiles, not two 256-pixel ones, and
tiles are rectangular where that wastes less. The geometry is worked out once for one axis
(`axis_tile`, `axis_count`, `plan_axis`) and used for both. Along an axis the tile count comes
first and the positions are then spread evenly, so every overlap is about the same size (as
chaiNNer's tiler does). Tiles at the image borders are shifted inward rather than padded: the
model then sees the same zero-padded border it would see on the whole frame. Only a fixed-shape
executor's tile longer than the image is filled, by reflect-padding, and the padding cropped
from the output.

Arrays are pixels, (H, W, C), as frames travel (see pixels.py); a tile's slices apply to the
first two axes.
"""

from __future__ import annotations

import functools
import itertools
import math
from dataclasses import dataclass

import numpy as np

from upscaler.errors import ExecutorError, UsageError

RAMP_FLOOR = 1e-3
WORK_TIE = 1.01  # grids within 1% of the least model work count as equally fast
TileShape = tuple[int, int]  # (height, width) in input pixels


@dataclass(frozen=True)
class Span:
    """One tile's extent along one axis, in input pixels of the padded image.

    `before` and `after` are the overlaps with the neighbouring tiles, 0 at the image borders.
    """

    start: int
    stop: int
    before: int
    after: int


@dataclass(frozen=True)
class AxisPlan:
    """How one axis of `length` pixels is covered; `padded` = max(length, tile)."""

    length: int
    padded: int
    spans: tuple[Span, ...]


@dataclass(frozen=True)
class Tile:
    """One tile: where it is read from the padded input and where it goes in the output.

    `row` and `col` index the plan's row and column spans (for the blending weights).
    """

    row: int
    col: int
    y: slice
    x: slice
    out_y: slice
    out_x: slice


@dataclass(frozen=True)
class TilePlan:
    """The tiles of a `height` x `width` frame for a model that upscales by `scale`.

    `tile` is the (height, width) of every tile.
    """

    height: int
    width: int
    tile: TileShape
    overlap: int
    scale: int
    rows: AxisPlan
    cols: AxisPlan
    tiles: tuple[Tile, ...]

    @functools.cached_property
    def row_weights(self) -> tuple[np.ndarray, ...]:
        """Blending weights of each row span, normalised (see blend_weights); built once."""
        return blend_weights(self.rows, self.scale)

    @functools.cached_property
    def col_weights(self) -> tuple[np.ndarray, ...]:
        return blend_weights(self.cols, self.scale)

    @property
    def padded_shape(self) -> tuple[int, int]:
        return self.rows.padded, self.cols.padded

    @property
    def out_shape(self) -> tuple[int, int]:
        return self.height * self.scale, self.width * self.scale

    @property
    def model_pixels(self) -> int:
        """Input pixels the model runs on for one frame, overlaps and padding included."""
        return len(self.tiles) * self.tile[0] * self.tile[1]

    @property
    def overlap_share(self) -> float:
        """Model work beyond the frame's own pixels: model pixels / frame pixels - 1."""
        return self.model_pixels / (self.height * self.width) - 1

    def pad(self, image: np.ndarray) -> np.ndarray:
        """`image` (height, width, ...), reflect-padded at the bottom and right up to the tile."""
        pad_y, pad_x = self.rows.padded - self.height, self.cols.padded - self.width
        if pad_y == 0 and pad_x == 0:
            return image
        widths = [(0, pad_y), (0, pad_x)] + [(0, 0)] * (image.ndim - 2)
        return np.pad(image, widths, mode="reflect")

    def crop(self, output: np.ndarray) -> np.ndarray:
        """The upscaled padded frame `output` (H*s, W*s, ...) without the upscaled padding."""
        out_h, out_w = self.out_shape
        return output[:out_h, :out_w]


def axis_tile(length: int, count: int, overlap: int) -> int:
    """The shortest tile with which `count` tiles overlapping by >= `overlap` cover `length`."""
    return -(-(length + (count - 1) * overlap) // count)


def axis_count(length: int, limit: int, overlap: int) -> int:
    """The fewest tiles of at most `limit` pixels, overlapping by >= `overlap`, over `length`.

    axis_tile(length, axis_count(...), overlap) is then <= limit.
    """
    if length <= limit:
        return 1
    if limit <= overlap:
        raise UsageError(f"tile size {limit} must be larger than the overlap {overlap}")
    return math.ceil((length - overlap) / (limit - overlap))


def choose_tile(height: int, width: int, overlap: int, *, max_pixels: int | None = None,
                max_side: int | None = None) -> TileShape:
    """The tile shape for a `height` x `width` frame on an executor that takes any shape.

    The whole frame when it has at most `max_pixels` pixels (None: no limit) and no side
    longer than `max_side` (None: no limit). Otherwise every grid whose tiles fit both limits
    is considered, each axis divided evenly among its tiles, and the one with the least model
    work (tiles x tile pixels) is taken; grids within WORK_TIE of the least count as equal,
    and of those the one with the fewest tiles wins (fewer seams, fewer calls). Raises
    UsageError when no tile longer than the overlap fits.
    """
    side = max_side if max_side is not None else max(height, width)
    pixels = max_pixels if max_pixels is not None else height * width
    grids: list[tuple[int, int, TileShape]] = []  # (model pixels, tiles, shape)
    for rows in range(1, height + 1):
        tile_h = axis_tile(height, rows, overlap)
        if rows > 1 and tile_h <= overlap:
            break
        # More rows cover at least (height + (rows - 1) * overlap) x width: past the least work
        # found so far, no grid with more rows can win.
        if grids and (height + (rows - 1) * overlap) * width > min(grids)[0] * WORK_TIE:
            break
        limit = min(side, pixels // tile_h)
        if tile_h > side or (width > limit and limit <= overlap):
            continue
        tile_w = axis_tile(width, axis_count(width, limit, overlap), overlap)
        count = axis_count(height, tile_h, overlap) * axis_count(width, tile_w, overlap)
        grids.append((count * tile_h * tile_w, count, (tile_h, tile_w)))
        if count == 1:
            break
    if not grids:
        raise UsageError(f"no tile of a {height}x{width} frame fits in {max_pixels} pixels "
                         f"and {max_side} px a side with an overlap of {overlap}")
    least = min(work for work, _, _ in grids)
    near = [(count, work, shape) for work, count, shape in grids if work <= least * WORK_TIE]
    return min(near)[2]


def plan_axis(length: int, tile: int, overlap: int, pad_to_tile: bool = True) -> AxisPlan:
    """Cover `length` pixels with tiles of `tile` pixels overlapping by at least `overlap`.

    An axis shorter than the tile is one tile: reflect-padded to `tile` when the executor takes
    only that shape (`pad_to_tile`), else as long as the axis, since padding would only be work.
    """
    if length <= tile:
        size = tile if pad_to_tile else length
        return AxisPlan(length, size, (Span(0, size, 0, 0),))
    # The fewest tiles whose overlaps can all be >= overlap, then spread evenly; rounding each
    # start to the nearest pixel keeps every step <= tile - overlap.
    count = axis_count(length, tile, overlap)
    travel, gaps = length - tile, count - 1
    starts = [(i * travel + gaps // 2) // gaps for i in range(count)]
    spans = tuple(
        Span(
            start,
            start + tile,
            before=starts[i - 1] + tile - start if i > 0 else 0,
            after=start + tile - starts[i + 1] if i < gaps else 0,
        )
        for i, start in enumerate(starts)
    )
    return AxisPlan(length, length, spans)


def plan_tiles(height: int, width: int, tile: int | TileShape, overlap: int = 16,
               scale: int = 1, pad_to_tile: bool = True) -> TilePlan:
    """The plan for a `height` x `width` frame; tiles of `tile` (a side, or (height, width)),
    overlap >= `overlap`. An axis longer than its tile needs a tile longer than the overlap.

    With `pad_to_tile` off (executors that take any shape), an axis shorter than the tile gets
    tiles as long as the axis instead of padded ones.
    """
    tile_h, tile_w = (tile, tile) if isinstance(tile, int) else tile
    if height < 1 or width < 1:
        raise UsageError(f"cannot tile an empty {height}x{width} frame")
    if scale < 1:
        raise UsageError(f"scale must be at least 1, not {scale}")
    if overlap < 0 or min(tile_h, tile_w) < 1:
        raise UsageError(f"invalid tile {tile_h}x{tile_w} or overlap {overlap}")
    rows = plan_axis(height, tile_h, overlap, pad_to_tile)
    cols = plan_axis(width, tile_w, overlap, pad_to_tile)
    tiles = tuple(
        Tile(
            r, c,
            slice(ys.start, ys.stop), slice(xs.start, xs.stop),
            slice(ys.start * scale, ys.stop * scale), slice(xs.start * scale, xs.stop * scale),
        )
        for r, ys in enumerate(rows.spans)
        for c, xs in enumerate(cols.spans)
    )
    shape = (rows.spans[0].stop - rows.spans[0].start, cols.spans[0].stop - cols.spans[0].start)
    return TilePlan(height, width, shape, overlap, scale, rows, cols, tiles)


def feather(span: Span, scale: int) -> np.ndarray:
    """Blending weights along one axis of an upscaled tile: 1 inside, ramps over the overlaps,
    none at the image borders.

    Where two tiles overlap, one's falling ramp and the other's rising ramp sum to about 1 (the
    stitcher divides by the summed weights, so they need not be exact). The ramps rise over the
    middle half of the overlap only: a tile's outer pixels are its worst, the model having seen
    the least around them, so they are left to the neighbour, which saw more.
    """
    weight = np.ones((span.stop - span.start) * scale, np.float32)
    if span.before:
        weight[:span.before * scale] *= _ramp(span.before * scale)
    if span.after:
        weight[-span.after * scale:] *= _ramp(span.after * scale)[::-1]
    return weight


def blend_weights(axis: AxisPlan, scale: int) -> tuple[np.ndarray, ...]:
    """Each span's feather weights divided by the sum of all spans' weights at each pixel.

    The tiles form a grid and a tile's 2-D weight is the outer product of its row and column
    weights, so the summed weight of all tiles is the product of the two axes' sums. Normalising
    each axis once per plan therefore blends a frame with no per-frame weight map or division.
    """
    raw = [feather(span, scale) for span in axis.spans]
    total = np.zeros(axis.padded * scale, np.float32)
    for span, weight in zip(axis.spans, raw, strict=True):
        total[span.start * scale:span.stop * scale] += weight
    return tuple(weight / total[span.start * scale:span.stop * scale]
                 for span, weight in zip(axis.spans, raw, strict=True))


def _ramp(n: int) -> np.ndarray:
    # A raised cosine from 0 to 1 across the middle half of n pixels, sampled at pixel centres;
    # the floor keeps every weight above 0 so that the normalisation never divides by 0.
    middle = np.clip(((np.arange(n) + 0.5) / n - 0.25) * 2, 0.0, 1.0)
    return np.maximum(0.5 - 0.5 * np.cos(np.pi * middle), RAMP_FLOOR).astype(np.float32)


def _cells(axis: AxisPlan, scale: int) -> list[tuple[int, int, tuple[int, ...]]]:
    """An axis of the output cut where any span starts or stops: (start, stop, the spans that
    cover it). Most cells lie in one span; only the overlaps lie in two or more."""
    edges = sorted({e * scale for span in axis.spans for e in (span.start, span.stop)})
    return [(a, b, tuple(i for i, span in enumerate(axis.spans)
                         if span.start * scale <= a and b <= span.stop * scale))
            for a, b in itertools.pairwise(edges)]


class Stitcher:
    """Blends the upscaled tiles of one frame, as pixels (h*s, w*s, C) of one dtype, into the
    upscaled frame as they come.

    Where one tile alone covers a place (its weight is 1 there), its pixels are copied as they
    are; only the overlap bands are blended, in float32, and rounded back. Each part of the
    frame is written as soon as every tile over it has been added, and a tile is let go once
    all of its parts are written: tiles added row by row are held for about one row of tiles,
    not the whole frame's (a 3000x2000 image at 4x is 288 MB of pixels; its tiles held
    together were as much again, with their overlaps).
    """

    def __init__(self, plan: TilePlan, channels: int = 3) -> None:
        self.plan = plan
        self.channels = channels
        self._tiles: dict[tuple[int, int], np.ndarray] = {}
        self._out: np.ndarray | None = None
        s = plan.scale
        # (y0, y1, x0, x1, the (row, col) of every tile over it), each written once.
        self._todo = [(y0, y1, x0, x1, tuple((r, c) for r in rows for c in cols))
                      for y0, y1, rows in _cells(plan.rows, s)
                      for x0, x1, cols in _cells(plan.cols, s)]
        self._uses: dict[tuple[int, int], int] = {}
        self._cells_of: dict[tuple[int, int], list[int]] = {}
        for i, (*_, keys) in enumerate(self._todo):
            for key in keys:
                self._uses[key] = self._uses.get(key, 0) + 1
                self._cells_of.setdefault(key, []).append(i)
        self._left = len(self._todo)
        self._added = 0

    def add(self, tile: Tile, upscaled: np.ndarray) -> None:
        """Take `upscaled` (tile*scale, tile*scale, C), the executor's output for `tile`, and
        write every part of the frame that now has all its tiles."""
        expected = (tile.out_y.stop - tile.out_y.start, tile.out_x.stop - tile.out_x.start,
                    self.channels)
        if upscaled.shape != expected:
            raise ExecutorError(f"executor returned a tile of shape {upscaled.shape}, "
                                f"expected {expected}")
        if self._out is None:
            plan, s = self.plan, self.plan.scale
            self._out = np.empty((plan.rows.padded * s, plan.cols.padded * s, self.channels),
                                 upscaled.dtype)
        self._tiles[tile.row, tile.col] = upscaled
        self._added += 1
        for i in self._cells_of.pop((tile.row, tile.col), []):
            cell = self._todo[i]
            if all(key in self._tiles for key in cell[4]):
                self._write(*cell)
                self._left -= 1

    def _write(self, y0: int, y1: int, x0: int, x1: int,
               keys: tuple[tuple[int, int], ...]) -> None:
        plan, s, out = self.plan, self.plan.scale, self._out
        assert out is not None  # for type checkers; add() made it
        parts = [(r, c, self._tiles[r, c][y0 - plan.rows.spans[r].start * s:
                                          y1 - plan.rows.spans[r].start * s,
                                          x0 - plan.cols.spans[c].start * s:
                                          x1 - plan.cols.spans[c].start * s])
                 for r, c in keys]
        if len(parts) == 1:
            out[y0:y1, x0:x1] = parts[0][2]
        else:
            blend = np.zeros((y1 - y0, x1 - x0, self.channels), np.float32)
            for r, c, part in parts:
                ry, cx = plan.rows.spans[r].start * s, plan.cols.spans[c].start * s
                weight = (plan.row_weights[r][y0 - ry:y1 - ry, None]
                          * plan.col_weights[c][x0 - cx:x1 - cx])
                blend += part * weight[..., None]
            out[y0:y1, x0:x1] = _round_to(blend, out.dtype)
        for key in keys:
            self._uses[key] -= 1
            if not self._uses[key]:
                del self._tiles[key]  # every part it covers is written

    def result(self) -> np.ndarray:
        """The upscaled frame (height*scale, width*scale, C), once every tile has been added."""
        if self._left or self._out is None:
            raise ExecutorError(f"only {self._added} of {len(self.plan.tiles)} tiles were "
                                "added")
        return self.plan.crop(self._out)


def _round_to(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Blended values back to `dtype`: rounded and clamped for integers, as they are else."""
    if not np.issubdtype(dtype, np.integer):
        return values
    info = np.iinfo(dtype)
    return np.clip(np.rint(values), info.min, info.max).astype(dtype)
