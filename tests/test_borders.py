"""Frame borders: pictures keep their colours up to the edge (the models' zero padding darkened
and tinted the outer pixels: 33 levels on a flat (200, 60, 30), a red pixel came out 123-151)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import cli_upscale, psnr
from draw import draw_cel
from reference import ncnn_upscale

from upscaler.borders import crop_frame, pad_frame
from upscaler.models.registry import resolve_model

ANIME = "realesrgan-x4plus-anime"
FAST = "realesr-animevideov3"


def upscale(tmp_path: Path, pixels: np.ndarray, *args: str) -> np.ndarray:
    return cli_upscale(tmp_path, pixels, *args).astype(np.int32)


# How far each model moves a flat colour everywhere, edges or not (measured on a 72x72 frame:
# x4plus-anime gives (200, 59, 30), animevideov3 (203, 61, 31)): not a border effect.
MODEL_SHIFT = {ANIME: 1, FAST: 3}


# Measured: every pixel within 1 level of the centre (0 px padding: 33 for x4plus-anime); 2 in
# the tiled frame, whose tiles are rounded to pixels before their overlaps are blended and
# rounded again (the model's own output there spans 201.5-203.4 levels; blended in float, as
# before the frame path kept pixels, it rounds to within 1).
@pytest.mark.parametrize(("model", "extra", "flat"), [(ANIME, (), 1), (FAST, (), 1),
                                                      (FAST, ("--tile", "32"), 2)])
def test_flat_picture_stays_flat_to_its_edges(tmp_path: Path, model: str,
                                              extra: tuple[str, ...], flat: int) -> None:
    colour = np.array([200, 60, 30])
    out = upscale(tmp_path, np.full((40, 40, 3), colour, np.uint8), "--model", model, *extra)
    assert out.shape == (160, 160, 3)
    centre = out[80, 80]
    assert np.abs(out - centre).max() <= flat
    assert np.abs(centre - colour).max() <= MODEL_SHIFT[model]


def test_one_pixel_picture_keeps_its_colour(tmp_path: Path) -> None:
    out = upscale(tmp_path, np.array([[[255, 0, 0]]], np.uint8))
    assert out.shape == (4, 4, 3)
    assert np.abs(out - [255, 0, 0]).max() <= 1  # measured 0; unpadded: (123-151, 54, 31)


@pytest.mark.slow  # x4plus-anime three times: ONNX Runtime, and ncnn padded and bare
def test_cel_is_ncnn_on_the_padded_frame_and_unchanged_inside(tmp_path: Path) -> None:
    """Against Tencent's ncnn: exactly the padded computation, and far from the edges the same
    as the unpadded one (the padding's influence fades over the model's receptive field)."""
    cel = draw_cel(64, 80, seed=5)
    out = upscale(tmp_path, cel, "--executor", "onnxruntime", "--precision", "fp32")
    border = resolve_model(ANIME).border
    padded = crop_frame(ncnn_upscale(ANIME, pad_frame(cel, border)), border * 4)
    assert psnr(out, padded, 255) >= 85  # measured 90.6 dB (a few pixels off by 1 level)
    inside = (slice(48, -48), slice(48, -48))  # 12 input pixels in from every edge
    unpadded = ncnn_upscale(ANIME, cel)
    assert psnr(out[inside], unpadded[inside], 255) >= 47  # measured 50.0 dB


def test_pad_and_crop_any_size() -> None:
    for shape in ((1, 1, 3), (2, 3, 3), (5, 40, 1)):
        frame = np.random.default_rng(0).integers(0, 256, shape, np.uint8)
        padded = pad_frame(frame, 10)
        assert padded.shape == (shape[0] + 20, shape[1] + 20, shape[2])
        assert np.array_equal(crop_frame(padded, 10), frame)
        # Mirrored with the edge pixel: the pixel next to the edge repeats it.
        assert np.array_equal(padded[9, 10:-10], frame[0])
    assert pad_frame(frame, 0) is frame
