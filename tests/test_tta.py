"""--tta: the model on the eight flips and transposes of each tile, the outputs turned back and
averaged, as the ncnn-vulkan programs' -x does; through the CLI, against Tencent's ncnn."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import INSTANT_MODEL, psnr
from conftest import cli_upscale as upscale
from draw import draw_cel
from reference import dihedral, ncnn_original_float, ncnn_run

from upscaler.borders import crop_frame, pad_frame
from upscaler.models.registry import resolve_model

FAST = "realesr-animevideov3"
CUGAN = "realcugan-x2-conservative"


def test_a_symmetric_model_comes_out_the_same(tmp_path: Path) -> None:
    """A nearest-neighbour 4x model commutes with every flip and transpose, so its TTA output
    is its plain one, pixel for pixel, whole or tiled: a variant turned back wrongly (a flip on
    the wrong axis, a transpose left in) moves pixels of this non-square drawing."""
    cel = draw_cel(36, 52, seed=3)
    plain = upscale(tmp_path, cel, *INSTANT_MODEL)
    assert plain.shape == (144, 208, 3)
    assert np.array_equal(upscale(tmp_path, cel, *INSTANT_MODEL, "--tta"), plain)
    assert np.array_equal(upscale(tmp_path, cel, *INSTANT_MODEL, "--tta", "--tile", "24"), plain)


@pytest.mark.parametrize("executor", ["onnxruntime", "ncnn"])
def test_tta_is_the_mean_of_ncnn_on_the_eight_variants(tmp_path: Path, executor: str) -> None:
    """animevideov3 on a non-square drawing, against the mean of Tencent's ncnn on its eight
    rotations and mirror images of the border-padded frame (as the job pads it), turned back,
    averaged in float and rounded once."""
    cel = draw_cel(40, 56, seed=7)
    model = resolve_model(FAST)
    padded = pad_frame(cel, model.border).astype(np.float32) / 255
    total = np.zeros(((40 + 2 * model.border) * 4, (56 + 2 * model.border) * 4, 3), np.float64)
    for variant, back in dihedral(padded):
        out = ncnn_run(model, np.ascontiguousarray(variant.transpose(2, 0, 1)))
        total += back(out.transpose(1, 2, 0))
    expected = crop_frame(np.clip(np.rint(total / 8 * 255), 0, 255), model.border * 4)
    got = upscale(tmp_path, cel, "--model", FAST, "--executor", executor,
                  "--precision", "fp32", "--tta")
    plain = upscale(tmp_path, cel, "--model", FAST, "--executor", executor,
                    "--precision", "fp32")
    assert got.shape == expected.shape == (160, 224, 3)
    # Measured: 98.4 dB on ONNX Runtime, 95.4 on ncnn (a few pixels a level off); the plain
    # output 31.6 dB from it: the flips change this drawing's lines that much.
    assert psnr(got, expected, 255) >= 92
    assert psnr(plain, expected, 255) <= 35


def test_real_cugan_tta_whole_and_in_exact_tiles(tmp_path: Path) -> None:
    """Real-CUGAN (its processing around the network, exact tiles for frames over the plan)
    against the mean of Tencent's ncnn on the eight variants, each processed as the original
    program does; the same in exact tiles, where a transposed frame takes the transposed plan."""
    cel = draw_cel(40, 56, seed=11)
    total = np.zeros((80, 112, 3), np.float64)
    for variant, back in dihedral(cel.astype(np.float32) / 255):
        out = ncnn_original_float(CUGAN, np.ascontiguousarray(variant.transpose(2, 0, 1)))
        total += back(out.transpose(1, 2, 0))
    expected = np.clip(np.rint(total / 8 * 255), 0, 255)
    args = ("--model", CUGAN, "--executor", "onnxruntime", "--precision", "fp32", "--tta")
    whole = upscale(tmp_path, cel, *args)
    tiled = upscale(tmp_path, cel, *args, "--tile", "32")
    assert psnr(whole, expected, 255) >= 89  # measured 92.4 dB (the plain output: 33.2)
    # Exact tiles: identical on an AVX2 AMD EPYC; on an AVX-512 Xeon one value of 26,880 is a
    # level off (ONNX Runtime sums in another order for another input size). A tile in the wrong
    # place or turned back wrongly moves hundreds.
    off = np.abs(tiled.astype(int) - whole.astype(int))
    assert off.max() <= 1 and np.count_nonzero(off) <= 8
