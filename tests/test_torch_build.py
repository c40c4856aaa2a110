"""The PyTorch module built from a Graph, and the torch executor on named and spandrel models."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
from conftest import psnr
from reference import ncnn_run

from upscaler.errors import ExecutorError, ModelError
from upscaler.executors.base import ExecutorOptions
from upscaler.models.builds import onnx_file
from upscaler.models.graph import Conv, PReLU
from upscaler.models.registry import ModelRef, resolve_model

if TYPE_CHECKING:
    import torch

    from upscaler.executors.torch import TorchExecutor, unavailable_reason
    from upscaler.models.torch_builder import build_torch_module


@pytest.fixture(scope="module", autouse=True)
def _torch() -> None:
    """torch and what uses it, imported when these tests run rather than when every test
    worker collects this file (1.2 s)."""
    global torch, TorchExecutor, unavailable_reason, build_torch_module
    torch = pytest.importorskip("torch")
    from upscaler.executors.torch import TorchExecutor, unavailable_reason
    from upscaler.models.torch_builder import build_torch_module

CPU = ExecutorOptions(device="cpu")


def random_input(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((2, 3, 20, 24), dtype=np.float32)


@pytest.mark.parametrize("name", ["realesr-animevideov3", "realesrgan-x4plus-anime"])
def test_module_matches_ncnn(name: str) -> None:
    model = resolve_model(name)
    x = random_input()
    with torch.inference_mode():
        got = build_torch_module(model.graph())(torch.from_numpy(x)).numpy()
    expected = ncnn_run(model, x)
    assert got.shape == expected.shape == (2, 3, 80, 96)
    assert psnr(got, expected) >= 115  # measured 122.1 and 129.3 dB


@pytest.mark.parametrize(("name", "scale"), [("realesr-animevideov3-x2", 2),
                                             ("realesr-animevideov3-x3", 3)])
def test_executor_runs_named_models_with_resize(name: str, scale: int) -> None:
    model = resolve_model(name)
    x = random_input(1)
    with TorchExecutor(model, CPU) as executor:
        assert (executor.scale, executor.fixed_tile, executor.precision) == (scale, None, "fp32")
        got = executor.run(x)
    assert got.dtype == np.float32 and got.shape == (2, 3, 20 * scale, 24 * scale)
    assert psnr(got, ncnn_run(model, x)) >= 115  # measured 121.5 and 119.6 dB


def compact_state_dict(model: ModelRef) -> dict[str, torch.Tensor]:
    """animevideov3's weights under SRVGGNetCompact's names: body.i is the i-th conv or PReLU."""
    layers = [layer for layer in model.graph().layers if isinstance(layer, Conv | PReLU)]
    state: dict[str, torch.Tensor] = {}
    for i, layer in enumerate(layers):
        if isinstance(layer, Conv):
            state[f"body.{i}.weight"] = torch.from_numpy(layer.weight.astype(np.float32))
            state[f"body.{i}.bias"] = torch.from_numpy(layer.bias)
        else:
            state[f"body.{i}.weight"] = torch.from_numpy(layer.slope)
    return state


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_spandrel_model_file(tmp_path: Path, suffix: str) -> None:
    pytest.importorskip("spandrel")
    from spandrel.architectures.Compact import Compact

    named = resolve_model("realesr-animevideov3")
    net = Compact(num_in_ch=3, num_out_ch=3, num_feat=64, num_conv=16, upscale=4)
    net.load_state_dict(compact_state_dict(named), strict=True)
    path = tmp_path / f"my-compact{suffix}"
    if suffix == ".pth":
        torch.save(net.state_dict(), path)
    else:
        from safetensors.torch import save_file

        save_file(net.state_dict(), path)

    user = resolve_model(path)
    assert (user.kind, user.scale) == ("pth", None)
    x = random_input(2)
    with TorchExecutor(user, CPU) as executor:
        assert executor.scale == 4
        got = executor.run(x)
    # spandrel clamps its models' output to [0, 1]. (Not measured: spandrel is not installed on
    # the development machine, so this threshold stays where it was.)
    assert psnr(got, np.clip(ncnn_run(named, x), 0, 1)) >= 60


def test_unreadable_model_file(tmp_path: Path) -> None:
    pytest.importorskip("spandrel")
    path = tmp_path / "broken.pth"
    path.write_bytes(b"not a pickle")
    with pytest.raises(ModelError, match="spandrel"):
        TorchExecutor(resolve_model(path), CPU)


def test_refuses_what_it_cannot_run(tmp_path: Path) -> None:
    assert unavailable_reason() is None
    named = resolve_model("realesr-animevideov3")
    with pytest.raises(ExecutorError, match="unknown device"):
        TorchExecutor(named, ExecutorOptions(device="quantum"))
    onnx_model = ModelRef("x", "onnx", onnx_file(named), 4)
    with pytest.raises(ExecutorError, match="cannot run onnx models"):
        TorchExecutor(onnx_model, CPU)
