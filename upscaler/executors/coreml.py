"""Core ML executor (macOS): a package built for one tile size, on the Neural Engine, GPU or CPU."""

from __future__ import annotations

import platform
import sys
from typing import Any

import numpy as np

from upscaler.errors import ExecutorError, ModelError, OutOfMemoryError
from upscaler.executors.base import ClosingExecutor, ExecutorOptions, one_line
from upscaler.models.builds import mlpackage_file
from upscaler.models.registry import ModelRef

DEFAULT_TILE = 256
COMPUTE_UNITS = ("ALL", "CPU_AND_NE", "CPU_AND_GPU", "CPU_ONLY")
_MIN_MACOS = (13, 0)  # the packages target macOS 13 (ML Program, iOS16 opset)
_OOM_MARKERS = ("out of memory", "insufficient memory", "failed to allocate")


def unavailable_reason() -> str | None:
    """None when Core ML can run models here, else why not."""
    if sys.platform != "darwin":
        return "Core ML runs on macOS only"
    release = platform.mac_ver()[0]
    version = tuple(int(p) for p in release.split(".")[:2] if p.isdigit())
    if version and version < _MIN_MACOS:
        return f"Core ML packages here need macOS 13 or later, this is macOS {release}"
    try:
        import coremltools  # noqa: F401
        from coremltools import libcoremlpython  # noqa: F401
    except ImportError as e:
        return f"coremltools cannot load models on this machine ({e})"
    return None


class CoreMLExecutor(ClosingExecutor):
    """Runs a Core ML package built for (batch, 3, tile, tile) tiles.

    options.tile picks the tile the package is built for (256 when 0); a package is built and
    cached once per tile and batch, which takes seconds to a minute. options.device picks the
    compute units: "ALL" (default: Neural Engine, GPU and CPU as Core ML sees fit),
    "CPU_AND_NE", "CPU_AND_GPU" or "CPU_ONLY". Arithmetic is fp16 ("fp32" builds an fp32
    package, which only the GPU and CPU run). A user's .mlpackage runs with the shape it
    declares. A short last batch is padded with zero tiles.
    """

    name = "coreml"

    def __init__(self, model: ModelRef, options: ExecutorOptions) -> None:
        reason = unavailable_reason()
        if reason is not None:
            raise ExecutorError(f"coreml: {reason}")
        import coremltools as ct

        if options.precision == "bf16":
            raise ExecutorError("coreml: bf16 is not supported; use fp16 or fp32")
        units = (options.device or "ALL").upper()
        if units not in COMPUTE_UNITS:
            raise ExecutorError(f"coreml: unknown compute units {options.device!r}; "
                                f"use one of {', '.join(COMPUTE_UNITS)}")
        tile = options.tile or DEFAULT_TILE
        path = mlpackage_file(model, tile, max(1, options.batch), options.precision or "fp16")
        self.path = path
        self._model: Any
        try:
            self._model = ct.models.MLModel(str(path), compute_units=ct.ComputeUnit[units])
        except Exception as e:  # Core ML reports load failures as bare Exceptions
            raise ModelError(f"not a loadable Core ML package: {one_line(e)}", path) from e

        description = self._model.get_spec().description
        self._input_name = description.input[0].name
        self._output_name = description.output[0].name
        in_shape = tuple(description.input[0].type.multiArrayType.shape)
        out_shape = tuple(description.output[0].type.multiArrayType.shape)
        if len(in_shape) != 4 or len(out_shape) != 4:
            raise ModelError(f"expected fixed NCHW input and output, got {in_shape} -> "
                             f"{out_shape}", path)
        self._batch, channels, height, width = in_shape
        if channels != 3 or height != width:
            raise ModelError(f"input {in_shape} is not RGB square tiles", path)
        if out_shape[2] % height or out_shape[2] // height != out_shape[3] // width:
            raise ModelError(f"output {out_shape} is not an integer multiple of input "
                             f"{in_shape}", path)
        self.fixed_tile: int | None = height
        self.scale: int = out_shape[2] // height
        self.compute_units = units

    def run(self, batch: np.ndarray) -> np.ndarray:
        """float32 (N, 3, tile, tile) RGB in [0, 1] -> float32 (N, 3, tile*s, tile*s)."""
        if batch.ndim != 4 or batch.shape[1:] != (3, self.fixed_tile, self.fixed_tile):
            raise ExecutorError(f"coreml: the package takes (N, 3, {self.fixed_tile}, "
                                f"{self.fixed_tile}) tiles, got {tuple(batch.shape)}", self.path)
        parts = []
        for start in range(0, len(batch), self._batch):
            chunk = batch[start : start + self._batch]
            short = self._batch - len(chunk)
            if short:
                chunk = np.concatenate([chunk, np.zeros((short, *chunk.shape[1:]), chunk.dtype)])
            parts.append(self._predict(chunk)[: self._batch - short])
        return np.concatenate(parts)

    def _predict(self, chunk: np.ndarray) -> np.ndarray:
        feed = np.ascontiguousarray(chunk, dtype=np.float32)
        try:
            out: dict[str, Any] = self._model.predict({self._input_name: feed})
        except Exception as e:  # Core ML reports prediction failures as bare Exceptions
            if any(m in str(e).lower() for m in _OOM_MARKERS):
                raise OutOfMemoryError(f"coreml ({self.compute_units}): out of memory for "
                                       f"input {tuple(feed.shape)}: {one_line(e)}") from e
            raise ExecutorError(f"coreml ({self.compute_units}) failed on input "
                                f"{tuple(feed.shape)}: {one_line(e)}", self.path) from e
        return np.asarray(out[self._output_name], dtype=np.float32)

    def close(self) -> None:
        self._model = None
