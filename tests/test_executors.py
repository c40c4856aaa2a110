"""Every executor that runs here against Tencent's ncnn in fp32 (tests/reference.py); the
registry and its auto choice, also on simulated platforms."""

from __future__ import annotations

import platform
import shutil
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import psnr
from draw import draw_cel
from reference import ncnn_run

from upscaler.errors import ExecutorError, UsageError
from upscaler.executors.base import Executor, ExecutorOptions
from upscaler.executors.onnxruntime import OnnxRuntimeExecutor, _is_oom
from upscaler.executors.openvino import OpenVinoExecutor
from upscaler.executors.registry import (
    EXECUTORS,
    available_executors,
    create_executor,
    tile_budget,
    unavailable_reason,
)
from upscaler.models.builds import onnx_file
from upscaler.models.registry import resolve_model
from upscaler.pixels import run_pixels, run_via_planes

FAST = "realesr-animevideov3"
OPTIONS = ExecutorOptions(threads=2)


@pytest.fixture(scope="module")
def tiles() -> np.ndarray:
    """Two 32x40 tiles: a drawn cel crop and noise (the hardest case for reduced precision)."""
    cel = draw_cel(64, 80, seed=2)[16:48, 20:60].transpose(2, 0, 1).astype(np.float32) / 255
    noise = np.random.default_rng(5).random((3, 32, 40), dtype=np.float32)
    return np.ascontiguousarray(np.stack([cel, noise]))


FP32_DB = 115
FP16_DB = 45


def expected_db(executor: Executor) -> float:
    """What `executor` at its precision must score against ncnn fp32, a few dB under measured.

    Measured on the x86 (AVX2) development CPU, on the tiles below: 120.2-134.9 dB in fp32
    (ONNX Runtime, OpenVINO, PyTorch); ncnn identical (inf), as it keeps fp32 activations on
    x86 even with fp16 storage on. In fp16 arithmetic: 56.3 dB (OpenVINO's fp16 hint), 47 dB
    (ncnn on Vulkan, llvmpipe); Core ML and ARM CPUs compute in fp16 too.
    """
    device = str(getattr(executor, "device", "cpu")).lower()
    x86_cpu = platform.machine().lower() in ("x86_64", "amd64") and device == "cpu"
    if getattr(executor, "precision", None) == "fp32" or (executor.name == "ncnn" and x86_cpu):
        return FP32_DB
    return FP16_DB


def executor_or_skip(name: str, model: str = FAST,
                     options: ExecutorOptions = OPTIONS) -> Executor:
    reason = unavailable_reason(name)
    if reason is not None:
        pytest.skip(reason)
    return create_executor(name, resolve_model(model), options)


@pytest.mark.parametrize("name", list(EXECUTORS))
def test_default_precision_close_to_fp32(name: str, tiles: np.ndarray) -> None:
    executor = executor_or_skip(name)
    try:
        out = executor.run(tiles)
    finally:
        executor.close()
    expected = ncnn_run(FAST, tiles)
    assert out.dtype == np.float32 and out.shape == expected.shape
    for got, want in zip(out, expected, strict=True):
        assert psnr(got, want) >= expected_db(executor)


@pytest.mark.parametrize("name", list(EXECUTORS))
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_pixels_come_out_as_the_float_run_gives_them(name: str, dtype: type,
                                                     tiles: np.ndarray) -> None:
    """An executor's own `run_pixels`, where it has one (the others go through
    pixels.run_via_planes), gives its float `run` rounded to pixels, and a later call, which
    may reuse the runtime's output buffer, leaves the pixels an earlier one returned."""
    peak = np.iinfo(dtype).max
    pixels = np.rint(tiles.transpose(0, 2, 3, 1) * peak).astype(dtype)
    executor = executor_or_skip(name)
    if executor.fixed_tile is not None:
        executor.close()
        pytest.skip(f"{name} takes only {executor.fixed_tile}px tiles")
    try:
        first = run_pixels(executor, pixels)
        kept = first.copy()
        expected = run_via_planes(executor.run, pixels)
        run_pixels(executor, np.ascontiguousarray(pixels[::-1]))
    finally:
        executor.close()
    assert first.dtype == dtype and first.shape == (2, 32 * 4, 40 * 4, 3)
    np.testing.assert_array_equal(first, expected)  # measured identical
    np.testing.assert_array_equal(first, kept)


@pytest.mark.parametrize("name", ["onnxruntime", "openvino"])
def test_pixels_are_made_without_a_float_copy_of_the_output(name: str,
                                                            tiles: np.ndarray) -> None:
    """A 4K frame's float output is 100 MB: `run_pixels` converts it from the runtime's own
    buffer, kept from call to call, rather than from a new copy each frame (which OpenVINO's
    Python API makes unless told to share). Python's allocation tracer sees numpy's arrays."""
    pixels = np.rint(tiles.transpose(0, 2, 3, 1) * 255).astype(np.uint8)
    executor = executor_or_skip(name)
    try:
        run_pixels(executor, pixels)  # the kept buffers are made here
        tracemalloc.start()
        try:
            out = run_pixels(executor, pixels)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    finally:
        executor.close()
    float_output = out.size * 4
    # The pixels (a quarter of it) and the input planes; a copy would be the whole of it.
    assert peak < float_output / 2, (peak, float_output)


@pytest.mark.parametrize("name", ["openvino", "ncnn"])
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_cpu_precisions_close_to_fp32(name: str, precision: str, tiles: np.ndarray) -> None:
    options = ExecutorOptions(threads=2, precision=precision)  # type: ignore[arg-type]
    executor = executor_or_skip(name, options=options)
    try:
        out = executor.run(tiles[:1])
    finally:
        executor.close()
    # OpenVINO's fp16 hint measured 56.3 dB here.
    minimum = expected_db(executor) if executor.name == "ncnn" or precision == "fp32" else 53
    assert psnr(out, ncnn_run(FAST, tiles[:1])) >= minimum


@pytest.mark.parametrize("name", list(EXECUTORS))
@pytest.mark.parametrize("model", ["realesr-animevideov3", "realesr-animevideov3-x3"])
def test_batch_of_odd_sizes(name: str, model: str) -> None:
    batch = np.random.default_rng(7).random((2, 3, 23, 17), dtype=np.float32)
    executor = executor_or_skip(name, model)
    if executor.fixed_tile is not None:
        executor.close()
        pytest.skip(f"{name} takes only {executor.fixed_tile}px tiles")
    try:
        out = executor.run(batch)
        single = executor.run(batch[1:])
    finally:
        executor.close()
    scale = resolve_model(model).scale
    assert executor.scale == scale
    assert out.shape == (2, 3, 23 * scale, 17 * scale)
    assert psnr(out, ncnn_run(model, batch)) >= expected_db(executor)
    # Each tile comes out as if it ran alone: nothing leaks between the items of a batch
    # (measured 134.8 dB or identical).
    assert psnr(out[1:], single) >= 125


@pytest.fixture
def user_fp16_onnx(tmp_path: Path) -> Path:
    path = tmp_path / "my-model-fp16.onnx"
    shutil.copyfile(onnx_file(resolve_model(FAST), "fp16"), path)
    return path


def test_ncnn_on_vulkan(tiles: np.ndarray) -> None:
    """Where ncnn sees a Vulkan device (Mesa's llvmpipe counts), fp16 there stays >= 45 dB
    (measured 47 dB on llvmpipe; this machine has no Vulkan device to measure again)."""
    if unavailable_reason("ncnn") is not None:
        pytest.skip("ncnn is not installed")
    from upscaler.executors.ncnn import gpu_count

    if gpu_count() == 0:
        pytest.skip("ncnn finds no Vulkan device")
    small = np.ascontiguousarray(tiles[:, :, :16, :16])
    with create_executor("ncnn", resolve_model(FAST), ExecutorOptions(device="vulkan")) as ex:
        assert ex.device == "vulkan:0"
        out = ex.run(small)
    for got, want in zip(out, ncnn_run(FAST, small), strict=True):
        assert psnr(got, want) >= 45


@pytest.mark.parametrize("executor_class", [OnnxRuntimeExecutor, OpenVinoExecutor])
def test_user_onnx_with_fp16_input(user_fp16_onnx: Path, executor_class: type,
                                   tiles: np.ndarray) -> None:
    model = resolve_model(user_fp16_onnx)
    assert model.kind == "onnx" and model.scale is None
    with executor_class(model, OPTIONS) as executor:
        assert executor.scale == 4  # measured: the file does not say
        out = executor.run(tiles)
    assert out.dtype == np.float32
    assert psnr(out, ncnn_run(FAST, tiles)) >= 70  # fp16 weights: measured 73.0 dB


@pytest.mark.parametrize("executor_class", [OnnxRuntimeExecutor, OpenVinoExecutor])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_fp16_model_takes_and_gives_pixels_as_its_float_run(
        user_fp16_onnx: Path, executor_class: type, dtype: type, tiles: np.ndarray) -> None:
    """Half-precision planes to and from pixels (OpenCV) give what the float32 run gives."""
    peak = np.iinfo(dtype).max
    pixels = np.rint(tiles.transpose(0, 2, 3, 1) * peak).astype(dtype)
    with executor_class(resolve_model(user_fp16_onnx), OPTIONS) as executor:
        got = executor.run_pixels(pixels)
        expected = run_via_planes(executor.run, pixels)
    assert got.dtype == dtype
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("model", [FAST, "realcugan-x2-conservative"])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_pixels_converted_inside_the_graph_are_opencvs(model: str, dtype: type) -> None:
    """On a GPU provider ONNX Runtime runs the model wrapped to take and give pixels
    (onnx_pixels.py). The same graph on the CPU provider gives, to the bit, what OpenCV makes
    of the float run (Real-CUGAN: an unpadded net, whose output is smaller than its input
    times the scale), a new array each call; the CPU provider itself keeps OpenCV."""
    cel = draw_cel(64, 80, seed=3)
    noise = np.random.default_rng(7).integers(0, 256, cel.shape).astype(np.uint8)
    pixels = (np.stack([cel, noise]).astype(np.uint32) * (np.iinfo(dtype).max // 255)
              ).astype(dtype)
    with OnnxRuntimeExecutor(resolve_model(model), OPTIONS) as executor:
        assert not executor.pixels_in_graph  # the CPU provider
        expected = executor.run_pixels(pixels)
        executor.pixels_in_graph = True
        first = executor.run_pixels(pixels)
        kept = first.copy()
        executor.run_pixels(np.ascontiguousarray(pixels[::-1]))
        assert executor._pixel_sessions[np.dtype(dtype)] is not None  # the graph ran
    assert first.dtype == dtype and first.shape == expected.shape
    np.testing.assert_array_equal(first, expected)  # measured identical
    np.testing.assert_array_equal(first, kept)


def test_a_model_too_old_to_wrap_keeps_the_conversions_outside(tmp_path: Path) -> None:
    """Opset 10 has no Round: such a model runs as a float model on a GPU provider too."""
    from onnx import TensorProto, helper

    value = ["N", 3, "H", "W"]
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])], "same",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, value)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, value)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 10)])
    model.ir_version = 7
    onnx.save(model, tmp_path / "same.onnx")
    pixels = draw_cel(16, 24)[None]
    with OnnxRuntimeExecutor(resolve_model(tmp_path / "same.onnx"), OPTIONS) as executor:
        executor.pixels_in_graph = True
        np.testing.assert_array_equal(executor.run_pixels(pixels), pixels)
        assert executor._pixel_sessions == {np.dtype(np.uint8): None}


def test_user_onnx_with_static_shape(tmp_path: Path) -> None:
    proto = onnx.load(onnx_file(resolve_model(FAST), "fp32"))
    for value, dims in ((proto.graph.input[0], (1, 3, 24, 24)),
                        (proto.graph.output[0], (1, 3, 96, 96))):
        for dim, size in zip(value.type.tensor_type.shape.dim, dims, strict=True):
            dim.dim_value = size
    path = tmp_path / "static.onnx"
    onnx.save(proto, path)
    batch = np.random.default_rng(3).random((2, 3, 24, 24), dtype=np.float32)
    with OnnxRuntimeExecutor(resolve_model(path), OPTIONS) as executor:
        assert (executor.fixed_tile, executor.scale) == ((24, 24), 4)
        out = executor.run(batch)  # a batch of 2 on a batch-1 model runs tile by tile
    assert psnr(out, ncnn_run(FAST, batch)) >= FP32_DB  # measured 121.8 dB


def test_ncnn_executor_needs_ncnn_files(user_fp16_onnx: Path) -> None:
    if unavailable_reason("ncnn") is not None:
        pytest.skip("ncnn is not installed")
    with pytest.raises(ExecutorError, match="ncnn needs ncnn"):
        create_executor("ncnn", resolve_model(user_fp16_onnx), OPTIONS)


def test_forced_unavailable_executor_says_why() -> None:
    missing = [name for name in EXECUTORS if unavailable_reason(name) is not None]
    if not missing:
        pytest.skip("every executor runs here")
    with pytest.raises(ExecutorError) as info:
        create_executor(missing[0], resolve_model(FAST), OPTIONS)
    message = str(info.value)
    assert missing[0] in message and str(unavailable_reason(missing[0])) in message
    assert "\n" not in message


def test_forced_unavailable_device_says_why() -> None:
    with pytest.raises(ExecutorError, match="Vulkan device 7"):
        executor_or_skip("ncnn", options=ExecutorOptions(device="vulkan:7"))
    with pytest.raises(ExecutorError, match="unknown device"):
        executor_or_skip("onnxruntime", options=ExecutorOptions(device="nosuchgpu"))
    with pytest.raises(ExecutorError, match="NOSUCH"):
        executor_or_skip("openvino", options=ExecutorOptions(device="NOSUCH"))


def test_unknown_executor_lists_the_names() -> None:
    with pytest.raises(UsageError) as info:
        create_executor("tensorflow", resolve_model(FAST), OPTIONS)
    for name in ("auto", *EXECUTORS):
        assert name in str(info.value)


def test_auto_picks_an_executor_that_runs(tiles: np.ndarray) -> None:
    executor = create_executor("auto", resolve_model(FAST), OPTIONS)
    try:
        assert executor.name in available_executors()
        out = executor.run(tiles[:1])
    finally:
        executor.close()
    assert psnr(out, ncnn_run(FAST, tiles[:1])) >= expected_db(executor)


def test_auto_skips_executors_that_cannot_load_the_kind(user_fp16_onnx: Path) -> None:
    executor = create_executor("auto", resolve_model(user_fp16_onnx), OPTIONS)
    executor.close()
    assert executor.name in ("openvino", "onnxruntime", "coreml")


def test_tile_budgets() -> None:
    fast, heavy = resolve_model(FAST), resolve_model("realesrgan-x4plus-anime")
    ram = {"total_memory": 24 << 30, "free_memory": 20 << 30}  # the cap, 2 GiB, decides
    cap = 2 << 30
    assert tile_budget("onnx", heavy, **ram) == cap // (16 << 10)  # 131072 pixels
    # ncnn's own workspace is 3.5x the activations, but it runs x4plus-anime's upsampling tail
    # in 116x116 tiles set aside from the budget: only the body's 384 floats a pixel grow.
    tail = 2048 * 8 * 3.5 * 116**2
    assert tile_budget("ncnn", heavy, **ram) == int((cap - tail) / (384 * 8 * 3.5))
    assert tile_budget("ncnn", heavy, **ram) > 1920 * 1080 // 20  # 1080p in 20 tiles (12.3%)
    assert tile_budget("ncnn", fast, **ram) >= 1280 * 720 // 2  # 720p animevideov3 in 2 tiles
    assert tile_budget("openvino", heavy, **ram) < tile_budget("onnx", heavy, **ram)
    # A smaller machine: a quarter of 4 GiB.
    assert tile_budget("onnx", heavy, total_memory=4 << 30, free_memory=4 << 30) == 65536
    # Half of what is available, when that is less than a quarter of the RAM.
    assert tile_budget("onnx", heavy, total_memory=24 << 30, free_memory=2 << 30) == 65536
    # A batch shares the budget.
    assert tile_budget("onnx", heavy, **ram, batch=4) == 32768
    # Core ML computes in fp16 and runs a batch one tile after another.
    assert tile_budget("coreml", heavy, **ram, batch=4) == 262144
    assert tile_budget("coreml", heavy, **ram, precision="fp32") == 131072
    assert tile_budget("torch", heavy, device="cuda", free_memory=1 << 30) < tile_budget(
        "torch", heavy, device="cuda", free_memory=40 << 30)
    assert tile_budget("torch", heavy, device="cuda") == 512 * 512  # free memory unknown
    assert tile_budget("auto", fast) > 0
    with pytest.raises(UsageError):
        tile_budget("tensorflow", fast)


@pytest.mark.parametrize("message", [
    "[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : Failed to allocate memory for requested "
    "buffer of size 2147483648",
    "CUDA failure 2: out of memory ; GPU=0",
    "CUDNN failure 4: CUDNN_STATUS_INTERNAL_ERROR ; cudaErrorMemoryAllocation",
])
def test_ort_out_of_memory_messages_are_recognised(message: str) -> None:
    assert _is_oom(RuntimeError(message))
    assert not _is_oom(RuntimeError("Invalid input shape"))


def test_openvino_throughput_hint_matches_latency(tiles: np.ndarray) -> None:
    if unavailable_reason("openvino") is not None:
        pytest.skip("openvino is not installed")
    model = resolve_model(FAST)
    with OpenVinoExecutor(model, OPTIONS, performance_hint="THROUGHPUT") as parallel:
        out = parallel.run(tiles)  # one request per tile on parallel streams
    with OpenVinoExecutor(model, OPTIONS) as single:
        expected = single.run(tiles)
    assert out.shape == expected.shape
    assert psnr(out, expected) >= FP32_DB  # measured identical


# --- the auto order on simulated platforms: what the machine reports is set, nothing else ----

def _simulate(monkeypatch: pytest.MonkeyPatch, system: str, cuda_onnxruntime: bool,
              nvidia: bool) -> None:
    from upscaler.executors import registry

    monkeypatch.setattr(sys, "platform", system)
    monkeypatch.setattr(registry, "_onnxruntime_has_cuda", lambda: cuda_onnxruntime)
    monkeypatch.setattr(registry, "_nvidia_gpu_present", lambda: nvidia)


@pytest.mark.parametrize(("system", "cuda", "nvidia", "order"), [
    ("darwin", False, False, ["coreml", "ncnn", "openvino", "onnxruntime", "torch"]),
    ("linux", True, True, ["onnxruntime", "torch", "ncnn", "openvino"]),
    ("win32", False, True, ["torch", "ncnn", "openvino", "onnxruntime"]),
    ("linux", False, False, ["ncnn", "openvino", "onnxruntime", "torch"]),
])
def test_auto_order_by_platform(monkeypatch: pytest.MonkeyPatch, system: str, cuda: bool,
                                nvidia: bool, order: list[str]) -> None:
    from upscaler.executors.registry import auto_candidates

    _simulate(monkeypatch, system, cuda, nvidia)
    candidates = auto_candidates(resolve_model(FAST), OPTIONS)
    assert [name for name, _ in candidates] == order
    if nvidia and not cuda:  # PyTorch is sent to the GPU it was picked for
        assert dict(candidates)["torch"].device == "cuda"
    # A user's ONNX file goes only to the executors that load ONNX, in the same order.
    user = resolve_model(onnx_file(resolve_model(FAST)))
    assert [name for name, _ in auto_candidates(user, OPTIONS)] == [
        n for n in order if n in ("openvino", "onnxruntime")]


def test_auto_on_an_old_mac_moves_on(monkeypatch: pytest.MonkeyPatch) -> None:
    """Simulated macOS 12, older than our Core ML packages need: auto takes the next in line."""
    _simulate(monkeypatch, "darwin", False, False)
    monkeypatch.setattr(platform, "mac_ver", lambda: ("12.6", ("", "", ""), "arm64"))
    assert "macOS 13" in str(unavailable_reason("coreml"))
    with create_executor("auto", resolve_model(FAST), OPTIONS) as executor:
        assert executor.name == next(n for n in ("ncnn", "openvino", "onnxruntime", "torch")
                                     if unavailable_reason(n) is None)


def test_auto_tries_openvino_first_on_a_cpu_for_real_cugan_and_waifu2x() -> None:
    """Measured faster there (executors/registry.py); Real-ESRGAN keeps ncnn first."""
    from upscaler.executors.registry import auto_candidates
    from upscaler.models.registry import resolve_model

    cpu = {"ncnn", "openvino", "onnxruntime", "torch"}

    def first_on_cpu(name: str) -> str:
        names = [n for n, _ in auto_candidates(resolve_model(name), ExecutorOptions())]
        return next(n for n in names if n in cpu)

    assert first_on_cpu("realcugan-x2-conservative") == "openvino"
    assert first_on_cpu("waifu2x-cunet-x2") == "openvino"
    assert first_on_cpu("realesr-animevideov3") == "ncnn"
