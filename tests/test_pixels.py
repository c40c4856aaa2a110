"""The model's edge (upscaler/pixels.py): every pixel value becomes the float numpy's float32
multiply gives (OpenCV makes the half-precision planes), and every half becomes the pixel its
float32 widening gives."""

import numpy as np
import pytest

from upscaler.pixels import from_planes, to_planes


@pytest.mark.parametrize("planes", [np.float32, np.float16])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_every_pixel_value_becomes_numpys_float(dtype: type, planes: type) -> None:
    """OpenCV makes the planes; numpy's float32 multiply (then its cast) is the reference."""
    values = np.arange(np.iinfo(dtype).max + 1, dtype=dtype)
    tiles = np.stack([values, values[::-1], values], axis=-1).reshape(1, 1, -1, 3)
    got = to_planes(tiles, planes)
    assert got.dtype == planes and got.shape == (1, 3, 1, len(values))
    assert got.flags.c_contiguous
    scale = np.float32(1 / np.iinfo(dtype).max)
    exact = tiles.transpose(0, 3, 1, 2).astype(np.float32) * scale
    np.testing.assert_array_equal(got, exact.astype(planes))
    # A view (a tile of a frame) is taken as it is.
    np.testing.assert_array_equal(to_planes(tiles[:, :, ::-1], planes),
                                  exact[..., ::-1].astype(planes))


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_every_half_becomes_the_pixel_the_float32_path_gives(dtype: type) -> None:
    """Every finite half and both infinities, far outside [0, 1] too: clamped and rounded
    alike. (OpenCV alone turned 0 into 65535 for uint16: it scales halves by a half, and
    65535 is infinity there.)"""
    halves = np.arange(1 << 16, dtype=np.uint16).view(np.float16)
    halves = halves[~np.isnan(halves)]
    planes = np.stack([halves, halves[::-1], halves]).reshape(3, 1, -1)
    got = from_planes(planes, dtype)
    assert got.dtype == dtype and got.shape == (1, len(halves), 3)
    np.testing.assert_array_equal(got, from_planes(planes.astype(np.float32), dtype))
    out = np.empty_like(got)
    assert from_planes(planes, dtype, out=out) is out
    np.testing.assert_array_equal(out, got)


def test_other_float_inputs_are_the_float32_planes_cast() -> None:
    tiles = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(1, 2, 3, 3)
    planes = to_planes(tiles, np.float64)
    assert planes.dtype == np.float64
    np.testing.assert_array_equal(planes, to_planes(tiles).astype(np.float64))
