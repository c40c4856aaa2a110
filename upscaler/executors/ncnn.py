"""ncnn executor: Real-ESRGAN's original .param/.bin files run by Tencent's ncnn (an extra)."""

from __future__ import annotations

import contextlib
import itertools
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np

from upscaler.errors import ExecutorError, ModelError, OutOfMemoryError
from upscaler.executors.base import ClosingExecutor, ExecutorOptions, PrecisionName
from upscaler.models.registry import ModelRef
from upscaler.models.tail import tail_of
from upscaler.pixels import from_planes, to_planes

T = TypeVar("T")

_NCNN_OOM = -100  # what ncnn layers return when a blob allocation fails
# The side of the tiles the upsampling tail runs in (input pixels): 112x112 holds about 0.8 GB
# in ncnn's tail (set aside from a call's 2 GiB budget, so the body keeps the rest), and
# their widening by the tail's reach (2 px) adds 7% to the tail's work, about 1% to the model's.
TAIL_TILE = 112
_VULKAN_DEVICE = re.compile(r"vulkan(?::(\d+))?", re.IGNORECASE)


@contextlib.contextmanager
def _quiet_stderr() -> Any:
    """Silence what ncnn's C++ side prints to fd 2 (e.g. "dlopen failed libvulkan.so.1").

    Those lines are diagnostics for ncnn developers; our callers get the outcome as a return
    value and turn it into one clear error.
    """
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def unavailable_reason() -> str | None:
    """None when ncnn can run here (on the CPU at least), else why not."""
    try:
        import ncnn  # noqa: F401
    except ImportError as e:
        return f"ncnn is not installed (pip install 'upscaler[ncnn]'): {e}"
    return None


def gpu_count() -> int:
    """Vulkan devices ncnn can use; 0 when there is no Vulkan loader or driver."""
    import ncnn

    with _quiet_stderr():
        return int(ncnn.get_gpu_count())


def _blob_names(param_path: Path) -> tuple[str, str]:
    """(input, output) blob names: the Input layer's blob and the last layer's first output."""
    try:
        lines = [line.split() for line in param_path.read_text(encoding="ascii").splitlines()]
    except (OSError, UnicodeDecodeError) as e:
        raise ModelError(f"cannot read ncnn param file: {e}", param_path) from e
    layers = [f for f in lines[2:] if len(f) >= 4]
    try:
        first = next(f for f in layers if f[0] == "Input")
        last = layers[-1]
        input_blob = first[4 + int(first[2])]
        output_blob = last[4 + int(last[2])]
    except (StopIteration, IndexError, ValueError) as e:
        raise ModelError("no Input layer or malformed last layer", param_path) from e
    return input_blob, output_blob


class _Target(Protocol):
    """Where an upscaled tile goes: float planes or pixels."""

    def put(self, ys: slice, xs: slice, part: np.ndarray) -> None: ...

    def put_whole(self, planes: np.ndarray) -> None: ...


class _FloatPlanes:
    def __init__(self, out: np.ndarray) -> None:
        self.out = out  # float32 (3, H, W)

    def put(self, ys: slice, xs: slice, part: np.ndarray) -> None:
        self.out[:, ys, xs] = part

    def put_whole(self, planes: np.ndarray) -> None:
        self.out[...] = planes


class _Pixels:
    def __init__(self, out: np.ndarray) -> None:
        self.out = out  # (H, W, 3) pixels, C-contiguous

    def put(self, ys: slice, xs: slice, part: np.ndarray) -> None:
        self.out[ys, xs] = from_planes(part, self.out.dtype)

    def put_whole(self, planes: np.ndarray) -> None:
        from_planes(planes, self.out.dtype, out=self.out)


def _even_spans(size: int, most: int) -> list[slice]:
    """`size` cut into the fewest near-equal spans of at most `most`."""
    count = -(-size // most)
    edges = [size * i // count for i in range(count + 1)]
    return [slice(a, b) for a, b in itertools.pairwise(edges)]


class NcnnExecutor(ClosingExecutor):
    """Runs ncnn .param/.bin models with ncnn, on the CPU or on Vulkan ("vulkan[:N]").

    Precision: fp16 (the default) turns on ncnn's fp16 storage, packing and arithmetic, as
    realesrgan-ncnn-vulkan does. Measured against fp32: on an x86 CPU (AVX2) ncnn keeps
    activations in fp32 regardless, so the output is identical (> 120 dB); on Vulkan (Mesa
    llvmpipe) fp16 storage gave 52-53 dB for x4plus-anime and 47 dB for animevideov3 on a noise
    tile, so fp16 stays on. fp32 turns all three off; bf16 uses ncnn's bf16 storage (about
    50-55 dB on the CPU, and slower there).
    ncnn has no batch dimension, so a batch runs one tile after another. A tile larger than
    TAIL_TILE squared runs a model's upsampling tail (x4plus's) apart, in tail tiles of its
    own (models/tail.py): the same output in a third of the memory.
    """

    name = "ncnn"
    fixed_tile: tuple[int, int] | None = None

    def __init__(self, model: ModelRef, options: ExecutorOptions) -> None:
        if model.kind != "ncnn":
            raise ExecutorError(f"ncnn needs ncnn .param/.bin files, not a {model.kind} model",
                                model.path)
        if model.scale is None:
            raise ModelError("scale of the ncnn model is unknown", model.path)
        self.scale: int = model.scale
        self._margin = model.margin  # unpadded networks return scale * (L - 2 * margin)
        self.precision: PrecisionName = options.precision or "fp16"
        self.path = model.path

        self.device = "cpu"
        self._model, self._options = model, options
        self._net: Any = self._load()
        self._input_blob, self._output_blob = _blob_names(model.path)
        # Tiles larger than a tail tile run the upsampling tail apart (models/tail.py).
        self._tail = tail_of(model)

    def _load(self) -> Any:
        """A fresh ncnn.Net with the model loaded for the options; sets self.device."""
        import ncnn

        model, options = self._model, self._options
        net = ncnn.Net()
        opt = net.opt
        fp16 = self.precision == "fp16"
        opt.use_fp16_storage = opt.use_fp16_packed = opt.use_fp16_arithmetic = fp16
        opt.use_bf16_storage = self.precision == "bf16"
        if options.threads:
            opt.num_threads = options.threads
        if options.device is not None and options.device.lower() != "cpu":
            match = _VULKAN_DEVICE.fullmatch(options.device)
            if match is None:
                raise ExecutorError(f"ncnn: unknown device {options.device!r}; use cpu or "
                                    "vulkan[:N]")
            index = int(match.group(1) or 0)
            count = gpu_count()
            if index >= count:
                raise ExecutorError(f"ncnn: no Vulkan device {index} (ncnn finds {count})")
            opt.use_vulkan_compute = True
            net.set_vulkan_device(index)
            self.device = f"vulkan:{index}"

        with _quiet_stderr():
            if net.load_param(str(model.path)) != 0:
                raise ModelError("ncnn cannot load the param file (unknown layer type or "
                                 "malformed line)", model.path)
            if net.load_model(str(model.bin_path)) != 0:
                raise ModelError("ncnn cannot load the weights (truncated or does not match "
                                 f"{model.path.name})", model.bin_path)
        return net

    def run(self, batch: np.ndarray) -> np.ndarray:
        """float32 (N, 3, h, w) RGB in [0, 1] -> float32 (N, 3, h*s, w*s); see Executor."""
        n, _, h, w = batch.shape
        out = np.empty((n, 3, *self._out_size(h, w)), np.float32)
        for i in range(n):
            tile = np.ascontiguousarray(batch[i], dtype=np.float32)
            self._run_one(tile, h, w, _FloatPlanes(out[i]))
        return out

    def _out_size(self, h: int, w: int) -> tuple[int, int]:
        s, m = self.scale, self._margin
        if min(h, w) <= 2 * m:
            raise ExecutorError(f"ncnn: a {h}x{w} input is too small for a network that "
                                f"consumes {m} px on each side", self.path)
        return s * (h - 2 * m), s * (w - 2 * m)

    def extract(self, planes: np.ndarray, feeds: dict[str, np.ndarray], target: str,
                ) -> np.ndarray:
        """Blob `target` for float32 input planes (3, h, w), with the blobs in `feeds` given
        rather than computed (whole-frame pooled means, models/exact.py); a copy."""
        import ncnn

        # ncnn.Mat borrows numpy's memory: `arrays` keeps it alive until the extraction ends.
        data = np.ascontiguousarray(planes, dtype=np.float32)
        arrays = {name: np.ascontiguousarray(v, dtype=np.float32) for name, v in feeds.items()}
        mats = {name: ncnn.Mat(v) for name, v in arrays.items()}
        with self._extractor() as extractor:
            extractor.input(self._input_blob, ncnn.Mat(data))
            for name, mat in mats.items():
                extractor.input(name, mat)
            status, mat_out = extractor.extract(target)
            if status == _NCNN_OOM:
                raise OutOfMemoryError(f"ncnn ({self.device}): out of memory for a "
                                       f"{data.shape[1]}x{data.shape[2]} tile")
            if status != 0:
                raise ExecutorError(f"ncnn ({self.device}) failed extracting {target!r} "
                                    f"(error {status})", self.path)
            return np.array(mat_out)

    def run_pixels(self, tiles: np.ndarray) -> np.ndarray:
        """(N, h, w, 3) pixels -> (N, h*s, w*s, 3) of the same dtype; see Executor.

        8-bit tiles go in through ncnn's own pixel conversion (Mat.from_pixels); the output
        becomes pixels straight from ncnn's blob, before the extractor frees it, with no float
        copy of it (a 2560x1440 output is 44 MB of floats).
        """
        n, h, w, _ = tiles.shape
        out = np.empty((n, *self._out_size(h, w), 3), tiles.dtype)
        for i in range(n):
            self._run_one(self._pixel_mat(tiles[i]), h, w, _Pixels(out[i]))
        return out

    def _pixel_mat(self, tile: np.ndarray) -> Any:
        """An 8-bit tile as an ncnn.Mat of its own; deeper ones as float planes."""
        import ncnn

        if tile.dtype != np.uint8:
            return to_planes(tile[None])[0]
        h, w = tile.shape[:2]
        mat = ncnn.Mat.from_pixels(np.ascontiguousarray(tile), ncnn.Mat.PixelType.PIXEL_RGB,
                                   w, h)
        mat.substract_mean_normalize([], [1 / 255.0] * 3)
        return mat

    def _run_one(self, data: Any, h: int, w: int, out: _Target) -> None:
        """One tile, whole or with the upsampling tail apart, into `out`."""
        if self._tail is None or h * w <= TAIL_TILE**2:
            self._extract(self._input_blob, data, self._output_blob,
                          (3, *self._out_size(h, w)), out.put_whole)
        else:
            body = self._extract(self._input_blob, data, self._tail.blob, None, np.array)
            self._run_tail(body, out)

    def _run_tail(self, body: np.ndarray, out: _Target) -> None:
        """The upsampling tail over `body` (C, h, w) in tiles of about TAIL_TILE, each widened
        by the tail's reach inside the frame and cropped back: exact, in bounded memory."""
        assert self._tail is not None  # for type checkers; run() checks
        _, h, w = body.shape
        s, reach = self.scale, self._tail.reach
        for ys in _even_spans(h, TAIL_TILE):
            for xs in _even_spans(w, TAIL_TILE):
                y0, y1 = max(0, ys.start - reach), min(h, ys.stop + reach)
                x0, x1 = max(0, xs.start - reach), min(w, xs.stop + reach)
                top, left = (ys.start - y0) * s, (xs.start - x0) * s
                rows, cols = (ys.stop - ys.start) * s, (xs.stop - xs.start) * s

                def put(part: np.ndarray, ys: slice = ys, xs: slice = xs, top: int = top,
                        left: int = left, rows: int = rows, cols: int = cols) -> None:
                    out.put(slice(ys.start * s, ys.stop * s), slice(xs.start * s, xs.stop * s),
                            part[:, top:top + rows, left:left + cols])

                self._extract(self._tail.blob, np.ascontiguousarray(body[:, y0:y1, x0:x1]),
                              self._output_blob, (3, (y1 - y0) * s, (x1 - x0) * s), put)

    def _extract(self, source: str, data: Any, target: str, shape: tuple[int, ...] | None,
                 take: Callable[[np.ndarray], T]) -> T:
        """`take` of blob `target` computed from `data` (float32 (C, h, w) planes, or an
        ncnn.Mat) given as blob `source`, checked against `shape`. `take` sees ncnn's own
        memory, which is freed after it returns."""
        import ncnn

        # ncnn.Mat borrows the planes' memory: `data` holds them until the extraction ends.
        mat_in = ncnn.Mat(data) if isinstance(data, np.ndarray) else data
        h, w = mat_in.h, mat_in.w
        with self._extractor() as extractor:
            extractor.input(source, mat_in)
            status, mat_out = extractor.extract(target)
            if status == _NCNN_OOM:
                raise OutOfMemoryError(f"ncnn ({self.device}): out of memory for a {h}x{w} "
                                       "tile")
            if status != 0:
                raise ExecutorError(f"ncnn ({self.device}) failed on a {h}x{w} tile "
                                    f"(error {status})", self.path)
            result = np.asarray(mat_out)  # a view of ncnn's blob, valid inside this block
            if shape is not None and result.shape != shape:
                raise ExecutorError(f"ncnn returned {result.shape} for a {h}x{w} tile, "
                                    f"expected {shape}", self.path)
            return take(result)

    @contextlib.contextmanager
    def _extractor(self) -> Iterator[Any]:
        """An extractor of the net, which is loaded afresh after an out-of-memory error.

        ncnn's pools keep every blob they have made, and the failed layer's blobs stay counted:
        the retry with smaller tiles would find less memory than the first attempt had. So
        the net (with its pools) is freed at once and loaded again for the next tile. Freeing
        the extractor and the net then prints "FATAL ERROR! pool allocator destroyed too
        early", a note for ncnn's developers about a failure that is already ours to report:
        only that moment is silenced.
        """
        if self._net is None:
            try:
                self._net = self._load()
            except ModelError as e:
                # These files loaded before the error: what failed now is memory.
                raise OutOfMemoryError(f"ncnn ({self.device}): out of memory loading the "
                                       f"model again: {e.message}") from e
        try:
            with contextlib.ExitStack() as quiet, self._net.create_extractor() as extractor:
                try:
                    yield extractor
                except OutOfMemoryError:
                    quiet.enter_context(_quiet_stderr())
                    raise
        except OutOfMemoryError:
            with _quiet_stderr():
                self.release_memory()
            raise

    def release_memory(self) -> bool:
        """Free ncnn's pools (every blob they made); the net is loaded again at the next
        tile. True: memory was freed."""
        if self._net is not None:
            self._net.clear()
        self._net = None
        return True

    def close(self) -> None:
        self.release_memory()
