"""x4plus's upsampling tail, run apart by ncnn in tiles of its own (models/tail.py): exactly what
Tencent's ncnn computes for the whole model, in a third of the memory."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from reference import ncnn_run

from upscaler.executors.base import ExecutorOptions
from upscaler.executors.ncnn import TAIL_TILE, NcnnExecutor
from upscaler.executors.registry import unavailable_reason
from upscaler.models.graph import Conv, Resize, WeightedSum
from upscaler.models.registry import resolve_model
from upscaler.models.tail import tail_of, upsampling_tail

HEAVY = "realesrgan-x4plus-anime"


def test_the_x4plus_models_have_a_tail_two_pixels_deep() -> None:
    for name in (HEAVY, "realesrgan-x4plus"):
        tail = tail_of(resolve_model(name))
        assert tail is not None
        # A 3x3 convolution at 2x and three at 4x reach 1/2 + 3/4 of an input pixel.
        assert (tail.reach, tail.body_floats, tail.tail_floats) == (2, 384, 2048)
    # animevideov3 ends in a pixel shuffle at the input's size: nothing to gain apart.
    assert tail_of(resolve_model("realesr-animevideov3")) is None


def test_no_tail_where_it_reads_the_body_beyond_its_first_blob() -> None:
    graph = resolve_model(HEAVY).graph()
    tail = upsampling_tail(graph)
    assert tail is not None
    start = next(i for i, layer in enumerate(graph.layers) if isinstance(layer, Resize))
    # A skip from the network's input around the upsampling, as some networks have.
    last = graph.layers[-1]
    assert isinstance(last, Conv)
    skip = WeightedSum((last.output, graph.input), "skipped", (1.0, 1.0))
    assert upsampling_tail(replace(graph, layers=(*graph.layers, skip),
                                   output="skipped")) is None
    # A bicubic resize reaches two more source pixels.
    resize = graph.layers[start]
    assert isinstance(resize, Resize)
    layers = list(graph.layers)
    layers[start] = replace(resize, mode="bicubic")
    deeper = upsampling_tail(replace(graph, layers=tuple(layers)))
    assert deeper is not None and deeper.reach == 4


@pytest.mark.skipif(unavailable_reason("ncnn") is not None, reason="needs ncnn")
def test_ncnn_runs_the_tail_apart_exactly() -> None:
    model = resolve_model(HEAVY)
    # Larger than one tail tile, and not a multiple of it: 2x2 tail tiles of 57-58 x 59 px.
    x = np.random.default_rng(3).random((1, 3, 115, 118), dtype=np.float32)
    assert TAIL_TILE**2 < 115 * 118
    with NcnnExecutor(model, ExecutorOptions(threads=2, precision="fp32")) as executor:
        assert executor._tail is not None
        out = executor.run(x)[0]
    expected = ncnn_run(model, x[0])
    assert out.shape == expected.shape == (3, 460, 472)
    # README: "within 2e-6"; measured 8.3e-7 (the same sums in another order at the tail
    # tiles' edges: a few float32 steps of values up to 1).
    assert np.abs(out - expected).max() < 2e-6
