"""Upscale whole frames with an executor: plan the tiles, run them in batches, blend them back.

The plan comes from two limits: `max_pixels`, the memory budget of one executor call, and
`tile`, a cap on a tile's side (the user's --tile). A frame within both runs whole; a larger one
is cut into the fewest tiles that fit (see tiling.choose_tile). When the executor runs out of
memory the tile side is halved and the frame retried; the smaller cap is kept for the frames
after it, so a long video pays for finding it only once.
With a `TileReuse`, tiles whose input has not changed since they were last computed take their
stored output instead of a model pass (see reuse.py). With the model's `Reach` as well, a tile
that did change is compared block by block with the input last computed there, and only its
dirty regions go through the model, pasted into the held output (see dirty.py).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Hashable

import numpy as np

from upscaler.borders import crop_frame, pad_frame
from upscaler.dirty import Reach, batches, changed_blocks, plan_regions
from upscaler.errors import (
    ExecutorError,
    MediaError,
    OutOfMemoryError,
    UsageError,
    is_out_of_memory,
    memory_message,
)
from upscaler.executors.base import Executor
from upscaler.pixels import run_pixels
from upscaler.reuse import TileReuse
from upscaler.tiling import Stitcher, TilePlan, TileShape, choose_tile, plan_tiles

log = logging.getLogger(__name__)
MIN_TILE = 32  # below this the overlaps cost more than the tiles are worth


class FrameUpscaler:
    """Runs `executor` over frames, tiled or whole.

    tile: the longest tile side in input pixels; 0 for no cap. max_pixels: the most input
      pixels one executor call may take (the memory budget), None for no limit. With neither,
      each frame runs in one call. overlap: minimum overlap of tiles, in input pixels.
    batch: tiles per executor call; None for 1, or all of a frame's tiles on a fixed-shape
      executor (Core ML runs a batch one tile after another, so it costs no extra memory).
    A fixed-shape executor takes tiles of its `fixed_tile` only. One that can be rebuilt for
    another shape (`can_reshape`, Core ML from ncnn weights) is given the tile shape the plan
    chooses for each frame size, so that its tiles divide the frame with no padding.
    border: pixels mirrored out on every side of a frame before the model and cropped after (see
    borders.py; the model's `border`); the plan covers the padded frame. reuse: held-tile reuse
    (video), None for none. reach: the model's margins around a change (dirty.Reach); with
    reuse, a changed tile then recomputes only its dirty regions. None (a model that sees the
    whole frame, or one whose reach is unknown) recomputes changed tiles whole, as does a
    fixed-shape executor, whose only shape is the tile's.

    Attributes a caller may read: `tile`, `max_pixels`, `overlap` and `batch` as currently used
    (they shrink after an out-of-memory error), `tiles_run` (executor inputs run, a whole frame
    counting as one), `frames_run`, `oom_retries`, `plans_built`, and the work done: the
    pixels of the frames given (`frame_pixels`), of the frames as planned (`planned_pixels`,
    more when a frame is padded before tiling) and given to the executor (`pixels_run`,
    overlaps and retries included), and the seconds spent inside the executor
    (`executor_seconds`), and `tiles_reused` (tiles given their stored output instead) and
    `frames_reused` (frames for which the model did not run at all; a frame is a call on the
    main stream with the calls on other streams after it, a picture's alpha), `tiles_patched`
    (tiles, counted in `tiles_run` too, of which only dirty regions ran) and `full_pixels` (the
    executor input pixels the same frames take with neither: pixels_run / full_pixels is the
    share of the model's work done).
    """

    def __init__(self, executor: Executor, tile: int = 0, overlap: int = 16,
                 batch: int | None = 1, *, max_pixels: int | None = None,
                 min_tile: int = MIN_TILE, border: int = 0,
                 reuse: TileReuse | None = None, reach: Reach | None = None) -> None:
        if tile < 0 or overlap < 0 or (batch is not None and batch < 1) or (
                max_pixels is not None and max_pixels < 1):
            raise UsageError(f"invalid tiling: tile {tile}, overlap {overlap}, batch {batch}, "
                             f"max_pixels {max_pixels}")
        if tile and tile <= overlap:
            raise UsageError(f"tile size {tile} must be larger than the overlap {overlap}")
        self.executor = executor
        self.reshapes = bool(getattr(executor, "can_reshape", False))
        self.tile = tile
        self.max_pixels = max_pixels
        self.border = max(0, border)
        self.overlap = overlap
        self.batch = batch
        self.min_tile = min_tile
        self.reuse = reuse
        self.reach = reach
        self._stream = ""
        # Told (tiles done, tiles) of the frame under way after each batch of a tiled one: how
        # a picture that takes minutes shows its progress before it ends (pipeline.py).
        self.on_tiles: Callable[[int, int], None] | None = None
        self._plans: dict[tuple[int, int, int, int | None, int], TilePlan] = {}
        self.reset_counts()

    def reset_counts(self) -> None:
        """Zero the work counters (see the class), for a new job on the same upscaler; the
        limits it learned (a tile shrunk for memory) and its plans stay."""
        self.tiles_run = 0
        self.frames_run = 0
        self.pixels_run = 0
        self.frame_pixels = 0
        self.planned_pixels = 0
        self.executor_seconds = 0.0
        self.oom_retries = 0
        self.plans_built = 0
        self.tiles_reused = 0
        self.frames_reused = 0
        self._frame_reused = False
        self.tiles_patched = 0
        self.full_pixels = 0

    @property
    def fixed(self) -> bool:
        """True when the executor takes only its `fixed_tile` and cannot be rebuilt."""
        return self.executor.fixed_tile is not None and not self.reshapes

    def upscale(self, frame: np.ndarray, stream: str = "") -> np.ndarray:
        """(H, W, 3) RGB pixels, uint8 or uint16 -> (H*s, W*s, 3) of the same dtype.

        The frame stays in pixels throughout; each tile becomes float only at the executor's
        edge (pixels.py). A whole frame costs one conversion each way and no copy; a tiled one
        blends only the overlap bands (tiling.Stitcher). The result may be a view, read-only
        where it is a held output (reuse): copy it before writing into it. `stream` names the
        sequence the frame belongs to for reuse: frames of another stream (a picture's alpha
        beside its colours) are never compared with this one's.
        """
        if (frame.ndim != 3 or frame.shape[2] != 3 or frame.shape[0] < 1 or frame.shape[1] < 1
                or frame.dtype not in (np.uint8, np.uint16)):
            raise MediaError(f"expected an (H, W, 3) uint8 or uint16 RGB frame, got shape "
                             f"{frame.shape} {frame.dtype}")
        self.frame_pixels += frame.shape[0] * frame.shape[1]
        self._stream = stream
        padded = pad_frame(frame, self.border)
        tiles_run = self.tiles_run
        while True:
            plan = self.plan(*padded.shape[:2])
            try:
                out = self._run(padded, plan)
                break
            except Exception as e:
                # Besides the executor's own: our buffers (a tile's pixels, its float planes,
                # the stitched frame, OpenCV's outputs) that did not fit; smaller tiles need
                # less of them too.
                if not (isinstance(e, OutOfMemoryError) or is_out_of_memory(e)):
                    raise
                self._shrink(plan, e if isinstance(e, OutOfMemoryError) else OutOfMemoryError(
                    memory_message(e, f"{self.executor.name}: out of memory for a "
                                      f"{plan.tile[0]}x{plan.tile[1]} px tile")))
                self.oom_retries += 1
                if self.reuse is not None:
                    self.reuse.reset()  # the old plan's tiles will not come again
        ran = self.tiles_run != tiles_run
        if not stream:
            self.frames_run += 1
            self._frame_reused = self.reuse is not None and not ran
            self.frames_reused += self._frame_reused
        elif ran and self._frame_reused:
            # Another stream (a picture's alpha) is part of the last frame, which was counted
            # as reused whole: the model did run for it after all.
            self.frames_reused -= 1
            self._frame_reused = False
        self.planned_pixels += plan.height * plan.width
        self.full_pixels += plan.model_pixels
        # A view, not a copy: the writer takes it row by row (a 4K frame is 25 MB). It may be
        # a held output that reuse hands out again, and is then read-only.
        return crop_frame(out, self.border * self.executor.scale)

    def plan(self, height: int, width: int) -> TilePlan:
        """The tile plan for frames of `height` x `width` under the current limits (cached)."""
        key = (height, width, self.tile, self.max_pixels, self.overlap)
        plan = self._plans.get(key)
        if plan is None:
            shape = self._tile_shape(height, width)
            # A model fixed to tiles no larger than the overlap (a user's 16x16 ONNX) overlaps
            # them by half a tile, as a --tile that small does (pipeline._overlap).
            small = self.fixed and min(shape) <= self.overlap
            overlap = min(shape) // 2 if small else self.overlap
            plan = plan_tiles(height, width, shape, overlap, self.executor.scale,
                              pad_to_tile=self.fixed)
            self._plans[key] = plan
            self.plans_built += 1
        return plan

    def _tile_shape(self, height: int, width: int) -> TileShape:
        if self.fixed:
            assert self.executor.fixed_tile is not None  # for type checkers; see `fixed`
            return self.executor.fixed_tile
        return choose_tile(height, width, self.overlap, max_pixels=self.max_pixels,
                           max_side=self.tile or None)

    def _run(self, frame: np.ndarray, plan: TilePlan) -> np.ndarray:
        if getattr(self.executor, "exact_tiles", False):
            # It tiles exactly itself (executors/processed.py): the whole frame, and the
            # plan's tile shape as its limit.
            whole = len(plan.tiles) == 1 and plan.padded_shape == (plan.height, plan.width)
            self.executor.set_tile(None if whole else plan.tile,  # type: ignore[attr-defined]
                                   self.on_tiles)
            return self._run_whole(frame)
        if self.reshapes and self.executor.fixed_tile != plan.tile:
            self.executor.reshape(*plan.tile)  # type: ignore[attr-defined]  # see can_reshape
        if len(plan.tiles) == 1 and plan.padded_shape == (plan.height, plan.width):
            return self._run_whole(frame)
        return self._run_tiled(frame, plan)

    def _execute(self, batch: np.ndarray) -> np.ndarray:
        start = time.perf_counter()
        try:
            return run_pixels(self.executor, batch)
        finally:
            self.executor_seconds += time.perf_counter() - start
            self.pixels_run += batch.shape[0] * batch.shape[1] * batch.shape[2]

    def _run_whole(self, frame: np.ndarray) -> np.ndarray:
        out = self._run_batch(frame[None], [(0, frame.shape[0], 0, frame.shape[1])])[0]
        s = self.executor.scale
        expected = (frame.shape[0] * s, frame.shape[1] * s, 3)
        if out.shape != expected:
            raise ExecutorError(f"executor returned a frame of shape {out.shape}, "
                                f"expected {expected}")
        return out

    def _run_tiled(self, frame: np.ndarray, plan: TilePlan) -> np.ndarray:
        padded = plan.pad(frame)
        stitcher = Stitcher(plan)
        tiles = plan.tiles
        batch = self.batch or (len(tiles) if self.executor.fixed_tile is not None else 1)
        for i in range(0, len(tiles), batch):
            group = tiles[i:i + batch]
            out = self._run_batch(np.stack([padded[t.y, t.x] for t in group]),
                                  [(t.y.start, t.y.stop, t.x.start, t.x.stop) for t in group])
            for tile, upscaled in zip(group, out, strict=True):
                stitcher.add(tile, upscaled)
            if self.on_tiles is not None:
                self.on_tiles(i + len(group), len(tiles))
        return stitcher.result()

    def _run_batch(self, batch: np.ndarray, keys: list[tuple[int, int, int, int]],
                   ) -> list[np.ndarray]:
        """The executor's output for each tile of `batch`; `keys` say where each tile lies.

        Tiles that `self.reuse` finds unchanged take their stored output and skip the model;
        changed ones recompute only their dirty regions where they can (_run_dirty). Reuse
        keys are the frame's stream and the tile's place.
        """
        keys = [(self._stream, *key) for key in keys]  # type: ignore[misc]
        outs = [None if self.reuse is None else self.reuse.lookup(key, tile)
                for key, tile in zip(keys, batch, strict=True)]
        patched = 0
        for i, out in enumerate(outs):
            if out is None:
                outs[i], ran = self._run_dirty(keys[i], batch[i])
                patched += ran
        todo = [i for i, out in enumerate(outs) if out is None]
        if todo:
            run = batch if len(todo) == len(batch) else np.ascontiguousarray(batch[todo])
            computed = self._execute(run)
            if len(computed) != len(todo):
                raise ExecutorError(f"executor returned {len(computed)} tiles for {len(todo)}")
            for i, upscaled in zip(todo, computed, strict=True):
                outs[i] = upscaled
                if self.reuse is not None:
                    self.reuse.store(keys[i], batch[i], upscaled)
        self.tiles_run += len(todo) + patched
        self.tiles_patched += patched
        self.tiles_reused += len(batch) - len(todo) - patched
        return outs  # type: ignore[return-value]  # every None was filled

    def _run_dirty(self, key: Hashable, tile: np.ndarray,
                   ) -> tuple[np.ndarray | None, bool]:
        """The output of a changed `tile` from its held output with only the dirty regions
        recomputed, and whether the model ran; (None, False) where the tile must run whole."""
        if (self.reuse is None or self.reach is None or self.executor.fixed_tile is not None
                or self.reshapes):
            return None, False
        held = self.reuse.held(key, tile)
        if held is None:
            return None, False
        reference, output = held
        height, width = tile.shape[:2]
        regions = plan_regions(changed_blocks(tile, reference, self.reuse.rule), height,
                               width, self.reach)
        if regions is None:
            return None, False
        if not regions:
            return output, False
        s = self.executor.scale
        result = np.array(output)  # the held one is read-only and may be out in the writer
        for group in batches(regions, height, width):
            runs = np.stack([tile[r.run.y0:r.run.y1, r.run.x0:r.run.x1] for r in group])
            computed = self._execute(runs)
            expected = (len(group), runs.shape[1] * s, runs.shape[2] * s, 3)
            if computed.shape != expected:
                raise ExecutorError(f"executor returned shape {computed.shape}, expected "
                                    f"{expected}")
            for region, upscaled in zip(group, computed, strict=True):
                run, paste = region.run, region.paste
                result[paste.y0 * s:paste.y1 * s, paste.x0 * s:paste.x1 * s] = upscaled[
                    (paste.y0 - run.y0) * s:(paste.y1 - run.y0) * s,
                    (paste.x0 - run.x0) * s:(paste.x1 - run.x0) * s]
        self.reuse.patch(key, tile, result, [(slice(r.paste.y0, r.paste.y1),
                                              slice(r.paste.x0, r.paste.x1)) for r in regions])
        return result, True

    def _shrink(self, plan: TilePlan, error: OutOfMemoryError) -> None:
        """Make the next attempt smaller, or raise when nothing is left to shrink."""
        batch = self.batch or (len(plan.tiles) if self.executor.fixed_tile is not None else 1)
        if batch > 1 and len(plan.tiles) > 1:
            # Fewer tiles at once before smaller tiles: the tile size is the quality.
            self.batch = max(1, min(batch, len(plan.tiles)) // 2)
            return
        if self.fixed:
            # The tile is the model's input shape; only the batch could give.
            raise OutOfMemoryError(
                f"{self.executor.name}: out of memory even with one {plan.tile[0]}x"
                f"{plan.tile[1]} px tile") from error
        # Halve the cap on the tile side; with no cap yet, start from the tile that failed.
        tile = (self.tile or max(plan.tile)) // 2
        if tile < self.min_tile:
            raise OutOfMemoryError(
                f"{self.executor.name}: out of memory even with {plan.tile[0]}x{plan.tile[1]}"
                f" px tiles (minimum {self.min_tile})") from error
        self.tile = tile
        self.overlap = min(self.overlap, tile // 2)
        log.info("%s: out of memory with %dx%d px tiles; trying tiles of at most %d px",
                 self.executor.name, plan.tile[0], plan.tile[1], tile)
