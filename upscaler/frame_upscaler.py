"""Upscale whole frames with an executor: cut into tiles, run them in batches, blend them back.

When the executor runs out of memory the tile size is halved and the frame retried; the smaller
size is kept for the frames after it, so a long video pays for finding it only once.
With a `TileReuse`, tiles whose input has not changed since they were last computed take their
stored output instead of a model pass (see reuse.py).
"""

from __future__ import annotations

import numpy as np

from upscaler.borders import crop_frame, pad_frame
from upscaler.errors import ExecutorError, MediaError, OutOfMemoryError, UsageError
from upscaler.executors.base import Executor
from upscaler.reuse import TileReuse
from upscaler.tiling import Stitcher, TilePlan, plan_tiles

FIRST_TILE = 512  # where tiling starts when a whole frame did not fit
MIN_TILE = 32  # below this the overlaps cost more than the tiles are worth


class FrameUpscaler:
    """Runs `executor` over frames, tiled or whole.

    tile: input tile size; 0 runs each frame in one call (not possible with a fixed-shape
      executor, whose `fixed_tile` always wins). overlap: minimum overlap of tiles, in input
      pixels. batch: tiles per executor call. border: pixels mirrored out on every side of a
      frame before the model and cropped after (see borders.py; the model's `border`).
      reuse: held-tile reuse (video), None for none.

    Attributes a caller may read: `tile`, `overlap` and `batch` as currently used (they shrink
    after an out-of-memory error), `tiles_run` (executor inputs run, a whole frame counting as
    one), `frames_run`, `oom_retries`, `plans_built`, `tiles_reused` (tiles given their stored
    output instead) and `frames_reused` (frames for which the model did not run at all).
    """

    def __init__(self, executor: Executor, tile: int = 0, overlap: int = 16, batch: int = 1,
                 *, min_tile: int = MIN_TILE, border: int = 0,
                 reuse: TileReuse | None = None) -> None:
        if tile < 0 or overlap < 0 or batch < 1:
            raise UsageError(f"invalid tiling: tile {tile}, overlap {overlap}, batch {batch}")
        if executor.fixed_tile is not None:
            tile = executor.fixed_tile
        if tile and tile <= overlap:
            raise UsageError(f"tile size {tile} must be larger than the overlap {overlap}")
        self.executor = executor
        self.tile = tile
        self.overlap = overlap
        self.batch = batch
        self.min_tile = min_tile
        self.border = max(0, border)
        self.tiles_run = 0
        self.frames_run = 0
        self.oom_retries = 0
        self.plans_built = 0
        self.reuse = reuse
        self.tiles_reused = 0
        self.frames_reused = 0
        self._plans: dict[tuple[int, int, int, int], TilePlan] = {}

    def upscale(self, rgb: np.ndarray) -> np.ndarray:
        """float32 (H, W, 3) RGB in [0, 1] -> float32 (H*s, W*s, 3) in [0, 1]."""
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.shape[0] < 1 or rgb.shape[1] < 1:
            raise MediaError(f"expected an (H, W, 3) RGB frame, got shape {rgb.shape}")
        padded = pad_frame(rgb, self.border)
        chw = np.ascontiguousarray(padded.transpose(2, 0, 1), dtype=np.float32)
        tiles_run = self.tiles_run
        while True:
            try:
                out = self._run_whole(chw) if self.tile == 0 else self._run_tiled(chw)
                break
            except OutOfMemoryError as e:
                self._shrink(chw.shape[1], chw.shape[2], e)
                self.oom_retries += 1
                if self.reuse is not None:
                    self.reuse.reset()  # the old plan's tiles will not come again
        self.frames_run += 1
        self.frames_reused += self.reuse is not None and self.tiles_run == tiles_run
        # A copy, always: `out` may be a reused output, which must stay as it is.
        hwc = np.array(crop_frame(out.transpose(1, 2, 0), self.border * self.executor.scale),
                       order="C")
        return np.clip(hwc, 0.0, 1.0, out=hwc)

    def _run_whole(self, chw: np.ndarray) -> np.ndarray:
        out = self._run_batch(chw[None], [(0, chw.shape[1], 0, chw.shape[2])])[0]
        s = self.executor.scale
        expected = (3, chw.shape[1] * s, chw.shape[2] * s)
        if out.shape != expected:
            raise ExecutorError(f"executor returned a frame of shape {out.shape}, "
                                f"expected {expected}")
        return out

    def _run_tiled(self, chw: np.ndarray) -> np.ndarray:
        plan = self._plan(chw.shape[1], chw.shape[2])
        padded = plan.pad(chw)
        stitcher = Stitcher(plan)
        tiles = plan.tiles
        for i in range(0, len(tiles), self.batch):
            group = tiles[i:i + self.batch]
            out = self._run_batch(np.stack([padded[:, t.y, t.x] for t in group]),
                                  [(t.y.start, t.y.stop, t.x.start, t.x.stop) for t in group])
            for tile, upscaled in zip(group, out, strict=True):
                stitcher.add(tile, upscaled)
        return stitcher.result()

    def _run_batch(self, batch: np.ndarray, keys: list[tuple[int, int, int, int]],
                   ) -> list[np.ndarray]:
        """The executor's output for each tile of `batch`; `keys` say where each tile lies.

        Tiles that `self.reuse` finds unchanged take their stored output and skip the model.
        """
        outs = [None if self.reuse is None else self.reuse.lookup(key, tile)
                for key, tile in zip(keys, batch, strict=True)]
        todo = [i for i, out in enumerate(outs) if out is None]
        if todo:
            run = batch if len(todo) == len(batch) else np.ascontiguousarray(batch[todo])
            computed = self.executor.run(run)
            if len(computed) != len(todo):
                raise ExecutorError(f"executor returned {len(computed)} tiles for {len(todo)}")
            for i, upscaled in zip(todo, computed, strict=True):
                outs[i] = upscaled
                if self.reuse is not None:
                    self.reuse.store(keys[i], batch[i], upscaled)
        self.tiles_run += len(todo)
        self.tiles_reused += len(batch) - len(todo)
        return outs  # type: ignore[return-value]  # every None was filled

    def _plan(self, height: int, width: int) -> TilePlan:
        key = (height, width, self.tile, self.overlap)
        plan = self._plans.get(key)
        if plan is None:
            plan = plan_tiles(height, width, self.tile, self.overlap, self.executor.scale,
                              pad_to_tile=self.executor.fixed_tile is not None)
            self._plans[key] = plan
            self.plans_built += 1
        return plan

    def _shrink(self, height: int, width: int, error: OutOfMemoryError) -> None:
        """Make the next attempt smaller, or raise when nothing is left to shrink."""
        if self.executor.fixed_tile is not None:
            # The tile is the model's input shape; only the batch can give.
            if self.batch == 1:
                raise OutOfMemoryError(
                    f"{self.executor.name}: out of memory even with one {self.tile} px tile"
                ) from error
            self.batch //= 2
            return
        tile = FIRST_TILE if self.tile == 0 else self.tile // 2
        # A tile as large as the whole frame would just pad it: go below the frame's size.
        while tile >= max(height, width) and tile // 2 >= self.min_tile:
            tile //= 2
        if tile < self.min_tile:
            raise OutOfMemoryError(
                f"{self.executor.name}: out of memory even with {self.tile or 'whole-frame'} px "
                f"tiles (minimum {self.min_tile})"
            ) from error
        self.tile = tile
        self.overlap = min(self.overlap, tile // 2)
