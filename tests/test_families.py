"""Real-CUGAN and waifu2x: the reader and builds against Tencent's ncnn running the original files
with the original programs' processing (reference.ncnn_original), whole and in exact tiles."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import psnr
from draw import draw_cel
from PIL import Image
from reference import ncnn_original

from upscaler.cli import main
from upscaler.errors import ModelError
from upscaler.models.registry import MODELS, resolve_model

# One of each network and processing: SE 2x/3x/4x (reflect; multiples of 2 and 4; the nearest
# 4x input added), pro (value mapping), CUNet 2x and 1x (edge; 18 and 28 px), upconv_7 (7 px).
FAMILY_MODELS = ["realcugan-x2-conservative", "realcugan-x3-denoise3", "realcugan-x4-no-denoise",
                 "realcugan-pro-x2-conservative", "waifu2x-cunet-x2-noise1",
                 "waifu2x-cunet-x1-noise0", "waifu2x-anime-x2"]
# On ONNX Runtime one model of each family, on OpenVINO and PyTorch one; ncnn runs them all.
BUILT_RUNS = [("onnxruntime", "realcugan-x2-conservative"),
              ("onnxruntime", "waifu2x-cunet-x2-noise1"), ("openvino", "realcugan-x4-no-denoise"),
              # 40 s here, most of it PyTorch's start on the busy 2 cores.
              pytest.param("torch", "waifu2x-cunet-x1-noise0", marks=[pytest.mark.slow,
                  pytest.mark.skipif(importlib.util.find_spec("torch") is None,
                                     reason="torch not installed")])]
SIZE = (70, 93)  # held out: not a multiple of 2 or 4, and over 64 px for two tiles a side


def save(path: Path, pixels: np.ndarray) -> Path:
    Image.fromarray(pixels).save(path)
    return path


def load(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im)


@pytest.fixture(scope="module")
def picture(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    pixels = draw_cel(*SIZE, seed=11)
    return save(tmp_path_factory.mktemp("families") / "cel.png", pixels), pixels


@pytest.fixture(scope="module")
def expected() -> dict[str, np.ndarray]:
    """The original processing's output per model, computed once."""
    pixels = draw_cel(*SIZE, seed=11)
    return {name: ncnn_original(name, pixels) for name in FAMILY_MODELS}


def upscale(src: Path, out: Path, name: str, executor: str, tile: int) -> np.ndarray:
    assert main([str(src), "-o", str(out), "--model", name, "--executor", executor,
                 "--tile", str(tile), "--precision", "fp32", "--quiet"]) == 0
    return load(out)


@pytest.mark.parametrize("executor,name", [("ncnn", n) for n in FAMILY_MODELS] + BUILT_RUNS)
def test_family_matches_original_processing_whole_and_tiled(
        executor: str, name: str, picture: tuple[Path, np.ndarray],
        expected: dict[str, np.ndarray], tmp_path: Path) -> None:
    src, _ = picture
    want = expected[name]
    scale = MODELS[name].scale
    assert want.shape == (SIZE[0] * scale, SIZE[1] * scale, 3)
    whole = upscale(src, tmp_path / "whole.png", name, executor, 0)
    assert whole.shape == want.shape
    # The issue asks for >= 50 dB whole and >= 45 dB tiled; measured 84.0-inf (8-bit values
    # at most 1 level off) on every executor, whole and in tiles (docs/models.md).
    assert psnr(whole, want, 255) >= 80
    # 64-px tiles: 2x2 of them, each with the whole frame's pooled means.
    tiled = upscale(src, tmp_path / "tiled.png", name, executor, 64)
    assert psnr(tiled, want, 255) >= 80


def test_exact_tiles_equal_the_whole_frame(picture: tuple[Path, np.ndarray]) -> None:
    """Below 8-bit rounding: the tiles see the whole frame's squeeze-excitation means. Tiles
    that pooled their own (as realcugan-ncnn-vulkan's without -c) differ everywhere."""
    from upscaler.executors.base import ExecutorOptions
    from upscaler.executors.registry import create_executor
    from upscaler.models.exact import run_exact
    from upscaler.models.processing import prepare
    from upscaler.pixels import to_planes

    model = resolve_model("realcugan-x2-conservative")
    x = to_planes(picture[1][None])
    with create_executor("onnxruntime", model, ExecutorOptions(precision="fp32")) as executor:
        whole = executor.run(x)[0]
        executor.set_tile((32, 32))
        tiled = executor.run(x)[0]
        prepared = prepare(x, model.processing)[0]
        rh, rw = prepared.shape[1] - 36, prepared.shape[2] - 36

        def own_means(planes: np.ndarray, feeds: dict[str, np.ndarray], target: str,
                      ) -> np.ndarray:
            return executor.inner.extract(planes, {}, target)  # each tile pools itself

        naive = run_exact(prepared, (rh, rw), (32, 32), model.graph(), 18, own_means)
    assert psnr(tiled, whole) >= 80
    assert psnr(naive[:, :whole.shape[1], :whole.shape[2]], whole) < psnr(tiled, whole) - 20


def test_tiny_picture_is_padded_by_repeated_reflection(tmp_path: Path) -> None:
    """A 5x7 picture under 3x Real-CUGAN's 14-px reflect padding and its multiples of 4."""
    pixels = draw_cel(5, 7, seed=2)
    src = save(tmp_path / "tiny.png", pixels)
    got = upscale(src, tmp_path / "tiny_x3.png", "realcugan-x3-conservative", "onnxruntime", 0)
    assert psnr(got, ncnn_original("realcugan-x3-conservative", pixels), 255) >= 50


def test_video_through_realcugan_keeps_every_frame_at_2x(tmp_path: Path) -> None:
    from clips import decode_all, make_clip

    clip = make_clip(tmp_path / "in.mkv", size="48x32", seconds=0.5)
    out = tmp_path / "out.mkv"
    assert main([str(clip), "-o", str(out), "--model", "realcugan-x2-conservative",
                 "--quiet"]) == 0
    frames_in, frames_out = decode_all(clip), decode_all(out)
    assert len(frames_out) == len(frames_in) > 5
    assert all(f.shape == (64, 96, 3) for f in frames_out)


def test_models_lists_every_family_with_scale_and_cost(capsys: pytest.CaptureFixture[str],
                                                       ) -> None:
    assert main(["models"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()
             if line and not line.startswith(" ")}
    names = ([f"realcugan-x{s}-{level}" for s in (2, 3, 4) for level in ("conservative",
              "no-denoise", "denoise3")] + ["realcugan-x2-denoise1", "realcugan-x2-denoise2"]
             + [f"realcugan-pro-x{s}-{lv}" for s in (2, 3)
                for lv in ("conservative", "no-denoise", "denoise3")]
             + [f"waifu2x-{n}-x2{sfx}" for n in ("cunet", "anime", "photo")
                for sfx in ("", "-noise0", "-noise1", "-noise2", "-noise3")]
             + [f"waifu2x-cunet-x1-noise{k}" for k in range(4)])
    for name in names:
        assert name in lines, name
    assert "  x2  Real-CUGAN  0.77 MMAC/px  " in lines["realcugan-x2-conservative"]
    assert "  x1  waifu2x  " in lines["waifu2x-cunet-x1-noise2"]
    assert "  x4  Real-ESRGAN  5.71 MMAC/px  " in lines["realesrgan-x4plus-anime"]


def test_graph_geometry_follows_the_files() -> None:
    """Blob sizes shrink by what the original programs pad: scale * (L - 2 * pad)."""
    from fractions import Fraction

    from upscaler.models.exact import alignment

    for name in ("realcugan-x2-conservative", "realcugan-x3-no-denoise",
                 "realcugan-x4-denoise3", "waifu2x-cunet-x1-noise3", "waifu2x-photo-x2"):
        model = resolve_model(name)
        graph = model.graph()
        out = graph.blob_shapes()[graph.output]
        assert out.scale == model.scale
        assert out.offset == Fraction(-2 * model.scale * model.margin)
        assert model.processing is not None
        assert model.processing.multiple % alignment(graph) == 0


def test_user_file_of_a_shrinking_network_is_refused(tmp_path: Path) -> None:
    model = resolve_model("waifu2x-anime-x2")
    shutil.copy(model.path, tmp_path / "net.param")
    shutil.copy(model.bin_path, tmp_path / "net.bin")
    with pytest.raises(ModelError, match="unpadded convolutions"):
        resolve_model(tmp_path / "net.param")


@pytest.mark.parametrize(("model", "work"), [
    ("realcugan-x2-conservative", 2.87), ("waifu2x-cunet-x2", 2.87),
    ("realcugan-x3-conservative", 2.73), ("realcugan-x4-conservative", 2.72),
    ("waifu2x-cunet-x1-noise0", 3.36), ("waifu2x-anime-x2", 1.0)])
def test_exact_tiling_costs_what_docs_models_md_says(model: str, work: float) -> None:
    """Each squeeze-excitation block's prefix once more per tile, counted from the graph."""
    from upscaler.models.exact import prefix_work

    assert prefix_work(resolve_model(model).graph()) == pytest.approx(work, abs=0.005)


@pytest.mark.parametrize("executor", ["ncnn", "onnxruntime"])
@pytest.mark.parametrize("model", ["realcugan-x2-conservative", "waifu2x-cunet-x2"])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_pixels_in_and_out_match_the_float_path(executor: str, model: str,
                                                dtype: type) -> None:
    """A whole frame goes to the network's executor as pixels (its cheaper edge), padded in
    pixels; the result is the float path's exactly, and in exact tiles it is that path."""
    from upscaler.executors.base import ExecutorOptions
    from upscaler.executors.registry import create_executor
    from upscaler.pixels import run_via_planes

    cel = draw_cel(37, 53)[None].astype(dtype) * (257 if dtype == np.uint16 else 1)
    with create_executor(executor, resolve_model(model), ExecutorOptions(threads=2)) as ex:
        whole = ex.run_pixels(cel)
        assert whole.dtype == cel.dtype and whole.shape == (1, 74, 106, 3)
        assert np.array_equal(whole, run_via_planes(ex.run, cel))
        ex.set_tile((32, 32))
        assert np.array_equal(ex.run_pixels(cel), run_via_planes(ex.run, cel))
