"""Real-CUGAN and waifu2x models on any executor: the family's processing around the network,
and exact tiles (models/exact.py) instead of blended ones.

The inner executor runs the network as it is (scale * (L - 2 * margin) out for L in). This
wrapper gives the pipeline the usual contract, (h, w) in and (h*s, w*s) out: it pads, rounds and
maps each frame as the original program does (models/processing.py), and crops after. The
FrameUpscaler hands it whole frames with the tile shape its memory plan chose (`set_tile`);
a frame larger than that runs in exact tiles, gathering the squeeze-excitation means first.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from upscaler.errors import ExecutorError
from upscaler.executors.base import ClosingExecutor, Executor
from upscaler.models.exact import run_exact
from upscaler.models.processing import finish, pad_pixels, prepare
from upscaler.models.registry import ModelRef
from upscaler.pixels import run_pixels, run_via_planes


class ProcessedExecutor(ClosingExecutor):
    """`inner`, which runs `model`'s network, with the model's processing around it."""

    exact_tiles = True  # FrameUpscaler: hand over whole frames and call set_tile

    def __init__(self, inner: Executor, model: ModelRef) -> None:
        if model.processing is None:  # pragma: no cover - create_executor checks
            raise ExecutorError("model has no processing", model.path)
        self.inner = inner
        self.model = model
        self.processing = model.processing
        self.name: str = inner.name
        self.scale: int = inner.scale
        self.fixed_tile: tuple[int, int] | None = None
        self.tile: tuple[int, int] | None = None
        self._on_tiles: Callable[[int, int], None] | None = None
        self.precision = getattr(inner, "precision", None)
        self.device = getattr(inner, "device", None)
        self._graph = model.graph()

    def set_tile(self, tile: tuple[int, int] | None,
                 on_tiles: Callable[[int, int], None] | None = None) -> None:
        """The largest part of a frame, (height, width), one network call covers (it sees the
        margin more on each side); None for whole frames. `on_tiles` is told (runs done, runs)
        as a frame's exact tiles end (FrameUpscaler.on_tiles: a large picture's progress)."""
        self.tile = tile
        self._on_tiles = on_tiles

    def _whole(self, padded_h: int, padded_w: int) -> bool:
        """Whether a frame padded to this size runs in one network call (else exact tiles)."""
        margin = self.model.margin
        rh, rw = padded_h - 2 * margin, padded_w - 2 * margin
        return self.tile is None or (rh <= self.tile[0] and rw <= self.tile[1])

    def run_pixels(self, tiles: np.ndarray) -> np.ndarray:
        """(N, h, w, 3) pixels -> (N, h*s, w*s, 3); see Executor. Where nothing is computed
        around the network but padding and a crop (waifu2x; Real-CUGAN 2x and 3x but the pro
        models) and the frame runs whole, the pixels go to the network's executor as pixels
        and come back so (its cheaper edge), with the same result as through `run`."""
        proc = self.processing
        if proc.pro or proc.add_nearest:
            return run_via_planes(self.run, tiles)
        padded = pad_pixels(tiles, proc)
        if not self._whole(*padded.shape[1:3]):
            return run_via_planes(self.run, tiles)
        _, h, w, _ = tiles.shape
        s = self.scale
        return np.ascontiguousarray(run_pixels(self.inner, padded)[:, :h * s, :w * s])

    def run(self, batch: np.ndarray) -> np.ndarray:
        """float32 (N, 3, h, w) in [0, 1] -> (N, 3, h*s, w*s); see Executor."""
        prepared = prepare(batch, self.processing)
        margin = self.model.margin
        rh, rw = prepared.shape[2] - 2 * margin, prepared.shape[3] - 2 * margin
        if self._whole(*prepared.shape[2:]):
            raw = self.inner.run(prepared)
        else:
            extract = getattr(self.inner, "extract", None)
            if extract is None:
                raise ExecutorError(f"{self.name} cannot run {self.model.name} in tiles; "
                                    "give it whole frames (--tile 0)")
            # One picture's progress: a batch of several (none the pipeline makes) reports none.
            on_tiles = self._on_tiles if len(prepared) == 1 else None
            raw = np.stack([run_exact(item, (rh, rw), self.tile, self._graph, margin, extract,
                                      on_tiles) for item in prepared])
        return finish(raw, batch, self.scale, self.processing)

    def release_memory(self) -> bool:
        return self.inner.release_memory()

    def close(self) -> None:
        self.inner.close()
