"""ONNX Runtime executor: the built ONNX model, or a user's .onnx, on the best provider present."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from upscaler.errors import ExecutorError, ModelError, OutOfMemoryError, one_line
from upscaler.executors.base import (
    ClosingExecutor,
    ExecutorOptions,
    PrecisionName,
    image_io,
    in_fixed_batches,
    integer_scale,
    measured_scale,
)
from upscaler.models.builds import onnx_file
from upscaler.models.cache import cache_dir
from upscaler.models.registry import ModelRef
from upscaler.pixels import batch_to_pixels, run_via_planes, to_planes

# Most capable first; ORT assigns each node to the first provider in the list that takes it.
PROVIDER_ORDER = (
    "TensorrtExecutionProvider",
    "CUDAExecutionProvider",
    "CoreMLExecutionProvider",
    "CPUExecutionProvider",
)
_DEVICE_PROVIDERS = {
    "tensorrt": "TensorrtExecutionProvider",
    "trt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
    "cpu": "CPUExecutionProvider",
}
_FP16_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")
_OOM_MARKERS = ("failed to allocate memory", "out of memory", "cudaerrormemoryallocation",
                "cuda_error_out_of_memory", "bad_alloc")

log = logging.getLogger(__name__)


def unavailable_reason() -> str | None:
    """None when ONNX Runtime can run here, else why not."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError as e:
        return f"onnxruntime is not installed ({e})"
    return None


def available_providers() -> list[str]:
    """The providers of PROVIDER_ORDER that this ONNX Runtime build has, best first."""
    import onnxruntime as ort

    present = set(ort.get_available_providers())
    return [p for p in PROVIDER_ORDER if p in present]


def has_cuda() -> bool:
    """Whether ONNX Runtime can run on an NVIDIA GPU here (TensorRT or CUDA provider)."""
    return unavailable_reason() is None and any(p in _FP16_PROVIDERS for p in available_providers())


def _is_oom(error: BaseException) -> bool:
    text = str(error).lower()
    return isinstance(error, MemoryError) or any(m in text for m in _OOM_MARKERS)


def _providers(device: str | None) -> list[str | tuple[str, dict[str, Any]]]:
    """The provider list for `device` ("cuda:1", "tensorrt", "cpu", a provider name or None)."""
    present = available_providers()
    if device is None:
        return [_with_options(p, {}) for p in present]
    kind, _, index = device.partition(":")
    provider = _DEVICE_PROVIDERS.get(kind.lower(), kind)
    if provider not in PROVIDER_ORDER:
        known = ", ".join(sorted(_DEVICE_PROVIDERS))
        raise ExecutorError(f"onnxruntime: unknown device {device!r}; use one of {known}")
    if provider not in present:
        # PyPI's onnxruntime has the CPU alone; NVIDIA's providers come in another package.
        gpu = ("; pip install onnxruntime-gpu in its place" if provider in
               ("CUDAExecutionProvider", "TensorrtExecutionProvider") else "")
        raise ExecutorError(f"onnxruntime: {provider} is not available in this onnxruntime build "
                            f"(has {', '.join(present)}){gpu}")
    options: dict[str, Any] = {"device_id": int(index)} if index.isdigit() else {}
    chosen = [_with_options(provider, options)]
    if provider == "TensorrtExecutionProvider" and "CUDAExecutionProvider" in present:
        chosen.append(("CUDAExecutionProvider", options))  # for nodes TensorRT cannot take
    if provider != "CPUExecutionProvider":
        chosen.append("CPUExecutionProvider")
    return chosen


def _with_options(provider: str, options: dict[str, Any]) -> str | tuple[str, dict[str, Any]]:
    if provider == "TensorrtExecutionProvider":
        # TensorRT builds an engine per input shape, which takes minutes: keep them across runs.
        engines = cache_dir() / "tensorrt"
        return provider, {**options, "trt_engine_cache_enable": True,
                          "trt_engine_cache_path": str(engines)}
    return (provider, options) if options else provider


def _provider_name(entry: str | tuple[str, dict[str, Any]]) -> str:
    return entry if isinstance(entry, str) else entry[0]


class OnnxRuntimeExecutor(ClosingExecutor):
    """Runs a model with ONNX Runtime on TensorRT, CUDA, Core ML or the CPU, best present first.

    options.device forces a provider: "tensorrt", "cuda[:N]", "coreml" or "cpu".
    Precision: fp16 by default on TensorRT and CUDA; fp32 on the CPU (ORT's CPU provider has no
    fp16 convolution, so an fp16 model would run slower there through casts) and on Core ML
    (the Core ML provider takes fp32 graphs and picks its own precision per compute unit). bf16
    is not offered. A user's .onnx runs as it is, in whatever dtype it declares: inputs are cast
    to it and outputs back to float32.
    """

    name = "onnxruntime"

    def __init__(self, model: ModelRef, options: ExecutorOptions) -> None:
        import onnxruntime as ort

        providers = _providers(options.device)
        self.provider = _provider_name(providers[0])
        default: PrecisionName = "fp16" if self.provider in _FP16_PROVIDERS else "fp32"
        self.precision: PrecisionName = options.precision or default
        if self.precision == "bf16":
            raise ExecutorError("onnxruntime: bf16 is not supported; use fp32 or fp16")
        path = onnx_file(model, self.precision)
        self.path = path

        session_options = ort.SessionOptions()
        session_options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        session_options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        # ORT logs a failed kernel (an allocation past `ulimit -v`, say) on stderr before
        # raising; the exception becomes our one line, so its log is left to fatal errors.
        session_options.log_severity_level = 4
        if options.threads:
            session_options.intra_op_num_threads = options.threads
            session_options.inter_op_num_threads = 1
        self._model = model
        self._session_options, self._providers = session_options, providers
        self._parts: dict[tuple[str, tuple[str, ...]], Any] = {}
        self._pixel_sessions: dict[np.dtype, Any] = {}
        # On a GPU the conversions to and from pixels run inside the graph (onnx_pixels.py);
        # on the CPU OpenCV's single pass is faster than the graph's (pixels.py).
        self.pixels_in_graph = self.provider in _FP16_PROVIDERS
        self._session: Any = None
        self._session = self._live()

        if len(self._session.get_inputs()) != 1 or not self._session.get_outputs():
            # (Two inputs failed at the first frame, "Required inputs are missing", exit 4.)
            raise ModelError("expected one NCHW image input", path)
        model_input = self._session.get_inputs()[0]
        self._input_name = model_input.name
        model_output = self._session.get_outputs()[0]
        self._output_name = model_output.name
        self._output_dtype = np.float16 if model_output.type == "tensor(float16)" else np.float32
        self._output: np.ndarray | None = None
        if model_input.type not in ("tensor(float16)", "tensor(float)"):
            raise ModelError(f"model input is {model_input.type}, expected float", path)
        self._input_dtype = np.float16 if model_input.type == "tensor(float16)" else np.float32
        if model.kind == "onnx":  # a user's file runs in the precision it was saved in
            self.precision = "fp16" if self._input_dtype == np.float16 else "fp32"
        dims = _static_dims(model_input.shape)
        out_dims = _static_dims(model_output.shape)
        self.fixed_tile: tuple[int, int] | None = image_io(
            dims, out_dims[1] if len(out_dims) == 4 else None, path)
        self._fixed_batch = dims[0]
        self.scale: int = model.scale if model.scale is not None else self._measure_scale(path)

    def _live(self) -> Any:
        """The session, made again where release_memory dropped it."""
        if self._session is None:
            self._session = self._new_session(str(self.path))
        return self._session

    def _new_session(self, model: str | bytes) -> Any:
        """A session for `model` (a path, or a serialised model) on this executor's providers."""
        import onnxruntime as ort

        try:
            return ort.InferenceSession(model, self._session_options, providers=self._providers)
        except Exception as e:  # ORT's pybind exceptions share no base class but Exception
            if _is_oom(e):
                raise OutOfMemoryError(f"onnxruntime: out of memory loading the model: "
                                       f"{one_line(e)}", self.path) from e
            raise ModelError(f"not a loadable ONNX model: {one_line(e)}", self.path) from e

    def release_memory(self) -> bool:
        """Free what ONNX Runtime keeps from call to call: the session's arena (it holds the
        largest call's activations), the kept output buffer and the parts' sessions. The
        session is made again at the next call (a second or so). True: memory was freed."""
        self._parts.clear()
        self._pixel_sessions.clear()
        self._session = None
        self._output = None
        return True

    def _measure_scale(self, path: Any) -> int:
        out_shape = self._session.get_outputs()[0].shape
        in_shape = self._session.get_inputs()[0].shape
        if all(isinstance(d, int) for d in (*out_shape[2:], *in_shape[2:])):
            return integer_scale(*in_shape[2:], *out_shape[2:], path)
        return measured_scale(self.run, self.fixed_tile, path)

    def run(self, batch: np.ndarray) -> np.ndarray:
        """float32 (N, 3, h, w) RGB in [0, 1] -> float32 (N, 3, h*s, w*s); see Executor."""
        feed = batch.astype(self._input_dtype, copy=False)
        parts = in_fixed_batches(self._run, feed, self._fixed_batch, self.name, self.path)
        return self._run(feed) if parts is None else parts

    def run_pixels(self, tiles: np.ndarray) -> np.ndarray:
        """(N, h, w, 3) pixels -> (N, h*s, w*s, 3) of the same dtype; see Executor.

        On a GPU provider (`pixels_in_graph`) the model wrapped by onnx_pixels.py takes and
        gives the pixels themselves. Otherwise the model writes float planes into an output
        buffer kept from call to call (I/O binding), which OpenCV converts: a 4K frame's float
        output is 100 MB, and a fresh one each frame cost more in page faults than the model
        it held (the instant model of bench/bench_fast_path.py).
        """
        if self._fixed_batch is not None and self._fixed_batch != len(tiles):
            return run_via_planes(self.run, tiles)
        session = self._pixel_session(tiles.dtype) if self.pixels_in_graph else None
        if session is not None:
            return self._run_pixel_session(session, tiles)
        feed = to_planes(tiles, self._input_dtype)
        n, _, h, w = feed.shape
        m = self._model.margin  # unpadded networks (Real-CUGAN, waifu2x) return less
        shape = (n, 3, (h - 2 * m) * self.scale, (w - 2 * m) * self.scale)
        if self._output is None or self._output.shape != shape:
            self._output = None  # the old buffer goes before the new one comes
            self._output = np.empty(shape, self._output_dtype)
        session = self._live()
        binding = session.io_binding()
        binding.bind_cpu_input(self._input_name, feed)
        binding.bind_output(self._output_name, "cpu", 0, self._output_dtype, shape,
                            self._output.ctypes.data)
        self._call(lambda: session.run_with_iobinding(binding), feed.shape)
        return batch_to_pixels(self._output, tiles.dtype)

    def _pixel_session(self, dtype: np.dtype) -> Any:
        """The model wrapped to take and give pixels of `dtype` (onnx_pixels.py), made the
        first time; None where the model's opset is too old to wrap."""
        dtype = np.dtype(dtype)
        if dtype not in self._pixel_sessions:
            import onnx

            from upscaler.executors.onnx_pixels import pixel_model, wraps

            model = onnx.load(str(self.path))
            session = None
            if wraps(model):
                try:
                    session = self._new_session(pixel_model(model, dtype).SerializeToString())
                except ModelError as e:  # the float model loaded: it runs as it did
                    log.info("onnxruntime: converting pixels outside the model, as the model "
                             "wrapped to take them did not load: %s", e)
            self._pixel_sessions[dtype] = session
        return self._pixel_sessions[dtype]

    def _run_pixel_session(self, session: Any, tiles: np.ndarray) -> np.ndarray:
        from upscaler.executors.onnx_pixels import PIXELS_IN, PIXELS_OUT

        n, h, w, _ = tiles.shape
        m = self._model.margin
        # A new array for each call: the caller may keep it (reuse.py stores outputs).
        out = np.empty((n, (h - 2 * m) * self.scale, (w - 2 * m) * self.scale, 3), tiles.dtype)
        binding = session.io_binding()
        binding.bind_cpu_input(PIXELS_IN, np.ascontiguousarray(tiles))
        binding.bind_output(PIXELS_OUT, "cpu", 0, tiles.dtype, out.shape, out.ctypes.data)
        self._call(lambda: session.run_with_iobinding(binding), tiles.shape)
        return out

    def _call(self, run: Any, shape: tuple[int, ...]) -> Any:
        """`run()`, its runtime errors turned into ours."""
        try:
            return run()
        except Exception as e:  # ORT's pybind exceptions share no base class but Exception
            if _is_oom(e):
                raise OutOfMemoryError(f"onnxruntime ({self.provider}): out of memory for input "
                                       f"{tuple(shape)}: {one_line(e)}") from e
            raise ExecutorError(f"onnxruntime ({self.provider}) failed on input "
                                f"{tuple(shape)}: {one_line(e)}", self.path) from e

    def _run(self, feed: np.ndarray) -> np.ndarray:
        session = self._live()  # outside _call: its errors are ours already
        (out,) = self._call(
            lambda: session.run([self._output_name], {self._input_name: feed}), feed.shape)
        return np.asarray(out, dtype=np.float32)

    def extract(self, planes: np.ndarray, feeds: dict[str, np.ndarray], target: str,
                ) -> np.ndarray:
        """Blob `target` for float32 input planes (3, h, w), with the vector blobs in `feeds`
        given rather than computed (whole-frame pooled means, models/exact.py).

        Each (target, feeds) pair is a part of the graph built into a session of its own the
        first time, in memory: ONNX Runtime would run every node of the whole model.
        """
        key = (target, tuple(sorted(feeds)))
        session = self._parts.get(key)
        if session is None:
            import onnxruntime as ort

            from upscaler.models.onnx_builder import build_onnx

            part = self._model.graph().part(target, key[1])
            proto = build_onnx(part, "fp16" if self.precision == "fp16" else "fp32")
            session = self._call(lambda: ort.InferenceSession(
                proto.SerializeToString(), self._session_options, providers=self._providers),
                planes.shape)
            self._parts[key] = session
        feed = {self._input_name: planes[None].astype(self._input_dtype, copy=False)}
        for name in part_inputs(session)[1:]:
            feed[name] = feeds[name].reshape(1, -1, 1, 1).astype(self._input_dtype)
        (out,) = self._call(lambda: session.run(None, feed), planes.shape)
        return np.asarray(out[0], dtype=np.float32)

    def close(self) -> None:
        self._parts.clear()
        self._pixel_sessions.clear()
        self._session = None
        self._output = None


def part_inputs(session: Any) -> list[str]:
    return [i.name for i in session.get_inputs()]


def _static_dims(shape: list[Any]) -> tuple[int | None, ...]:
    """A tensor's dimensions, None where the model leaves one free."""
    return tuple(d if isinstance(d, int) and d > 0 else None for d in shape)
