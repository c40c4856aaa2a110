"""The conversions around the model: any stored pixel layout to RGB pixels and back.

The model's side takes (H, W, 3) RGB pixels of the source's depth (uint8, or uint16 for deeper
sources; pixels.py turns them into floats one tile at a time). Gray pictures are repeated into
three channels and come back as the BT.601 luma of the model's output (its weights sum to 1, so
a neutral output returns exactly the gray it was given). Alpha is kept apart, upscaled by the
caller and settled with settle_alpha. Values are rounded, never truncated, so a round trip
through an identity model gives back every input value exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from upscaler.image_data import Image

_LUMA = np.array([0.299, 0.587, 0.114], np.float32)


@dataclass(frozen=True, eq=False)  # arrays have no single truth value
class ModelInput:
    """What the model runs on, and what is needed to rebuild the source layout afterwards.

    `rgb` is (H, W, 3) and `alpha` (H, W), or None when the source had no alpha channel, both
    uint8 or both uint16 as `bit_depth` (8 or 16) says; `gray` says the source had one colour
    channel.
    """

    rgb: np.ndarray
    alpha: np.ndarray | None
    bit_depth: int
    gray: bool

    @property
    def peak(self) -> int:
        return 65535 if self.bit_depth == 16 else 255

    @property
    def dtype(self) -> type[np.unsignedinteger]:
        return np.uint16 if self.bit_depth == 16 else np.uint8


def to_model_input(image: Image | np.ndarray) -> ModelInput:
    """Split an image (or its (H, W, C) / (H, W) uint8 / uint16 pixels) into model RGB and alpha."""
    pixels = image.pixels if isinstance(image, Image) else image
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    if pixels.ndim != 3 or pixels.shape[2] not in (1, 2, 3, 4):
        raise ValueError(f"pixels must be (H, W, 1-4), not {pixels.shape}")
    if pixels.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"pixels must be uint8 or uint16, not {pixels.dtype}")
    bit_depth = 16 if pixels.dtype == np.uint16 else 8
    channels = pixels.shape[2]
    gray = channels in (1, 2)
    rgb = np.repeat(pixels[..., :1], 3, axis=2) if gray else pixels[..., :3]
    alpha = pixels[..., -1] if channels in (2, 4) else None
    return ModelInput(rgb=np.ascontiguousarray(rgb), alpha=alpha, bit_depth=bit_depth, gray=gray)


def from_model_output(
    rgb_up: np.ndarray, alpha_up: np.ndarray | None, like: ModelInput
) -> np.ndarray:
    """Model output (RGB (H, W, 3), alpha (H, W), pixels of `like`'s depth) back to the layout
    of `like`."""
    if rgb_up.ndim != 3 or rgb_up.shape[2] != 3:
        raise ValueError(f"model output must be (H, W, 3), not {rgb_up.shape}")
    if (alpha_up is None) != (like.alpha is None):
        raise ValueError("alpha must be given exactly when the source had an alpha channel")
    if like.gray:
        rgb_up = _quantise(rgb_up.astype(np.float32) @ _LUMA, like.dtype)[..., None]
    if alpha_up is None:
        return rgb_up
    if alpha_up.shape != rgb_up.shape[:2]:
        raise ValueError(f"alpha {alpha_up.shape} does not match colour {rgb_up.shape[:2]}")
    return np.concatenate([rgb_up, alpha_up[..., None]], axis=2)


def _quantise(values: np.ndarray, dtype: type[np.unsignedinteger]) -> np.ndarray:
    info = np.iinfo(dtype)
    return np.rint(np.clip(values, info.min, info.max)).astype(dtype)


FLAT_RADIUS = 3  # source pixels this far from any alpha change count as uniformly (in)visible


def settle_alpha(upscaled: np.ndarray, source: np.ndarray) -> np.ndarray:
    """Model-upscaled alpha with the source's flat areas restored exactly (pixels of one
    dtype in, the same out).

    The model draws crisp alpha edges, but it also leaves fully opaque areas at 253/255 or so,
    which reads as slight transparency. Wherever the source alpha is the same within
    FLAT_RADIUS pixels, the output takes that exact value; only the edges keep the model's.
    """
    size = 2 * FLAT_RADIUS + 1
    kernel = np.ones((size, size), np.uint8)
    flat = cv2.erode(source, kernel, borderType=cv2.BORDER_REPLICATE) == cv2.dilate(
        source, kernel, borderType=cv2.BORDER_REPLICATE)
    out_h, out_w = upscaled.shape
    flat_up = cv2.resize(flat.astype(np.uint8), (out_w, out_h),
                         interpolation=cv2.INTER_NEAREST).astype(bool)
    src_up = cv2.resize(source, (out_w, out_h), interpolation=cv2.INTER_NEAREST)
    return np.where(flat_up, src_up, upscaled)


def resize_to_scale(arr: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Resize (H, W[, C]) pixels to exactly (out_h, out_w).

    Area averaging when shrinking (no aliasing); Lanczos when enlarging, whose ringing
    overshoots at line art: integer pixels saturate by themselves, floats in [0, 1] are
    clipped back.
    """
    h, w = arr.shape[:2]
    if (h, w) == (out_h, out_w):
        return arr
    shrinking = out_h <= h and out_w <= w
    method = cv2.INTER_AREA if shrinking else cv2.INTER_LANCZOS4
    out = cv2.resize(arr, (out_w, out_h), interpolation=method)
    if arr.ndim == 3 and out.ndim == 2:  # OpenCV drops a single channel axis
        out = out[..., None]
    if not shrinking and np.issubdtype(out.dtype, np.floating):
        out = np.clip(out, 0.0, 1.0, out=out)
    return out
