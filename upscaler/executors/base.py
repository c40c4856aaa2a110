"""The one interface between the pipeline and every runtime: tiles in, upscaled tiles out."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Literal, Protocol, runtime_checkable

import numpy as np

PrecisionName = Literal["fp32", "fp16", "bf16"]


@dataclass(frozen=True)
class ExecutorOptions:
    """Settings common to executors; each ignores what does not apply to it.

    precision: None picks the executor's fastest precision that stays within 45 dB of fp32.
    tile: the input tile side the executor is first prepared for (Core ML builds its model for
      it); 0 leaves the shape to the first frame's plan.
    batch: tiles per call.
    threads: CPU threads, None for the runtime's default.
    device: a runtime-specific device ("cuda:0", "GPU", "vulkan:0", compute units "ALL"...).
    """

    precision: PrecisionName | None = None
    tile: int = 0
    batch: int = 1
    threads: int | None = None
    device: str | None = None


@runtime_checkable
class Executor(Protocol):
    """Runs a super-resolution model on batches of tiles.

    `run` takes float32 (N, 3, h, w) RGB in [0, 1], C-contiguous, and returns float32
    (N, 3, h * scale, w * scale), unclamped. It raises OutOfMemoryError when the batch or tile
    is too large for the device, so the caller can retry smaller, and ExecutorError otherwise.
    An executor may also have `run_pixels`: uint8 or uint16 (N, h, w, 3) RGB pixels in, the
    same dtype (N, h * s, w * s, 3) out, clamped and rounded, where its runtime converts more
    cheaply than pixels.run_via_planes (inside the graph, on the GPU); the pipeline calls that
    through pixels.run_pixels, and `run` stays the model's own contract.
    `fixed_tile` is the only (h, w) a fixed-shape executor (Core ML) accepts, else None.
    A fixed-shape executor that can be rebuilt for another shape (Core ML from ncnn weights)
    also has `can_reshape = True` and `reshape(h, w)`, which makes (h, w) its `fixed_tile`.
    `release_memory() -> bool` frees what the runtime keeps from call to call (pools, arenas)
    for the next call to take again, True where there was such memory: the pipeline calls it
    when its own buffers did not fit beside it. ClosingExecutor's keeps nothing (False).
    """

    name: str
    scale: int
    fixed_tile: tuple[int, int] | None

    def run(self, batch: np.ndarray) -> np.ndarray: ...

    def close(self) -> None: ...

    def release_memory(self) -> bool: ...


class ClosingExecutor:
    """Base for executor classes: `with` support that calls the subclass's close()."""

    def close(self) -> None:
        raise NotImplementedError

    def release_memory(self) -> bool:
        """Nothing kept between calls here; executors whose runtime keeps memory override it."""
        return False

    def __enter__(self) -> ClosingExecutor:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def image_io(in_dims: Sequence[int | None], out_channels: int | None,
             path: object) -> tuple[int, int] | None:
    """The (height, width) a model's NCHW input fixes, None where it takes any size; ModelError
    where it does not map RGB to RGB (a gray model, a fourth output channel that one runtime
    failed on and another dropped without a word) or fixes one side only. Dimensions a model
    leaves free are None."""
    from upscaler.errors import ModelError

    if len(in_dims) != 4:
        raise ModelError(f"model input has rank {len(in_dims)}, expected 4 (NCHW)", path)
    _, channels, height, width = in_dims
    if channels not in (None, 3):
        raise ModelError(f"model takes {channels} channels, expected 3 (RGB)", path)
    if out_channels not in (None, 3):
        raise ModelError(f"model gives {out_channels} channels, expected 3 (RGB)", path)
    if (height is None) != (width is None):
        raise ModelError(f"input shape {height}x{width} fixes only one side", path)
    return None if height is None or width is None else (height, width)
