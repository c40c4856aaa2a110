"""Executors by name, imported only when chosen, and the rule that picks one for "auto"."""

from __future__ import annotations

import functools
import importlib
import logging
import os
import sys
from dataclasses import replace
from pathlib import Path
from types import ModuleType

from upscaler.errors import ExecutorError, UsageError
from upscaler.executors.base import Executor, ExecutorOptions
from upscaler.executors.ncnn import TAIL_TILE  # no runtime import: ncnn loads lazily
from upscaler.models.registry import ModelKind, ModelRef
from upscaler.models.tail import tail_of

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
# Real-CUGAN's and waifu2x's networks (models with a family's processing): the other way round.
# Whole 320x180 frames, 2 threads, input Mpx/s (ncnn, onnxruntime, openvino): realcugan-x2
# 0.112, 0.141, 0.175; realcugan-x4 0.074, 0.090, 0.120; realcugan-pro-x3 0.020, 0.072, 0.086;
# waifu2x-cunet-x2 0.112, 0.136, 0.173; waifu2x upconv_7 (anime-x2) 0.305, 0.296, 0.285.
PROCESSED_CPU_ORDER = ("openvino", "onnxruntime", "ncnn", "torch")
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


# Devices, which other programs take where we take an executor (video2x's `-p cuda`...), and
# an executor that runs on each.
_DEVICES = {"cuda": "onnxruntime", "gpu": "onnxruntime", "nvidia": "onnxruntime",
            "tensorrt": "onnxruntime", "trt": "onnxruntime", "vulkan": "ncnn", "mps": "torch",
            "cpu": "ncnn"}


def unknown_executor(name: str) -> str:
    """Why `name` is no executor; for a device's name, how to ask for that device."""
    known = f"unknown executor {name!r}; use {AUTO}, {', '.join(EXECUTORS)}"
    device = name.split(":")[0]
    if device not in _DEVICES:
        return known
    given = {"gpu": "cuda", "nvidia": "cuda", "trt": "tensorrt"}.get(device, name)
    return f"{known} (a device goes to --device: --executor {_DEVICES[device]} --device {given})"


def unavailable_reason(name: str) -> str | None:
    """None when executor `name` can run on this machine, else why not (one line)."""
    name = canonical_name(name)
    if name not in EXECUTORS:
        raise UsageError(unknown_executor(name))
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
    cpu = CPU_ORDER if model.processing is None else PROCESSED_CPU_ORDER
    order += [(name, options) for name in cpu]
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
    if model.processing is not None:
        # Real-CUGAN and waifu2x: the network runs inside its family's processing.
        from upscaler.executors.processed import ProcessedExecutor

        try:
            return ProcessedExecutor(executor, model)
        except BaseException:
            executor.close()
            raise
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
        reasons.append(_named(name, reason))
    if not reasons:
        raise ExecutorError(f"no executor can load a {model.kind} model", model.path)
    raise ExecutorError(f"no executor can run here ({'; '.join(reasons)})", model.path)


def model_unavailable_reason(name: str, model: ModelRef) -> str | None:
    """None when executor `name` can run here and load `model`'s kind, else why not; without
    loading the model (a .pth needs spandrel, which a named model on torch does not)."""
    reason = unavailable_reason(name)
    if reason is None:
        check = getattr(_module(canonical_name(name)), "model_unavailable_reason", None)
        reason = check(model) if check is not None else None
    return reason


def resolve_auto(model: ModelRef, options: ExecutorOptions | None = None) -> str:
    """The name "auto" would most likely pick, without loading the model (for defaults)."""
    reasons = []
    for name, _ in auto_candidates(model, options or ExecutorOptions()):
        reason = model_unavailable_reason(name, model)
        if reason is None:
            return name
        reasons.append(_named(name, reason))
    raise ExecutorError(f"no executor can run a {model.kind} model here"
                        + (f" ({'; '.join(reasons)})" if reasons else ""), model.path)


def _named(name: str, reason: str) -> str:
    return reason if reason.startswith(f"{name}:") else f"{name}: {reason}"


GPU_TILE_UNKNOWN_MEMORY = 512  # a GPU whose free memory is unknown gets 512x512-pixel calls
CPU_MEMORY_SHARE = 4  # a CPU executor may use 1/4 of the machine's RAM for activations ...
CPU_AVAILABLE_SHARE = 2  # ... but no more than half of what is available when the job starts
# ... and no more than 2 GiB, however large the machine: past about a hundred thousand pixels a
# bigger call only saves overlap work (x4plus-anime on ncnn: 12.8% of a 3000x2000 image's work
# in 54 tiles against 6% in 14 with a quarter of 24 GiB), while its memory grows with it; with
# the cap that image peaks under 3 GB (docs/memory.md), where 2.5 GiB gave 3.2 GB.
CPU_MEMORY_CAP = 2 << 30
GPU_MEMORY_SHARE = 2  # a GPU executor may use half of the free GPU memory
BYTES_PER_FLOAT = 4 * 2  # fp32, doubled for the runtime's workspace
UNKNOWN_MODEL_BYTES_PER_PIXEL = 16 << 10  # a user .onnx/.pth: as heavy as x4plus-anime
# Peak memory of a CPU executor over the graph's estimate (activation_bytes_per_pixel), from
# peak RSS per input pixel of one whole tile (bench/executor_memory.py, x4plus-anime at 128 px,
# animevideov3 at 256-384 px): ncnn 54.2 KB and 2.8-3.2 KB (3.3x and 2.4-2.8x: its Winograd
# transforms, and pools that keep freed blobs of every resolution); openvino 13.3 KB and
# 1.36-1.41 KB (0.8x, 1.2x); onnxruntime 16.2 KB and 0.8-1.0 KB (1.0x, 0.9x).
CPU_WORKSPACE = {"ncnn": 3.5, "openvino": 1.25}


def tile_budget(executor_name: str, model: ModelRef | None = None, *,
                device: str | None = None, free_memory: int | None = None,
                total_memory: int | None = None, batch: int = 1,
                precision: str | None = None, tta: bool = False) -> int:
    """The most input pixels one executor call may hold: the memory budget the tile plan obeys.

    A frame with at most this many pixels runs whole; a larger one is cut into the tiles of
    least work that hold at most this many pixels (upscaler.tiling.choose_tile).
    - CPU executors (openvino, onnxruntime, ncnn): their measured peak memory fits in a quarter
      of the machine's RAM, in half of what is available (`total_memory` and `free_memory`
      override the measured figures) and in CPU_MEMORY_CAP (2 GiB). From 8 GB up the cap
      decides: 128,000 pixels for x4plus-anime on ncnn, which runs its upsampling tail apart
      in a reserved 0.8 GB (1280x720 in 9 tiles, 1920x1080 in 20), 131,000 on onnxruntime;
      533,000 pixels for animevideov3 on ncnn (1280x720 in 2 tiles).
      Per pixel, CPU speed hardly depends on tile size, but bigger tiles waste less work on
      the overlaps between them.
    - GPU executors (onnxruntime with CUDA/TensorRT, torch, ncnn on "vulkan"): the estimate
      fits in half of `free_memory` (the GPU's free bytes), or 512x512 pixels when that is
      not given.
    - coreml: as on a CPU (Apple's memory is shared), with the fp16 activations that the
      package computes in (half the fp32 estimate) unless `precision` is "fp32".
    `batch` tiles per call share the budget, except on Core ML, which runs a batch one tile
    after another. The activation estimate comes from the model's graph (the largest set of
    blobs one layer reads and writes, in fp32, doubled for runtime workspace), times the
    executor's measured CPU_WORKSPACE; user files without a graph are assumed as heavy as
    x4plus-anime. `tta` (executors/tta.py) adds the float sum of the eight outputs to each
    pixel's share where it is in the memory the model uses (not a GPU's own).
    """
    name = canonical_name(executor_name)
    if name == AUTO:
        name = resolve_auto(model) if model is not None else CPU_ORDER[0]
    elif name not in EXECUTORS:
        raise UsageError(unknown_executor(name))
    per_pixel = float(activation_bytes_per_pixel(model) if model is not None else
                      UNKNOWN_MODEL_BYTES_PER_PIXEL)
    # ncnn runs an upsampling tail apart, in tiles of its own (executors/ncnn.py): only the
    # body's activations grow with the tile, and the tail's tile is set aside from the budget.
    tail = tail_of(model) if name == "ncnn" and model is not None else None
    reserve = 0.0
    if tail is not None:
        per_pixel = tail.body_floats * BYTES_PER_FLOAT
        reserve = tail.tail_floats * BYTES_PER_FLOAT * (TAIL_TILE + 2 * tail.reach) ** 2
    if name != "coreml" and _runs_on_gpu(name, device):
        if free_memory is None:
            return GPU_TILE_UNKNOWN_MEMORY**2 // max(1, batch)
        budget = free_memory // GPU_MEMORY_SHARE
    else:
        total = total_memory if total_memory is not None else _total_ram()
        available = free_memory if free_memory is not None else min(
            _available_ram(total), _address_space_left())
        budget = min(total // CPU_MEMORY_SHARE, available // CPU_AVAILABLE_SHARE, CPU_MEMORY_CAP)
        per_pixel *= CPU_WORKSPACE.get(name, 1.0)
        reserve *= CPU_WORKSPACE.get(name, 1.0)
    if name == "coreml":
        per_pixel = per_pixel if precision == "fp32" else per_pixel / 2
        batch = 1
    if tta and (name == "coreml" or not _runs_on_gpu(name, device)):
        scale = model.scale if model is not None and model.scale else 4
        per_pixel += 3 * scale * scale * BYTES_PER_FLOAT
    # On a small machine the tail's reserve could take it all: the body keeps a quarter.
    return max(1, int(max(budget - reserve, budget / 4) // (per_pixel * max(1, batch))))


def _runs_on_gpu(name: str, device: str | None) -> bool:
    if device is not None:
        return device.lower() not in ("cpu", "cpuexecutionprovider")
    if name == "onnxruntime":
        return _onnxruntime_has_cuda()
    return name == "torch" and _nvidia_gpu_present()


def _total_ram() -> int:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # not on this platform (Windows)
        return 8 << 30


def _address_space_left() -> int:
    """What this process may still map under its address-space limit (`ulimit -v`, a
    container's RLIMIT_AS), where one is set: allocations past it fail however much RAM is
    free, so the budget must fit in it as well."""
    try:
        import resource

        limit = resource.getrlimit(resource.RLIMIT_AS)[0]
    except (ImportError, OSError, ValueError, AttributeError):  # Windows has no resource
        return 1 << 62
    if limit == resource.RLIM_INFINITY or limit <= 0:
        return 1 << 62
    mapped = 0
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmSize:"):
                    mapped = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return max(0, limit - mapped)


def _available_ram(total: int) -> int:
    """Memory that can be had without swapping: Linux's MemAvailable (free pages plus the
    page cache it can drop), else the free pages, else `total` where neither can be read
    (macOS, Windows: the quarter of `total` is then the limit)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return total


# Operators whose activations can grow far past a model's input and output: a user's .onnx
# without any of them (a resampler, a colour transform) holds little more than those two.
_HEAVY_ONNX_OPS = frozenset({"Conv", "ConvTranspose", "ConvInteger", "QLinearConv", "MatMul",
                             "MatMulInteger", "QLinearMatMul", "Gemm", "Einsum", "Loop", "Scan",
                             "If", "LSTM", "GRU", "RNN", "Attention"})
# A light graph's input (3 floats) and output (3 at 4x: 48 floats) per input pixel.
LIGHT_MODEL_FLOATS_PER_PIXEL = 3 + 3 * 16


def activation_bytes_per_pixel(model: ModelRef) -> int:
    """Estimated peak activation bytes per input pixel while running `model` in fp32: the
    largest set of blobs one layer reads and writes, doubled for runtime workspace. A user's
    file is assumed as heavy as x4plus-anime unless it is an .onnx with no convolution or
    other layer that widens activations (the instant model of bench/bench_fast_path.py)."""
    if model.kind == "ncnn":
        return int(model.graph().peak_floats_per_pixel() * BYTES_PER_FLOAT)
    if model.kind == "onnx" and _light_onnx(str(model.path)):
        return LIGHT_MODEL_FLOATS_PER_PIXEL * BYTES_PER_FLOAT
    return UNKNOWN_MODEL_BYTES_PER_PIXEL


@functools.lru_cache(maxsize=8)
def _light_onnx(path: str) -> bool:
    """Whether no node of the .onnx at `path` is of a _HEAVY_ONNX_OPS type.

    Read from the bytes, not with the onnx package (0.6 s to import): a node's op_type is
    stored as protobuf field 4, a tag byte 0x22, its length and the name. Weights that
    happen to hold those bytes can only make a light graph count as heavy, the safe side.
    """
    try:
        data = Path(path).read_bytes()
    except OSError:  # the executor says what is wrong with the file
        return False
    return not any(b"\x22" + bytes([len(op)]) + op.encode() in data for op in _HEAVY_ONNX_OPS)
