"""Test-time augmentation (`--tta`): every tile through the model eight times, as the four
flips of it and of its transpose, each output turned back and the eight averaged.

What the ncnn-vulkan programs' `-x` does (Real-ESRGAN's, Real-CUGAN's, waifu2x's): the networks
were trained on flipped and rotated pictures but are not exactly symmetric, so the average of
the eight is a little cleaner along lines and edges, for eight times the model's work. The
average is taken of the float outputs, before they are clamped and rounded, as theirs is.

It wraps any executor and keeps its contract (float (N, 3, h, w) in, (N, 3, h*s, w*s) out):
the tiler, the stitcher and held-tile reuse see an executor like any other. A transposed tile
is (w, h): a fixed-shape executor that can be rebuilt (Core ML from ncnn weights) is run on the
transposed shape first and left on the tile's own, and one that cannot (a user's .mlpackage)
takes TTA only with square tiles.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from upscaler.errors import ExecutorError
from upscaler.executors.base import ClosingExecutor, Executor

# (transpose, flip rows, flip columns); the transposed ones first, so that an executor rebuilt
# for each shape ends a call on the tile's own shape, which the tiler planned.
VARIANTS: tuple[tuple[bool, bool, bool], ...] = tuple(
    (transpose, rows, columns)
    for transpose in (True, False) for rows in (False, True) for columns in (False, True))


def forward(batch: np.ndarray, variant: tuple[bool, bool, bool]) -> np.ndarray:
    """`batch` (N, C, H, W) as the model sees it for `variant`, a view."""
    transpose, rows, columns = variant
    if transpose:
        batch = batch.swapaxes(2, 3)
    if rows:
        batch = batch[:, :, ::-1]
    if columns:
        batch = batch[:, :, :, ::-1]
    return batch


def backward(output: np.ndarray, variant: tuple[bool, bool, bool]) -> np.ndarray:
    """The model's output for `forward(batch, variant)` turned back to `batch`'s orientation,
    a view (flips and a transpose commute with a whole-number upscale)."""
    transpose, rows, columns = variant
    if columns:
        output = output[:, :, :, ::-1]
    if rows:
        output = output[:, :, ::-1]
    if transpose:
        output = output.swapaxes(2, 3)
    return output


class TTAExecutor(ClosingExecutor):
    """`inner` run on the eight flips and transposes of each batch, the outputs averaged.

    Each variant is a call of its own with the batch's tiles, so a call needs the memory of one
    plain call and one output-sized float sum. Other attributes (precision, device,
    can_reshape, exact_tiles...) read through to `inner`, but not its `run_pixels`.
    """

    def __init__(self, inner: Executor) -> None:
        fixed = inner.fixed_tile
        if fixed is not None and fixed[0] != fixed[1] and not getattr(inner, "can_reshape",
                                                                     False):
            raise ExecutorError(f"{inner.name}: --tta runs transposed tiles, and this model "
                                f"takes only {fixed[0]}x{fixed[1]} ones (height x width); "
                                "use a model with square or flexible input")
        self.inner = inner
        self.name: str = inner.name
        self.scale: int = inner.scale
        self._tile: tuple[int, int] | None = None  # the exact-tile plan (set_tile), if any

    @property
    def fixed_tile(self) -> tuple[int, int] | None:
        return self.inner.fixed_tile

    def __getattr__(self, attribute: str) -> Any:
        # Not the inner executor's run_pixels: the pixels come through `run` here, averaged.
        if attribute.startswith("_") or attribute in ("inner", "run_pixels"):
            raise AttributeError(attribute)
        return getattr(self.inner, attribute)

    def set_tile(self, tile: tuple[int, int] | None,
                 on_tiles: Callable[[int, int], None] | None = None) -> None:
        """The exact-tile plan of a Real-CUGAN or waifu2x executor (see processed.py), which
        the transposed frames take transposed. `on_tiles` is not passed on: each of the eight
        variants would report a whole frame's tiles."""
        del on_tiles
        self._tile = tile
        self.inner.set_tile(tile)  # type: ignore[attr-defined]  # exact_tiles executors

    def run(self, batch: np.ndarray) -> np.ndarray:
        """float32 (N, 3, h, w) -> the mean of the eight variants' outputs, float32."""
        total: np.ndarray | None = None
        for variant in VARIANTS:
            self._plan_for(transposed=variant[0])
            output = self.inner.run(np.ascontiguousarray(forward(batch, variant)))
            back = backward(output, variant)
            if total is None:
                # A copy: an executor may hand out a buffer it writes again on its next call.
                total = np.array(back, dtype=np.float32)
            else:
                total += back
        assert total is not None
        total *= 1 / len(VARIANTS)
        return total

    def _plan_for(self, transposed: bool) -> None:
        if self._tile is not None:
            height, width = self._tile
            tile = (width, height) if transposed else (height, width)
            self.inner.set_tile(tile)  # type: ignore[attr-defined]  # exact_tiles executors

    def release_memory(self) -> bool:
        return self.inner.release_memory()

    def close(self) -> None:
        self.inner.close()
