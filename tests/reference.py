"""The independent reference every accuracy test compares with: Tencent's ncnn, in fp32 on the CPU,
running the shipped .param/.bin files as Real-ESRGAN-ncnn-vulkan does.

It shares no code with our executors, model readers or builders, so a test that compares one of
ours with it cannot pass by comparing our code with itself. Arrays are float32, channels first.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from upscaler.models.registry import ModelRef, resolve_model


def _fp32_net() -> Any:
    ncnn = pytest.importorskip("ncnn")
    net = ncnn.Net()
    net.opt.use_vulkan_compute = False
    net.opt.use_fp16_storage = net.opt.use_fp16_packed = net.opt.use_fp16_arithmetic = False
    net.opt.num_threads = 2
    return net


def _extract(net: Any, x: np.ndarray, blob_in: str, blob_out: str) -> np.ndarray:
    ncnn = pytest.importorskip("ncnn")
    data = np.ascontiguousarray(x, dtype=np.float32)  # ncnn.Mat borrows this memory
    try:
        with net.create_extractor() as ex:
            ex.input(blob_in, ncnn.Mat(data))
            status, out = ex.extract(blob_out)
            assert status == 0
            return np.array(out)
    finally:
        net.clear()


def ncnn_run(model: ModelRef | str, x: np.ndarray) -> np.ndarray:
    """The model's raw (unclamped) output for (3, H, W) or (N, 3, H, W) input in [0, 1]."""
    ref = resolve_model(model) if isinstance(model, str) else model
    if x.ndim == 4:
        return np.stack([ncnn_run(ref, item) for item in x])
    net = _fp32_net()
    assert net.load_param(str(ref.path)) == 0
    assert net.load_model(str(ref.bin_path)) == 0
    return _extract(net, x, "data", "output")


def ncnn_run_param(param: str, x: np.ndarray, blob_in: str = "in",
                   blob_out: str = "out") -> np.ndarray:
    """A weightless net written as .param text (one layer, say) run on `x`."""
    net = _fp32_net()
    assert net.load_param_mem(param) == 0
    return _extract(net, x, blob_in, blob_out)


def ncnn_upscale(model: ModelRef | str, pixels: np.ndarray) -> np.ndarray:
    """An 8-bit (H, W, 3) picture upscaled whole, untiled and unpadded, as 8-bit (H, W, 3)."""
    chw = pixels.transpose(2, 0, 1).astype(np.float32) / 255
    out = ncnn_run(model, chw).transpose(1, 2, 0)
    return np.clip(np.rint(out * 255), 0, 255).astype(np.uint8)
