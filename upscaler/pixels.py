"""The model's edge: stored pixels to the float planes a model computes on, and back.

Frames travel from the decoder to the encoder as they are stored, uint8 (uint16 for deeper
sources) in (H, W, 3) RGB order: a 4K frame is 25 MB that way and 100 MB as float32. They
become float only here, one tile at a time, right before the model, and the model's float
output becomes pixels again right after it. An executor that can do this more cheaply in its
own runtime (inside the graph, on the GPU) does it there (`run_pixels`); the others use
`run_via_planes`.

OpenCV does the output side: a 3840x2160 float32 frame to rounded, clamped uint8 RGB took 8 ms
on the 2-core development machine against 83 ms for numpy's clip, rint and astype, with the
same result (both round half to even). The input side is 1/16 of that at 4x and stays numpy
for float32: OpenCV would take 5 ms of numpy's 10 at 1080p, but its first call starts its
thread pool, whose address space (75 MB here) then comes before the runtime's first large
allocation (tests/test_memory.py runs the model under a limit on it). fp16 (ONNX Runtime's
default on TensorRT and CUDA, a user's fp16 .onnx) goes through OpenCV both ways: numpy has no
fast half-precision cast (a 4K fp16 frame to uint8 took 48 ms through float32, 8 ms in
OpenCV; 1080p uint8 in, 26 ms against 3.5). OpenCV's results are numpy's to the bit:
tests/test_pixels.py checks every value.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

from upscaler.bands import in_bands

PEAKS = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}
_CV_DEPTH = {np.dtype(np.uint8): cv2.CV_8U, np.dtype(np.uint16): cv2.CV_16U}


def peak_of(dtype: np.dtype) -> float:
    """The value that stands for 1.0 in pixels of `dtype` (uint8 or uint16)."""
    try:
        return PEAKS[np.dtype(dtype)]
    except KeyError:
        raise ValueError(f"pixels must be uint8 or uint16, not {dtype}") from None


def to_planes(tiles: np.ndarray, dtype: np.dtype = np.float32) -> np.ndarray:
    """uint8/uint16 (N, h, w, 3) pixels -> float (N, 3, h, w) in [0, 1], C-contiguous, of
    `dtype` (float32, float16, or whatever float a user's model declares)."""
    scale = np.float32(1.0 / peak_of(tiles.dtype))
    if np.dtype(dtype) != np.float16:
        planes = np.empty((tiles.shape[0], 3, *tiles.shape[1:3]), np.float32)
        np.multiply(tiles.transpose(0, 3, 1, 2), scale, out=planes, casting="unsafe")
        return planes.astype(dtype, copy=False)
    # numpy's float32 multiply, then the cast to half, as OpenCV gives them in one pass.
    planes = np.empty((tiles.shape[0], 3, *tiles.shape[1:3]), np.float16)
    for tile, target in zip(tiles, planes, strict=True):
        for c, channel in enumerate(cv2.split(np.ascontiguousarray(tile))):
            cv2.multiply(channel, float(scale), dst=target[c], dtype=cv2.CV_16F)
    return planes


def from_planes(planes: np.ndarray, dtype: np.dtype, out: np.ndarray | None = None,
                ) -> np.ndarray:
    """float32 or float16 (3, H, W) model output -> (H, W, 3) pixels of `dtype`, clamped and
    rounded.

    `out`, when given, is an (H, W, 3) C-contiguous array of `dtype` to write into. A large
    frame is converted in row bands on every core (bands.py).
    """
    dtype = np.dtype(dtype)
    height, width = planes.shape[1:]
    if out is None:
        out = np.empty((height, width, 3), dtype)

    def rows(top: int, bottom: int) -> None:
        _from_planes(planes[:, top:bottom], dtype, out[top:bottom])

    in_bands(height, width, rows)
    return out


def _from_planes(planes: np.ndarray, dtype: np.dtype, out: np.ndarray) -> None:
    peak, depth = peak_of(dtype), _CV_DEPTH[dtype]
    channels = [cv2.multiply(_float_plane(planes[c], dtype), peak, dtype=depth)
                for c in range(3)]
    cv2.merge(channels, out)


def _float_plane(plane: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """A plane OpenCV scales to pixels of `dtype` exactly as it would the float32 plane."""
    if plane.dtype != np.float16:
        return np.ascontiguousarray(plane, np.float32)
    plane = np.ascontiguousarray(plane)
    if dtype == np.uint8:
        return plane
    # OpenCV scales a half-precision plane by the scale rounded to half precision, where
    # 65535 is infinity (0 came out 65535): through float32 first, an exact widening.
    return cv2.multiply(plane, 1.0, dtype=cv2.CV_32F)


def run_via_planes(run: Callable[[np.ndarray], np.ndarray], tiles: np.ndarray) -> np.ndarray:
    """Pixels through an executor's float `run`: (N, h, w, 3) -> (N, h*s, w*s, 3), same dtype."""
    return batch_to_pixels(run(to_planes(tiles)), tiles.dtype)


def batch_to_pixels(upscaled: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """float (N, 3, H, W) model output -> (N, H, W, 3) pixels of `dtype`, a new array."""
    result = np.empty((upscaled.shape[0], *upscaled.shape[2:], 3), dtype)
    for planes, target in zip(upscaled, result, strict=True):
        from_planes(planes, dtype, out=target)
    return result


def run_pixels(executor: object, tiles: np.ndarray) -> np.ndarray:
    """`tiles` through `executor`: its own `run_pixels` where it has one (a cheaper edge in its
    runtime), else its float `run` with the conversions here."""
    own = getattr(executor, "run_pixels", None)
    if own is not None:
        return own(tiles)
    return run_via_planes(executor.run, tiles)  # type: ignore[attr-defined]  # an Executor
