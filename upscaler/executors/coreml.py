"""Core ML executor (macOS): packages built for each frame size's tile shape, on the Neural
Engine, GPU or CPU."""

from __future__ import annotations

import platform
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from upscaler.errors import ExecutorError, ModelError, OutOfMemoryError, one_line
from upscaler.executors.base import ClosingExecutor, ExecutorOptions
from upscaler.models.builds import mlpackage_file
from upscaler.models.registry import ModelRef

COMPUTE_UNITS = ("ALL", "CPU_AND_NE", "CPU_AND_GPU", "CPU_ONLY")
_MIN_MACOS = (13, 0)  # the packages target macOS 13 (ML Program, iOS16 opset)
_OOM_MARKERS = ("out of memory", "insufficient memory", "failed to allocate")
KEPT_SHAPES = 2  # packages kept loaded, each for its tile shape


@dataclass(frozen=True)
class _Package:
    """One loaded Core ML package and what it takes."""

    path: Path
    model: Any
    input_name: str
    output_name: str
    batch: int
    shape: tuple[int, int]
    scale: int


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
    """Runs a Core ML package built for one input shape, (batch, 3, height, width).

    A model from ncnn weights is built for the shape the tile plan chooses for each frame size
    (`reshape`): the whole frame where its activations fit the memory budget, else the fewest
    tiles that divide it evenly. The Neural Engine runs only fixed shapes, and a whole frame
    there is several times faster than small tiles. Each shape's package is built once (seconds
    to a minute) and cached; options.tile > 0 builds a square one at once. options.device picks
    the compute units: "ALL" (default: Neural Engine, GPU and CPU as Core ML sees fit),
    "CPU_AND_NE", "CPU_AND_GPU" or "CPU_ONLY". Arithmetic is fp16 ("fp32" builds an fp32
    package, which only the GPU and CPU run). Built packages take one tile per input; a batch
    of tiles goes to Core ML's batch prediction in one call. A user's .mlpackage runs with the
    shape it declares; a short last batch for it is padded with zero tiles.
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
        self._ct = ct
        self._source = model
        self._precision = options.precision or "fp16"
        self.compute_units = units
        self.can_reshape = model.kind != "mlpackage"
        self.fixed_tile: tuple[int, int] | None = None
        self.scale: int = model.scale or 0
        self._model: Any = None
        self._kept: dict[tuple[int, int], _Package] = {}
        if not self.can_reshape:
            self._use(self._load(model.path))
        elif options.tile:
            self.reshape(options.tile, options.tile)

    def reshape(self, height: int, width: int) -> None:
        """Load the package for (1, 3, height, width) tiles, building it on first use."""
        if not self.can_reshape:
            raise ExecutorError(f"coreml: {self._source.path.name} takes only "
                                f"{self.fixed_tile} tiles", self._source.path)
        package = self._kept.pop((height, width), None)
        if package is None:
            # A video has one frame size; --tta alternates a tile and its transpose.
            while len(self._kept) >= KEPT_SHAPES:
                del self._kept[next(iter(self._kept))]
            package = self._load(mlpackage_file(self._source, (height, width), 1,
                                                self._precision))
        self._kept[(height, width)] = package  # the most recently used last
        self._use(package)

    def _load(self, path: Path) -> _Package:
        ct = self._ct
        try:
            model = ct.models.MLModel(str(path), compute_units=ct.ComputeUnit[self.compute_units])
        except Exception as e:  # Core ML reports load failures as bare Exceptions
            raise ModelError(f"not a loadable Core ML package: {one_line(e)}", path) from e
        description = model.get_spec().description
        in_shape = tuple(description.input[0].type.multiArrayType.shape)
        out_shape = tuple(description.output[0].type.multiArrayType.shape)
        if len(in_shape) != 4 or len(out_shape) != 4:
            raise ModelError(f"expected fixed NCHW input and output, got {in_shape} -> "
                             f"{out_shape}", path)
        batch, channels, height, width = in_shape
        if channels != 3:
            raise ModelError(f"input {in_shape} is not RGB", path)
        # Unpadded networks (Real-CUGAN, waifu2x) return scale * (L - 2 * margin).
        inner_h, inner_w = height - 2 * self._source.margin, width - 2 * self._source.margin
        if (inner_h < 1 or out_shape[2] % inner_h
                or out_shape[2] // inner_h != out_shape[3] // inner_w):
            raise ModelError(f"output {out_shape} is not an integer multiple of input "
                             f"{in_shape}", path)
        return _Package(path, model, description.input[0].name, description.output[0].name,
                        batch, (height, width), out_shape[2] // inner_h)

    def _use(self, package: _Package) -> None:
        self.path = package.path
        self._model, self._batch = package.model, package.batch
        self._input_name, self._output_name = package.input_name, package.output_name
        self.fixed_tile = package.shape
        self.scale = package.scale

    def run(self, batch: np.ndarray) -> np.ndarray:
        """float32 (N, 3, h, w) RGB in [0, 1] -> float32 (N, 3, h*s, w*s). A package built here
        takes any (h, w), building one for a new shape; a user's only its own."""
        if self.can_reshape and batch.ndim == 4 and batch.shape[2:] != self.fixed_tile:
            self.reshape(*batch.shape[2:])
        if batch.ndim != 4 or batch.shape[1:] != (3, *self.fixed_tile):  # type: ignore[misc]
            raise ExecutorError(f"coreml: the package takes (N, 3, {self.fixed_tile[0]}, "
                                f"{self.fixed_tile[1]}) tiles, got {tuple(batch.shape)}",
                                self.path)
        feeds = []
        for start in range(0, len(batch), self._batch):
            chunk = batch[start : start + self._batch]
            short = self._batch - len(chunk)
            if short:
                chunk = np.concatenate([chunk, np.zeros((short, *chunk.shape[1:]), chunk.dtype)])
            feeds.append({self._input_name: np.ascontiguousarray(chunk, dtype=np.float32)})
        return np.concatenate(self._predict(feeds))[: len(batch)]

    def _predict(self, feeds: list[dict[str, np.ndarray]]) -> list[np.ndarray]:
        """One Core ML call for all `feeds`: several go through its batch prediction."""
        shape = (len(feeds), *feeds[0][self._input_name].shape)
        try:
            out: Any = self._model.predict(feeds if len(feeds) > 1 else feeds[0])
        except Exception as e:  # Core ML reports prediction failures as bare Exceptions
            if any(m in str(e).lower() for m in _OOM_MARKERS):
                raise OutOfMemoryError(f"coreml ({self.compute_units}): out of memory for "
                                       f"inputs {shape}: {one_line(e)}") from e
            raise ExecutorError(f"coreml ({self.compute_units}) failed on inputs {shape}: "
                                f"{one_line(e)}", self.path) from e
        results = out if isinstance(out, list) else [out]
        return [np.asarray(r[self._output_name], dtype=np.float32) for r in results]

    def close(self) -> None:
        self._model = None
        self._kept.clear()
