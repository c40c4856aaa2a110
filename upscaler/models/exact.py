"""Exact tiles for networks that convolve without padding and pool whole frames.

Real-CUGAN and waifu2x's CUNet convolve without padding: a tile given `margin` extra input pixels
on every side returns exactly its own part of the whole frame's output, with nothing to blend,
as long as it starts where the network's strided layers start on the whole frame (a multiple of
`align`, from the graph). What breaks that is their squeeze-excitation blocks: each scales its
blob's channels by a gate computed from the blob's mean over the whole frame, which no tile
sees. realcugan-ncnn-vulkan approximates the means from sampled tiles, so its tiled frames differ
everywhere. Here they are gathered exactly, one block at a time: pass k runs every tile up to
block k's pooled blob with the means of the blocks before it, sums the part of that blob each tile
owns (the rows and columns it adds to the whole frame's blob), and gives the runtime the frame's
means in place of block k's pooling; the last pass runs the tiles to the output with every
block's means. The cost is a run of
each block's prefix per tile on top of the one full run (measured in docs/models.md); a whole
frame needs none of it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from upscaler.models.graph import GlobalAvgPool, Graph

# (prepared input (3, h, w), pooled means fed by blob name, blob to extract) -> the blob
Extract = Callable[[np.ndarray, dict[str, np.ndarray], str], np.ndarray]


@dataclass(frozen=True)
class SEBlock:
    """One squeeze-excitation block: the blob it pools and the blob of its per-channel means
    (which a runtime is then given instead of computing it)."""

    pooled: str
    mean: str


def se_blocks(graph: Graph) -> list[SEBlock]:
    """The graph's squeeze-excitation blocks (global average pools) in order."""
    return [SEBlock(layer.input, layer.output) for layer in graph.layers
            if isinstance(layer, GlobalAvgPool)]


def alignment(graph: Graph) -> int:
    """The least input shift the network is translation-equivariant for: every strided blob
    must move by whole pixels."""
    shapes = graph.blob_shapes()
    return math.lcm(*(s.scale.denominator for s in shapes.values() if not s.is_vector))


def spans(length: int, tile: int, align: int) -> Iterator[tuple[int, int]]:
    """[start, stop) output spans (in input pixels) of at most `tile`, starts aligned."""
    step = max(align, tile // align * align)
    for start in range(0, length, step):
        yield start, min(length, start + step)


def run_exact(prepared: np.ndarray, out_shape: tuple[int, int], tile: tuple[int, int],
              graph: Graph, margin: int, extract: Extract,
              on_tiles: Callable[[int, int], None] | None = None) -> np.ndarray:
    """The network's output for `prepared` (3, H + 2 * margin, W + 2 * margin), run in tiles of
    about `tile` (input pixels) and identical to one whole run: (3, s*H, s*W) for out_shape
    (H, W). `on_tiles`, where given, is told (runs done, runs in all) after each tile's run,
    the means' passes counted with the output's."""
    scale = graph.scale()
    shapes = graph.blob_shapes()
    align = alignment(graph)
    height, width = out_shape
    rows = list(spans(height, tile[0], align))
    cols = list(spans(width, tile[1], align))

    blocks = se_blocks(graph)
    runs, done = (len(blocks) + 1) * len(rows) * len(cols), 0

    def tile_input(y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        return np.ascontiguousarray(prepared[:, y0:y1 + 2 * margin, x0:x1 + 2 * margin])

    def ran() -> None:
        nonlocal done
        done += 1
        if on_tiles is not None:
            on_tiles(done, runs)

    means: dict[str, np.ndarray] = {}
    for block in blocks:
        shape = shapes[block.pooled]
        total: np.ndarray | None = None
        for i, (y0, y1) in enumerate(rows):
            for j, (x0, x1) in enumerate(cols):
                blob = extract(tile_input(y0, y1, x0, x1), means, block.pooled)
                ran()
                # A tile owns its blob's rows up to where the next tile's begin; the last
                # tile owns the rest.
                own_h = _owned(shape.scale, y1 - y0, blob.shape[1], i == len(rows) - 1)
                own_w = _owned(shape.scale, x1 - x0, blob.shape[2], j == len(cols) - 1)
                part = blob[:, :own_h, :own_w].sum(axis=(1, 2), dtype=np.float64)
                total = part if total is None else total + part
        assert total is not None  # at least one tile
        area = shape.size(height + 2 * margin) * shape.size(width + 2 * margin)
        means[block.mean] = (total / float(area)).astype(np.float32)

    s = int(scale)
    out = np.empty((3, height * s, width * s), np.float32)
    for y0, y1 in rows:
        for x0, x1 in cols:
            out[:, y0 * s:y1 * s, x0 * s:x1 * s] = extract(tile_input(y0, y1, x0, x1), means,
                                                            graph.output)
            ran()
    return out


def _owned(scale: Fraction, step: int, size: int, last: bool) -> int:
    if last:
        return size
    owned = scale * step
    if owned.denominator != 1 or owned > size:
        raise ValueError(f"tile of {step} px does not own whole rows of a blob at {scale}x")
    return int(owned)


def prefix_work(graph: Graph) -> float:
    """Model work of exact tiling relative to one plain run: each block's prefix once more
    (docs/models.md states it per model; tests/test_families.py holds those figures)."""
    costs = graph.layer_macs()
    total = sum(costs.values())
    needed = sum(costs[layer.output] for block in se_blocks(graph)
                 for layer in graph.part(block.pooled).layers)
    return (total + needed) / total
