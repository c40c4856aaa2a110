"""OpenVINO executor: the ONNX model compiled for the CPU (or an Intel GPU) by OpenVINO."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np

from upscaler.errors import ExecutorError, ModelError, OutOfMemoryError, one_line
from upscaler.executors.base import (
    ClosingExecutor,
    ExecutorOptions,
    PrecisionName,
    image_io,
    in_fixed_batches,
    measured_scale,
)
from upscaler.models.builds import onnx_file
from upscaler.models.registry import ModelRef
from upscaler.pixels import batch_to_pixels, run_via_planes, to_planes

PerformanceHint = Literal["LATENCY", "THROUGHPUT"]
_PRECISION_HINTS: dict[PrecisionName, str] = {"fp32": "f32", "fp16": "f16", "bf16": "bf16"}


def unavailable_reason() -> str | None:
    """None when OpenVINO can run here, else why not."""
    try:
        import openvino as ov
    except ImportError as e:
        return f"openvino is not installed ({e})"
    try:
        devices = ov.Core().available_devices
    except RuntimeError as e:
        return f"openvino cannot list devices: {one_line(e)}"
    return None if devices else "openvino finds no device"


def _is_oom(error: BaseException) -> bool:
    text = str(error).lower()
    return isinstance(error, MemoryError) or "out of memory" in text or "bad_alloc" in text


class OpenVinoExecutor(ClosingExecutor):
    """Runs a model with OpenVINO on "CPU" (default) or options.device ("GPU", "GPU.1"...).

    Precision is OpenVINO's INFERENCE_PRECISION_HINT: fp32, fp16 or bf16. The default is fp32
    on the CPU and fp16 on a GPU. Measured on this project's development CPU (AMD EPYC, AVX2
    without AVX-512/AMX, OpenVINO 2026.4, 2 threads): the CPU plugin has no native bf16 or fp16
    kernels there, so both hints fall back to f32 (the compiled model reports f32 and the output
    is bit-identical to fp32) and are no faster: x4plus-anime at 128 px ran at 0.0133 (fp32),
    0.0136 (fp16) and 0.0134 (bf16) Mpx/s, the same within noise. A claimed 0.081 Mpx/s for
    bf16 did not reproduce, so fp32, the plain choice, is the default. On CPUs with AMX or
    AVX-512 BF16 the bf16 hint is faster, but it rounds activations to 8 mantissa bits (ncnn's
    bf16 storage gives 55 dB on x4plus-anime, 50 dB on animevideov3), not verified for
    OpenVINO there, so it stays opt-in. Intel GPUs run fp16 natively, and the fp16 ONNX build
    stays near 70 dB of fp32 (bench/bench_executors.py), so GPUs default to fp16.

    The ONNX model keeps dynamic height and width: OpenVINO's CPU plugin runs dynamic shapes as
    fast as a model reshaped and compiled per tile shape (measured within noise), and one
    compiled model serves every tile size without recompiling.

    performance_hint LATENCY (default) runs a batch as one request using all threads;
    THROUGHPUT splits it into one request per tile run on parallel streams, which helps on
    many-core CPUs with batches of several tiles.
    """

    name = "openvino"
    fixed_tile: tuple[int, int] | None = None

    def __init__(self, model: ModelRef, options: ExecutorOptions, *,
                 performance_hint: PerformanceHint = "LATENCY") -> None:
        import openvino as ov

        core = ov.Core()
        # OpenVINO's names are upper case (CPU, GPU.1); cpu as the other executors take it.
        self.device = (options.device or "CPU").upper()
        available = core.available_devices
        if self.device.split(".")[0] not in {d.split(".")[0] for d in available}:
            raise ExecutorError(f"openvino: device {self.device!r} not found "
                                f"(has {', '.join(available)})")
        is_gpu = self.device.upper().startswith("GPU")
        self.precision: PrecisionName = options.precision or ("fp16" if is_gpu else "fp32")
        self.performance_hint = performance_hint
        # OpenVINO converts precision itself from the hint, so it always reads the fp32 build.
        path = onnx_file(model, "fp32")
        self.path = path
        ov_model = _read_onnx(path)
        # (An empty file reads as a model of no inputs, whose input(0) raised IndexError.)
        if len(ov_model.inputs) != 1 or len(ov_model.outputs) < 1:
            raise ModelError("expected one NCHW image input", path)
        rank = ov_model.input(0).get_partial_shape().rank
        if rank.is_dynamic or rank.get_length() != 4:
            raise ModelError("expected one NCHW image input", path)
        kind = ov_model.input(0).get_element_type()
        if not kind.is_real():
            # An integer input ran, and wrote a picture of 0 and 255 alone.
            raise ModelError(f"model input is {kind.get_type_name()}, expected float", path)
        out_shape = ov_model.output(0).get_partial_shape()
        out_channels = (_static(out_shape)[1] if out_shape.rank.is_static
                        and out_shape.rank.get_length() == 4 else None)
        # A user's ONNX file may fix its input's size, which the tiler then keeps to, and its
        # batch, which run() then keeps to.
        dims = _static(ov_model.input(0).get_partial_shape())
        self.fixed_tile = image_io(dims, out_channels, path)
        self._fixed_batch = dims[0]

        config: dict[str, Any] = {
            "INFERENCE_PRECISION_HINT": _PRECISION_HINTS[self.precision],
            "PERFORMANCE_HINT": performance_hint,
        }
        if options.threads:
            config["INFERENCE_NUM_THREADS"] = options.threads
        self._model, self._core, self._config = model, core, config
        self._parts: dict[tuple[str, tuple[str, ...]], Any] = {}
        try:
            self._compiled = core.compile_model(ov_model, self.device, config)
        except RuntimeError as e:
            if _is_oom(e):
                raise OutOfMemoryError(f"openvino: out of memory compiling the model: "
                                       f"{one_line(e)}", path) from e
            raise ExecutorError(f"openvino cannot compile the model for {self.device}: "
                                f"{one_line(e)}", path) from e
        self._input_dtype = self._compiled.input(0).get_element_type().to_dtype()
        self._request = self._compiled.create_infer_request()
        # Plain requests rather than an AsyncInferQueue with a Python callback: releasing such
        # a queue can deadlock (its threads wait for the GIL that the releasing thread holds),
        # which hung our tests now and then.
        streams = (int(self._compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
                   if performance_hint == "THROUGHPUT" else 1)
        self._parallel = [self._compiled.create_infer_request()
                          for _ in range(streams)] if streams > 1 else []
        self.scale: int = (model.scale if model.scale is not None
                           else measured_scale(self.run, self.fixed_tile, self.path))

    def run(self, batch: np.ndarray) -> np.ndarray:
        """float32 (N, 3, h, w) RGB in [0, 1] -> float32 (N, 3, h*s, w*s); see Executor."""
        feed = np.ascontiguousarray(batch, dtype=self._input_dtype)
        parts = in_fixed_batches(self.run, feed, self._fixed_batch, self.name, self.path)
        if parts is not None:
            return parts
        if self._parallel and len(feed) > 1:
            return self._guarded(lambda: self._run_parallel(self._parallel, feed), feed.shape)
        out = self._guarded(lambda: self._infer(self._request, feed), feed.shape)
        return np.array(out, dtype=np.float32)  # a copy: the request reuses its output buffer

    def run_pixels(self, tiles: np.ndarray) -> np.ndarray:
        """(N, h, w, 3) pixels -> (N, h*s, w*s, 3) of the same dtype; see Executor.

        The pixels are made from the request's own output buffer, which it keeps from call to
        call: a fresh copy of a 4K frame's 100 MB float output each frame cost more in page
        faults than the model it held (the instant model of bench/bench_fast_path.py).
        """
        if (self._parallel and len(tiles) > 1) or self._fixed_batch not in (None, len(tiles)):
            return run_via_planes(self.run, tiles)
        feed = to_planes(tiles, self._input_dtype)
        out = self._guarded(lambda: self._infer(self._request, feed), feed.shape)
        return batch_to_pixels(out, tiles.dtype)

    @staticmethod
    def _infer(request: Any, feed: np.ndarray) -> np.ndarray:
        """The request's output for `feed`, as a view of the request's own buffer, valid until
        its next call. OpenVINO's Python API otherwise copies every output into a new array
        (and the input into its tensor): 36 ms a 4K frame of the instant model, 19.5 without
        the copies, which made the frame's 100 MB in fresh pages."""
        return request.infer({0: feed}, share_inputs=True, share_outputs=True)[0]

    def _guarded(self, run: Any, shape: tuple[int, ...]) -> Any:
        """`run()`, OpenVINO's errors turned into ours."""
        try:
            return run()
        except RuntimeError as e:
            if _is_oom(e):
                raise OutOfMemoryError(f"openvino ({self.device}): out of memory for input "
                                       f"{tuple(shape)}: {one_line(e)}") from e
            raise ExecutorError(f"openvino ({self.device}) failed on input "
                                f"{tuple(shape)}: {one_line(e)}", self.path) from e

    @staticmethod
    def _run_parallel(requests: list[Any], feed: np.ndarray) -> np.ndarray:
        """One tile per request, as many at once as there are requests, in order."""
        results = []
        for start in range(0, len(feed), len(requests)):
            running = requests[:len(feed) - start]
            for i, request in enumerate(running):
                request.start_async({0: feed[start + i:start + i + 1]})
            for request in running:
                request.wait()
                results.append(np.array(request.get_output_tensor(0).data, dtype=np.float32))
        return np.concatenate(results)

    def extract(self, planes: np.ndarray, feeds: dict[str, np.ndarray], target: str,
                ) -> np.ndarray:
        """Blob `target` for float32 input planes (3, h, w), with the vector blobs in `feeds`
        given rather than computed (whole-frame pooled means, models/exact.py); each (target,
        feeds) pair is a part of the graph compiled the first time, from memory."""
        key = (target, tuple(sorted(feeds)))
        if key not in self._parts:
            from upscaler.models.onnx_builder import build_onnx

            part = self._model.graph().part(target, key[1])
            compiled = self._guarded(lambda: self._core.compile_model(
                self._core.read_model(build_onnx(part).SerializeToString()), self.device,
                self._config), planes.shape)
            self._parts[key] = (compiled.create_infer_request(), tuple(part.given))
        request, given = self._parts[key]
        inputs = {"input": np.ascontiguousarray(planes[None], dtype=np.float32)}
        for name in given:
            inputs[name] = np.ascontiguousarray(feeds[name].reshape(1, -1, 1, 1), np.float32)
        out = self._guarded(lambda: request.infer(inputs)[0], planes.shape)
        return np.array(out[0], dtype=np.float32)

    def close(self) -> None:
        self._parts.clear()
        self._parallel = []
        self._request = None  # type: ignore[assignment]
        self._compiled = None  # type: ignore[assignment]


def _read_onnx(path: Path) -> Any:
    """The ov.Model of an ONNX file, read by OpenVINO's ONNX frontend alone.

    core.read_model would ask every frontend whether the file is theirs, and TensorFlow's
    prints protobuf parse errors of a damaged file to stderr, before our one line.
    """
    from openvino.frontend import FrontEndManager

    try:
        frontend = FrontEndManager().load_by_framework("onnx")
        return frontend.convert(frontend.load(str(path)))
    except Exception as e:  # the frontend's GeneralFailure, OpConversionFailure...: no common base
        # Its last line says why ("Model can't be parsed"); those before, where in OpenVINO.
        lines = [line for line in str(e).splitlines() if line.strip()]
        raise ModelError(f"not a loadable ONNX model: {lines[-1] if lines else one_line(e)}",
                         path) from e


def _static(shape: Any) -> list[int | None]:
    """An OpenVINO partial shape's dimensions, None where the model leaves one free."""
    return [d.get_length() if d.is_static else None for d in shape]
