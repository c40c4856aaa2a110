"""Executors by name, imported only when chosen, and the rule that picks one for "auto"."""

from __future__ import annotations

import importlib
import logging
import os
import sys
from dataclasses import replace
from pathlib import Path
from types import ModuleType

from upscaler.errors import ExecutorError, UsageError
from upscaler.executors.base import Executor, ExecutorOptions
from upscaler.models.registry import ModelKind, ModelRef

log = logging.getLogger(__name__)

EXECUTORS: dict[str, str] = {
    "coreml": "upscaler.executors.coreml:CoreMLExecutor",
    "openvino": "upscaler.executors.openvino:OpenVinoExecutor",
    "onnxruntime": "upscaler.executors.onnxruntime:OnnxRuntimeExecutor",
    "ncnn": "upscaler.executors.ncnn:NcnnExecutor",
    "torch": "upscaler.executors.torch:TorchExecutor",
}
AUTO = "auto"
ALIASES = {"onnx": "onnxruntime", "ort": "onnxruntime", "ov": "openvino", "pytorch": "torch"}


def canonical_name(name: str) -> str:
    """The executor's registry name for `name` or one of its short aliases."""
    return ALIASES.get(name.lower(), name.lower())

# Fastest first on a CPU, from bench/bench_executors.py with 2 threads on an idle 2-core AVX2
# EPYC, input Mpx/s at default precisions. animevideov3 at 256 px: ncnn 0.222, openvino 0.145,
# onnxruntime 0.109. x4plus-anime at 128 px: ncnn 0.0189, openvino 0.0149, onnxruntime 0.0143.
# ncnn's Winograd 3x3 convolutions win on these all-3x3 networks; OpenVINO's fp16/bf16 hints
# fall back to fp32 on CPUs without AVX-512/AMX. ncnn loads only ncnn files, so a user's .onnx
# goes to OpenVINO. (Runs with other jobs on the CPU ranked OpenVINO first: measure idle.)
CPU_ORDER = ("ncnn", "openvino", "onnxruntime", "torch")
# The model kinds each executor can load; "auto" skips the others instead of failing on them.
KINDS: dict[str, frozenset[ModelKind]] = {
    "coreml": frozenset({"ncnn", "mlpackage"}),
    "openvino": frozenset({"ncnn", "onnx"}),
    "onnxruntime": frozenset({"ncnn", "onnx"}),
    "ncnn": frozenset({"ncnn"}),
    "torch": frozenset({"ncnn", "pth"}),
}


def _module(name: str) -> ModuleType:
    return importlib.import_module(EXECUTORS[name].partition(":")[0])


def unavailable_reason(name: str) -> str | None:
    """None when executor `name` can run on this machine, else why not (one line)."""
    name = canonical_name(name)
    if name not in EXECUTORS:
        raise UsageError(f"unknown executor {name!r}; use {AUTO}, {', '.join(EXECUTORS)}")
    try:
        module = _module(name)
    except ImportError as e:  # the runtime module itself, or a dependency it imports at the top
        return f"{name} support cannot be imported: {e}"
    reason: str | None = module.unavailable_reason()
    return reason


def available_executors() -> list[str]:
    """Names of the executors that can run here, in EXECUTORS order."""
    return [name for name in EXECUTORS if unavailable_reason(name) is None]


def _nvidia_gpu_present() -> bool:
    # Asked without importing a runtime: the driver's proc file (Linux) or its tool (Windows).
    return Path("/proc/driver/nvidia/version").exists() or any(
        (Path(d) / "nvidia-smi.exe").exists() for d in os.environ.get("PATH", "").split(os.pathsep)
    )


def _onnxruntime_has_cuda() -> bool:
    if unavailable_reason("onnxruntime") is not None:
        return False
    has_cuda: bool = _module("onnxruntime").has_cuda()
    return has_cuda


def auto_candidates(model: ModelRef, options: ExecutorOptions) -> list[tuple[str, ExecutorOptions]]:
    """What "auto" tries, in order: Core ML on macOS, then a CUDA path, then the CPU executors.

    Only executors that can load this model kind are listed. options.device, when given, is kept
    for every candidate; otherwise the CUDA candidates get the device they need.
    """
    order: list[tuple[str, ExecutorOptions]] = []
    if sys.platform == "darwin":
        order.append(("coreml", options))
    if _onnxruntime_has_cuda():
        order.append(("onnxruntime", options))  # it picks TensorRT or CUDA itself
    if _nvidia_gpu_present():
        order.append(("torch", options if options.device else replace(options, device="cuda")))
    order += [(name, options) for name in CPU_ORDER]
    seen: set[str] = set()
    candidates = []
    for name, opts in order:
        if model.kind in KINDS[name] and name not in seen:
            seen.add(name)
            candidates.append((name, opts))
    return candidates


def _construct(name: str, model: ModelRef, options: ExecutorOptions) -> Executor:
    module_name, _, class_name = EXECUTORS[name].partition(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    executor: Executor = cls(model, options)
    return executor


def create_executor(name: str, model: ModelRef, options: ExecutorOptions) -> Executor:
    """The executor `name` (or the best that runs here for "auto") loaded with `model`.

    A named executor that cannot run here raises ExecutorError saying why; "auto" moves on to
    the next candidate, logging why each one before it was passed over, and raises
    ExecutorError listing all the reasons when none runs. An unknown name is a UsageError.
    ModelError (a broken model file) always propagates: no other executor would fare better.
    """
    name = canonical_name(name)
    if name == AUTO:
        return _create_auto(model, options)
    reason = unavailable_reason(name)
    if reason is not None:
        raise ExecutorError(f"executor {name} cannot run here: {reason}")
    return _construct(name, model, options)


def _create_auto(model: ModelRef, options: ExecutorOptions) -> Executor:
    reasons = []
    for name, opts in auto_candidates(model, options):
        reason = unavailable_reason(name)
        if reason is None:
            try:
                return _construct(name, model, opts)
            except ExecutorError as e:
                reason = str(e)
        log.info("auto: skipping %s: %s", name, reason)
        reasons.append(f"{name}: {reason}")
    if not reasons:
        raise ExecutorError(f"no executor can load a {model.kind} model", model.path)
    raise ExecutorError(f"no executor can run here ({'; '.join(reasons)})", model.path)


def resolve_auto(model: ModelRef, options: ExecutorOptions | None = None) -> str:
    """The name "auto" would most likely pick, without loading the model (for defaults)."""
    for name, _ in auto_candidates(model, options or ExecutorOptions()):
        if unavailable_reason(name) is None:
            return name
    raise ExecutorError(f"no executor can run a {model.kind} model here", model.path)


# Tile sizes tried by default_tile, largest first; multiples of 64 suit every runtime's blocking.
TILE_STEPS = (1024, 768, 512, 384, 256, 192, 128)
COREML_TILE = 256
GPU_TILE_UNKNOWN_MEMORY = 512
CPU_MEMORY_SHARE = 4  # a CPU executor may use 1/4 of the available memory for activations ...
CPU_MEMORY_CAP = 2 << 30  # ... but no more than 2 GiB, leaving room for decoding and encoding
GPU_MEMORY_SHARE = 2  # a GPU executor may use half of the free GPU memory
UNKNOWN_MODEL_BYTES_PER_PIXEL = 16 << 10  # a user .onnx/.pth: as heavy as x4plus-anime


def default_tile(executor_name: str, model: ModelRef | None = None, *,
                 device: str | None = None, free_memory: int | None = None,
                 frame_size: tuple[int, int] | None = None) -> int:
    """The default input tile size (pixels a side) for an executor; 0 means whole frames.

    - coreml: 256. The Core ML model is compiled for one fixed shape; 256 is a shape the
      Neural Engine takes for these models and keeps compile time and memory small.
    - GPU executors (onnxruntime with CUDA/TensorRT, torch, ncnn on "vulkan"): the largest of
      TILE_STEPS whose estimated activation memory fits in half of `free_memory` (the GPU's
      free bytes), or 512 when that is not given.
    - CPU executors (openvino, onnxruntime, ncnn): the largest of TILE_STEPS whose estimated
      activations fit in a quarter of the available RAM, capped at 2 GiB: 256 for
      x4plus-anime, 1024 for animevideov3. Per pixel, CPU speed hardly depends on tile size,
      but bigger tiles waste less work on the overlap between tiles.
    With `frame_size` (height, width), 0 is returned when the whole frame fits the same budget,
    except for Core ML, which needs its fixed tile.
    The activation estimate comes from the model's graph (the largest set of blobs one layer
    reads and writes, in fp32, doubled for runtime workspace); user files without a graph are
    assumed as heavy as x4plus-anime.
    """
    name = canonical_name(executor_name)
    if name == AUTO:
        name = resolve_auto(model) if model is not None else CPU_ORDER[0]
    elif name not in EXECUTORS:
        raise UsageError(f"unknown executor {name!r}; use {AUTO}, {', '.join(EXECUTORS)}")
    if name == "coreml":
        return COREML_TILE

    on_gpu = _runs_on_gpu(name, device)
    if on_gpu:
        if free_memory is None:
            return GPU_TILE_UNKNOWN_MEMORY
        budget = free_memory // GPU_MEMORY_SHARE
    else:
        available = free_memory if free_memory is not None else _available_ram()
        budget = min(available // CPU_MEMORY_SHARE, CPU_MEMORY_CAP)

    per_pixel = activation_bytes_per_pixel(model) if model is not None else (
        UNKNOWN_MODEL_BYTES_PER_PIXEL)
    if frame_size is not None and frame_size[0] * frame_size[1] * per_pixel <= budget:
        return 0
    for tile in TILE_STEPS:
        if tile * tile * per_pixel <= budget:
            return tile
    return TILE_STEPS[-1]


def _runs_on_gpu(name: str, device: str | None) -> bool:
    if device is not None:
        return device.lower() not in ("cpu", "cpuexecutionprovider")
    if name == "onnxruntime":
        return _onnxruntime_has_cuda()
    return name == "torch" and _nvidia_gpu_present()


def _available_ram() -> int:
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # not on this platform (Windows, macOS)
        return 8 << 30


def activation_bytes_per_pixel(model: ModelRef) -> int:
    """Estimated peak activation bytes per input pixel while running `model` in fp32: the
    largest set of blobs one layer reads and writes, doubled for runtime workspace."""
    if model.kind != "ncnn":
        return UNKNOWN_MODEL_BYTES_PER_PIXEL
    return int(model.graph().peak_floats_per_pixel() * 4 * 2)
