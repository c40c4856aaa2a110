"""PyTorch executor: named models built from their graph, or a user's .pth/.pt/.safetensors
through spandrel, on CUDA, Apple's MPS or the CPU."""

from __future__ import annotations

from typing import Any

import numpy as np

from upscaler.errors import ExecutorError, ModelError, OutOfMemoryError, one_line
from upscaler.executors.base import ClosingExecutor, ExecutorOptions, PrecisionName
from upscaler.models.registry import ModelRef
from upscaler.pixels import peak_of

INSTALL_HINT = "install the torch extra: pip install 'upscaler[torch]'"
_HALF_DEVICES = ("cuda", "mps")


def unavailable_reason() -> str | None:
    """None when PyTorch can run here, else why not."""
    try:
        import torch  # noqa: F401
    except ImportError as e:
        return f"PyTorch is not installed ({e}); {INSTALL_HINT}"
    return None


def model_unavailable_reason(model: ModelRef) -> str | None:
    """Why a user's weights file cannot be loaded here: spandrel, which reads it, is missing."""
    if model.kind != "pth":
        return None
    try:
        import spandrel  # noqa: F401
    except Exception as e:  # a broken torchvision raises RuntimeError, not ImportError
        return f"spandrel, which reads .pth files, cannot be imported ({one_line(e)}); " \
            f"{INSTALL_HINT}"
    return None


def _pick_device(device: str | None) -> Any:
    import torch

    if device is None:
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        chosen = torch.device(device.lower())  # CPU as OpenVINO spells it
    except RuntimeError as e:
        raise ExecutorError(f"torch: unknown device {device!r}; use cuda[:N], mps or cpu") from e
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise ExecutorError("torch: CUDA is not available in this PyTorch build or machine")
    if chosen.type == "mps" and not torch.backends.mps.is_available():
        raise ExecutorError("torch: MPS is not available on this machine")
    if chosen.type in ("cpu", "cuda", "mps"):
        return chosen
    try:
        # A type PyTorch names but this build or machine lacks (vulkan, xpu) fails only when
        # used, each its own way (RuntimeError, AssertionError, NotImplementedError).
        torch.empty(1, device=chosen)
    except Exception as e:
        reason = one_line(e).split(". ")[0][:160]  # Vulkan's lists every backend there is
        raise ExecutorError(f"torch: device {device!r} is not available here ({reason}); "
                            "use cuda[:N], mps or cpu") from e
    return chosen


def _load_spandrel(path: Any) -> Any:
    """The spandrel ImageModelDescriptor of a user's weights file."""
    try:
        from spandrel import ImageModelDescriptor, ModelLoader
    except Exception as e:  # a broken torchvision raises RuntimeError, not ImportError
        raise ExecutorError(f"torch: spandrel cannot be imported ({one_line(e)}); "
                            f"{INSTALL_HINT}") from e
    try:
        descriptor = ModelLoader().load_from_file(path)
    except Exception as e:  # spandrel raises ValueError, UnsupportedModelError, pickle errors
        raise ModelError(f"not a model spandrel can load: {one_line(e)}", path) from e
    if not isinstance(descriptor, ImageModelDescriptor):
        raise ModelError(f"{descriptor.architecture.name} is not an image-to-image model", path)
    if descriptor.input_channels != 3 or descriptor.output_channels != 3:
        raise ModelError(f"model maps {descriptor.input_channels} to "
                         f"{descriptor.output_channels} channels, expected RGB to RGB", path)
    return descriptor


class TorchExecutor(ClosingExecutor):
    """Runs a model with PyTorch.

    options.device: "cuda[:N]", "mps" or "cpu"; None picks CUDA, then MPS, then the CPU.
    Precision: fp16 by default on CUDA and MPS, fp32 on the CPU (PyTorch's CPU fp16 kernels are
    slow); bf16 where asked for. options.threads sets PyTorch's CPU threads for the whole
    process. User models (.pth, .pt, .safetensors) load through spandrel, which knows the common
    super-resolution architectures and their scale; spandrel clamps their output to [0, 1].
    """

    name = "torch"
    fixed_tile: tuple[int, int] | None = None

    def __init__(self, model: ModelRef, options: ExecutorOptions) -> None:
        reason = unavailable_reason()
        if reason is not None:
            raise ExecutorError(f"torch: {reason}")
        import torch

        self.device = _pick_device(options.device)
        default: PrecisionName = "fp16" if self.device.type in _HALF_DEVICES else "fp32"
        self.precision: PrecisionName = options.precision or default
        self._dtype = {"fp32": torch.float32, "fp16": torch.float16,
                       "bf16": torch.bfloat16}[self.precision]
        if options.threads:
            torch.set_num_threads(options.threads)
        self.path = model.path

        if model.kind == "pth":
            descriptor = _load_spandrel(model.path)
            if self.precision == "fp16" and not descriptor.supports_half:
                raise ExecutorError(f"torch: {descriptor.architecture.name} does not support "
                                    f"fp16; use --precision fp32", model.path)
            if self.precision == "bf16" and not descriptor.supports_bfloat16:
                raise ExecutorError(f"torch: {descriptor.architecture.name} does not support "
                                    f"bf16; use --precision fp32", model.path)
            self._call: Any = descriptor.to(self.device, self._dtype).eval()
            self.scale: int = int(descriptor.scale)
        elif model.kind == "ncnn":
            from upscaler.models.torch_builder import build_torch_module

            graph = model.graph()
            scale = graph.scale()
            if scale.denominator != 1:
                raise ModelError(f"non-integer scale {scale} is not supported", model.path)
            self._call = build_torch_module(graph).to(self.device, self._dtype)
            self.scale = int(scale)
            self._model = model
            self._parts: dict[tuple[str, tuple[str, ...]], Any] = {}
        else:
            raise ExecutorError(f"torch: cannot run {model.kind} models, only the named "
                                f"models and .pth, .pt or .safetensors files", model.path)

    def run(self, batch: np.ndarray) -> np.ndarray:
        """float32 (N, 3, h, w) RGB in [0, 1] -> float32 (N, 3, h*s, w*s); see Executor."""
        import torch

        try:
            with torch.inference_mode():
                x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))
                y = self._call(x.to(self.device, self._dtype))
                return y.float().cpu().numpy()
        except (torch.OutOfMemoryError, RuntimeError) as e:
            raise self._runtime_error(e, batch.shape) from e

    def run_pixels(self, tiles: np.ndarray) -> np.ndarray:
        """(N, h, w, 3) uint8/uint16 pixels -> (N, h*s, w*s, 3) of the same dtype; see Executor.

        The conversions run where the model does: on a GPU the pixels cross the bus as 8 or 16
        bits, not as float32 (4x or 2x less), and the CPU is left to the decoder and encoder.
        """
        import torch

        peak = peak_of(tiles.dtype)
        try:
            with torch.inference_mode():
                # uint16 has no arithmetic in torch: it travels as int32 (exact for 16 bits).
                pixels = torch.from_numpy(np.ascontiguousarray(
                    tiles if tiles.dtype == np.uint8 else tiles.astype(np.int32)))
                # NCHW-contiguous: a channels-last view would pick other kernels than `run`.
                x = pixels.to(self.device).permute(0, 3, 1, 2).to(torch.float32).contiguous()
                x = x.mul_(np.float32(1.0 / peak)).to(self._dtype)
                y = self._call(x).to(torch.float32).mul_(peak).clamp_(0, peak).round_()
                y = y.permute(0, 2, 3, 1).to(torch.uint8 if peak == 255 else torch.int32)
                out = y.contiguous().cpu().numpy()
        except (torch.OutOfMemoryError, RuntimeError) as e:
            raise self._runtime_error(e, tiles.shape) from e
        return out if out.dtype == tiles.dtype else out.astype(tiles.dtype)

    def _runtime_error(self, e: BaseException, shape: tuple[int, ...]) -> ExecutorError:
        """A runtime failure of torch as one of our errors; out-of-memory as the one the
        caller retries with smaller tiles."""
        import torch

        if isinstance(e, torch.OutOfMemoryError) or "out of memory" in str(e).lower():
            if self.device.type == "cuda":
                torch.cuda.empty_cache()  # so that the caller's smaller retry can fit
            return OutOfMemoryError(f"torch ({self.device}): out of memory for input "
                                    f"{tuple(shape)}: {one_line(e)}")
        return ExecutorError(f"torch ({self.device}) failed on input {tuple(shape)}: "
                             f"{one_line(e)}", self.path)

    def extract(self, planes: np.ndarray, feeds: dict[str, np.ndarray], target: str,
                ) -> np.ndarray:
        """Blob `target` for float32 input planes (3, h, w), with the vector blobs in `feeds`
        given rather than computed (whole-frame pooled means, models/exact.py)."""
        import torch

        from upscaler.models.torch_builder import build_torch_module

        key = (target, tuple(sorted(feeds)))
        try:
            if key not in self._parts:
                part = self._model.graph().part(target, key[1])
                self._parts[key] = build_torch_module(part).to(self.device, self._dtype)
            given = {name: torch.from_numpy(np.asarray(v, np.float32).reshape(1, -1, 1, 1))
                     .to(self.device, self._dtype) for name, v in feeds.items()}
            with torch.inference_mode():
                x = torch.from_numpy(np.ascontiguousarray(planes[None], dtype=np.float32))
                y = self._parts[key](x.to(self.device, self._dtype), given)
                return y[0].float().cpu().numpy()
        except (torch.OutOfMemoryError, RuntimeError) as e:
            raise self._runtime_error(e, planes.shape) from e

    def close(self) -> None:
        self._parts = {}
        self._call = None
