"""The one interface between the pipeline and every runtime: tiles in, upscaled tiles out."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Literal, Protocol, runtime_checkable

import numpy as np

from upscaler.errors import ExecutorError, ModelError

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


PROBE_SIDE = 16  # the input side a user's model is run on to measure its scale


def measured_scale(run: Callable[[np.ndarray], np.ndarray], fixed_tile: tuple[int, int] | None,
                   path: object) -> int:
    """A user's model's scale, from its output for one probe tile (of `fixed_tile`'s size
    where the model fixes one); ModelError where the output is no integer multiple of it."""
    in_h, in_w = fixed_tile or (PROBE_SIDE, PROBE_SIDE)
    out_h, out_w = run(np.zeros((1, 3, in_h, in_w), np.float32)).shape[2:]
    return integer_scale(in_h, in_w, out_h, out_w, path)


def integer_scale(in_h: int, in_w: int, out_h: int, out_w: int, path: object) -> int:
    if out_h % in_h or out_w % in_w:
        raise ModelError(f"output {out_h}x{out_w} is not an integer multiple of input "
                         f"{in_h}x{in_w}", path)
    if out_h // in_h != out_w // in_w:
        # Each side is a multiple: the fault is that they differ (it read as if neither was).
        raise ModelError(f"output {out_h}x{out_w} of input {in_h}x{in_w} scales the height "
                         f"{out_h // in_h}x and the width {out_w // in_w}x; pictures need one "
                         "scale", path)
    return out_h // in_h


def in_fixed_batches(run: Callable[[np.ndarray], np.ndarray], feed: np.ndarray,
                     step: int | None, name: str, path: object) -> np.ndarray | None:
    """`run` over `feed` in batches of the `step` tiles a model fixes, None where it fixes none
    or `feed` is one such batch (the caller runs it as it is); ExecutorError where `feed` does
    not divide into them."""
    if step is None or step == len(feed):
        return None
    if len(feed) % step:
        raise ExecutorError(f"{name}: the model takes batches of exactly {step}", path)
    return np.concatenate([run(feed[i : i + step]) for i in range(0, len(feed), step)])
