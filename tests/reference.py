"""The independent reference every accuracy test compares with: Tencent's ncnn, in fp32 on the CPU,
running the shipped .param/.bin files as Real-ESRGAN-ncnn-vulkan does.

It shares no code with our executors, model readers or builders, so a test that compares one of
ours with it cannot pass by comparing our code with itself. Arrays are float32, channels first.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
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


def _param_blobs(param: str) -> tuple[str, str]:
    """(Input layer's blob, last layer's output blob) of an ncnn .param file."""
    text = Path(param).read_text(encoding="ascii")
    lines = [line.split() for line in text.splitlines()[2:]]
    layers = [f for f in lines if len(f) >= 4]
    first = next(f for f in layers if f[0] == "Input")
    last = layers[-1]
    return first[4], last[4 + int(last[2])]


def original_processing(name: str) -> tuple[int, str, int, bool, bool]:
    """(pad, numpy pad mode, multiple, pro mapping, adds nearest 4x) of the original programs,
    written out here from their sources, not taken from ours: bilibili's upcunet_v3.py
    (Real-CUGAN: reflect 18/14/19 px at 2x/3x/4x, sides to multiples of 2, 4 at 3x, the nearest
    4x input added at 4x, pro models in x*0.7+0.15) and waifu2x-ncnn-vulkan (edge pixels; cunet
    18 px at 2x, 28 at 1x to multiples of 4; upconv_7 7 px)."""
    if name.startswith("realcugan"):
        scale = int(name.split("-x")[1][0])
        return ({2: 18, 3: 14, 4: 19}[scale], "reflect", 4 if scale == 3 else 2,
                "-pro-" in name, scale == 4)
    if name.startswith("waifu2x-cunet-x1"):
        return 28, "edge", 4, False, False
    return (18 if "cunet" in name else 7), "edge", 2, False, False


def ncnn_original(name: str, pixels: np.ndarray) -> np.ndarray:
    """An 8-bit (H, W, 3) picture through a Real-CUGAN or waifu2x model as the original program
    processes it, whole-frame on Tencent ncnn in fp32: 8-bit (H*s, W*s, 3)."""
    x = pixels.transpose(2, 0, 1).astype(np.float32) / 255
    out = ncnn_original_float(name, x)
    return np.clip(np.rint(out.transpose(1, 2, 0) * 255), 0, 255).astype(np.uint8)


def ncnn_original_float(name: str, x: np.ndarray) -> np.ndarray:
    """`ncnn_original` of float32 (3, H, W) in [0, 1]: float32 (3, H*s, W*s), unclamped."""
    ref = resolve_model(name)
    pad, mode, multiple, pro, nearest = original_processing(name)
    h, w = x.shape[1:]
    if pro:
        x = x * np.float32(0.7) + np.float32(0.15)
    ph, pw = -(-h // multiple) * multiple, -(-w // multiple) * multiple
    padded = np.pad(x, ((0, 0), (pad, pad + ph - h), (pad, pad + pw - w)), mode=mode)
    net = _fp32_net()
    assert net.load_param(str(ref.path)) == 0
    assert net.load_model(str(ref.bin_path)) == 0
    out = _extract(net, padded, *_param_blobs(str(ref.path)))
    s = out.shape[1] // ph
    out = out[:, :h * s, :w * s]
    if nearest:
        out = out + x.repeat(s, axis=1).repeat(s, axis=2)
    if pro:
        out = (out - np.float32(0.15)) / np.float32(0.7)
    return out


def dihedral(picture: np.ndarray) -> list[tuple[np.ndarray, Callable[[np.ndarray], np.ndarray]]]:
    """The eight rotations and mirror images of an (H, W, C) picture, each with the function
    that turns its upscaled result back: the variants of --tta, written with rot90 and fliplr
    rather than as executors/tta.py writes them."""
    variants = []
    for mirrored in (False, True):
        base = np.fliplr(picture) if mirrored else picture
        for turns in range(4):
            def back(up: np.ndarray, turns: int = turns, mirrored: bool = mirrored) -> np.ndarray:
                up = np.rot90(up, -turns)
                return np.fliplr(up) if mirrored else up
            variants.append((np.ascontiguousarray(np.rot90(base, turns)), back))
    return variants


def record_against_ncnn(what: str, db: float) -> None:
    """Where UPSCALER_PSNR_LOG names a file, add a line with what an executor scored against
    Tencent's ncnn: the macOS CI job shows what Core ML measured."""
    import os

    log = os.environ.get("UPSCALER_PSNR_LOG")
    if log:
        with open(log, "a", encoding="utf-8") as out:
            out.write(f"{what}: {db:.1f} dB against ncnn\n")
