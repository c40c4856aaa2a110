"""--scale beyond a waifu2x model's own runs it again on its output, as waifu2x-ncnn-vulkan's
-s 4 does; other families run once and resize. Through the CLI, against Tencent's ncnn."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
from clips import make_clip
from conftest import cli_upscale, psnr
from draw import draw_cel
from reference import ncnn_original

from upscaler.channels import resize_to_scale
from upscaler.cli import main
from upscaler.config import Options
from upscaler.pipeline import Upscaler

WAIFU2X = "waifu2x-anime-x2"  # upconv_7: the fastest 2x model that repeats


def test_waifu2x_at_4x_is_two_passes_like_waifu2x_ncnn_vulkan(tmp_path: Path) -> None:
    """--scale 4 is the model run on its own 2x output: the CLI's 2x run twice, pixel for
    pixel, and Tencent's ncnn doing the same with the original program's processing."""
    cel = draw_cel(30, 44, seed=4)
    args = ("--model", WAIFU2X, "--executor", "onnxruntime", "--precision", "fp32")
    at_4x = cli_upscale(tmp_path, cel, *args, "--scale", "4")
    twice = cli_upscale(tmp_path, cli_upscale(tmp_path, cel, *args), *args)
    assert at_4x.shape == (120, 176, 3)
    assert np.array_equal(at_4x, twice)
    expected = ncnn_original(WAIFU2X, ncnn_original(WAIFU2X, cel))
    # Measured 77.9 dB (ONNX Runtime; ncnn 79.3, OpenVINO 77.8): the first pass's pixels a
    # level off here and there come out up to 3 levels off after the second.
    assert psnr(at_4x, expected, 255) >= 75
    # --scale 3 stops at the pass that reaches it and shrinks that to 3x.
    at_3x = cli_upscale(tmp_path, cel, *args, "--scale", "3")
    assert at_3x.shape == (90, 132, 3)
    assert np.array_equal(at_3x, resize_to_scale(at_4x, 90, 132))


def test_other_families_run_once_and_resize(tmp_path: Path) -> None:
    """Real-ESRGAN's 2x model at --scale 4: its 2x output resized, not run twice (which moves
    drawn lines further from the original, docs/models.md)."""
    cel = draw_cel(30, 44, seed=4)
    args = ("--model", "realesr-animevideov3-x2", "--executor", "onnxruntime")
    at_4x = cli_upscale(tmp_path, cel, *args, "--scale", "4")
    once = cli_upscale(tmp_path, cel, *args)
    assert np.array_equal(at_4x, resize_to_scale(once, 120, 176))
    assert psnr(at_4x, cli_upscale(tmp_path, once, *args), 255) < 28  # measured 24.7 dB


def test_a_video_at_4x_with_waifu2x(tmp_path: Path) -> None:
    """The video path too: each frame through both passes (upscale_frame, which the video job
    calls, is the 2x run twice), and the job's output at 4x the size."""
    frame = draw_cel(18, 32, seed=2)
    with Upscaler(Options(model=WAIFU2X, scale=4), "video", reuse=True) as upscaler:
        assert upscaler.passes == 2
        twice = upscaler.frames.upscale(np.array(upscaler.frames.upscale(frame)))
        assert np.array_equal(upscaler.upscale_frame(frame), twice)
    clip = make_clip(tmp_path / "clip.mkv", size="32x18", seconds=0.25)
    out = tmp_path / "out.mkv"
    assert main([str(clip), "-o", str(out), "--quiet", "--model", WAIFU2X, "--scale", "4",
                 "--deinterlace", "off"]) == 0
    with av.open(str(out)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == 6 and frames[0].shape == (72, 128, 3)
