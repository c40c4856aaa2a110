"""Measure how held drawings, motion, fades, grain and cuts differ after x264, per tile.

    python bench/reuse_study.py [--frames 48] [--crf 18 23] [--tiles 0 256 128]

Every scene of samples/anim.py is drawn exactly, encoded with x264 at each CRF and decoded the
way the upscaler decodes it. A tile "really changed" at frame i when its exact drawn pixels
differ from frame i-1. Each tile of each frame is then compared, after decoding, with the input
an ideal reuse rule would have computed last for that tile (the frame where its current drawing
began, or the previous frame where it changed), and the candidate statistics of that
difference are collected, in 8-bit levels of the largest of the three channel differences:

    mean    mean over the tile          max     largest pixel       p99.9  99.9th percentile
    n>24    pixels more than 24 off     blk8    largest mean of an 8x8 block (on an 8-px grid)
    win8    largest mean of any 8x8 window      win16  the same for 16x16 windows
    dc      largest |mean signed difference| of a channel (a fade shifts it, noise does not)
    shift   how far the tile's content moved, in pixels (upscaler.reuse.estimated_shift)

It prints the spread of each statistic over held tiles (which should be reused) and over
changed tiles (which must not be), per scene, then how upscaler.reuse.ReuseRule does on every
clip and tile size: tiles reused, how many of them really changed since the input they reuse,
and the worst PSNR between a reused tile's input and that computed input. `--sweep` does the
same for a grid of limits around the rule's.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "samples"))

from anim import SCENES, scene, write_clip  # noqa: E402

from upscaler.media.video.probe import probe  # noqa: E402
from upscaler.media.video.reader import VideoReader  # noqa: E402
from upscaler.reuse import ReuseRule, estimated_shift  # noqa: E402
from upscaler.tiling import plan_tiles  # noqa: E402

STATS = ("mean", "max", "p99.9", "n>24", "blk8", "win8", "win16", "dc", "shift")


def window_max(d: np.ndarray, k: int) -> float:
    """The largest mean of a k x k window of `d` (the whole of `d` when smaller)."""
    k_y, k_x = min(k, d.shape[0]), min(k, d.shape[1])
    s = np.pad(d.astype(np.float64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    sums = s[k_y:, k_x:] - s[:-k_y, k_x:] - s[k_y:, :-k_x] + s[:-k_y, :-k_x]
    return float(sums.max() / (k_y * k_x))


def stats(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """The candidate statistics of the difference between two (h, w, 3) uint8 tiles."""
    signed = a.astype(np.int16) - b.astype(np.int16)
    d = np.abs(signed).max(axis=2)
    h8, w8 = d.shape[0] // 8 * 8, d.shape[1] // 8 * 8
    blocks = d[:h8, :w8].reshape(h8 // 8, 8, w8 // 8, 8).mean(axis=(1, 3))
    return {
        "mean": float(d.mean()), "max": float(d.max()),
        "p99.9": float(np.percentile(d, 99.9)), "n>24": float((d > 24).sum()),
        "blk8": float(blocks.max()), "win8": window_max(d, 8), "win16": window_max(d, 16),
        "dc": float(np.abs(signed.reshape(-1, 3).mean(axis=0)).max()),
        "shift": estimated_shift(chw(a), chw(b)),
    }


def chw(tile: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(tile.transpose(2, 0, 1), np.float32) / 255


def decode(path: Path) -> list[np.ndarray]:
    with VideoReader(probe(path)) as reader:
        return list(reader)


def regions(height: int, width: int, tile: int) -> list[tuple[slice, slice]]:
    if tile == 0:
        return [(slice(0, height), slice(0, width))]
    plan = plan_tiles(height, width, tile, 16, pad_to_tile=False)
    return [(t.y, t.x) for t in plan.tiles]


def collect(exact: list[np.ndarray], decoded: list[np.ndarray], tile: int,
            ) -> list[tuple[bool, dict[str, float]]]:
    """(really changed, statistics against the ideal last computed input) per tile and frame."""
    out = []
    for y, x in regions(*exact[0].shape[:2], tile):
        last = 0
        for i in range(1, len(exact)):
            changed = bool(np.any(exact[i][y, x] != exact[i - 1][y, x]))
            out.append((changed, stats(decoded[i][y, x], decoded[last][y, x])))
            if changed:
                last = i
    return out


def simulate(decoded: list[np.ndarray], exact: list[np.ndarray], tile: int,
             rule: ReuseRule) -> tuple[int, int, int, int, float]:
    """(tiles reused, of which really changed, tiles in all, tiles held in truth, worst input
    PSNR of a reused tile) for `rule` on one clip, reusing as upscaler.reuse.TileReuse does."""
    reused = wrong = total = held = 0
    worst = float("inf")
    frames = [chw(d) for d in decoded]
    for y, x in regions(*exact[0].shape[:2], tile):
        computed = 0
        for i in range(1, len(exact)):
            total += 1
            held += not np.any(exact[i][y, x] != exact[i - 1][y, x])
            cur = np.ascontiguousarray(frames[i][:, y, x])
            ref = np.ascontiguousarray(frames[computed][:, y, x])
            if rule.unchanged(cur, ref):
                reused += 1
                # Really changed since the computed frame, not just since the last one.
                wrong += bool(np.any(exact[i][y, x] != exact[computed][y, x]))
                mse = float(np.mean((cur - ref) ** 2))
                worst = min(worst, 10 * np.log10(1 / mse) if mse else float("inf"))
            else:
                computed = i
    return reused, wrong, total, held, worst


def spread(values: list[float]) -> str:
    if not values:
        return "-"
    p = np.percentile(values, [0, 50, 99, 100])
    return "/".join(f"{v:.3g}" for v in p)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--crf", type=int, nargs="+", default=[18, 23, 28])
    parser.add_argument("--tiles", type=int, nargs="+", default=[0, 256, 128])
    parser.add_argument("--size", default="320x180")
    parser.add_argument("--sweep", action="store_true",
                        help="also try other limits around the rule's")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    clips = [(kind, scene(kind, args.frames, height, width)) for kind in SCENES]
    clips += [(f"pan{speed}", scene("pan", args.frames, height, width, pan_speed=speed))
              for speed in (0.5, 0.25)]
    clips.append(("mouth-tiny", [f[::2, ::2].copy() for f in scene(
        "mouth", args.frames, height * 2, width * 2)]))
    rule = ReuseRule()
    rules = [rule]
    if args.sweep:
        no_shift = float("inf")
        others = [(0.5, w, 0.1) for w in (3.0, 4.0, 8.0)]
        others += [(1.0, 6.0, 0.1), (0.5, 6.0, 0.125), (0.5, 3.0, no_shift), (0.5, 6.0, no_shift)]
        rules += [ReuseRule(mean_limit=m, window_limit=w, shift_limit=s) for m, w, s in others
                  if ReuseRule(mean_limit=m, window_limit=w, shift_limit=s) != rule]
    Result = tuple[int, str, tuple[int, int, int, int, float]]
    sweep: dict[ReuseRule, list[Result]] = defaultdict(list)
    by_group: dict[tuple[str, bool], dict[str, list[float]]] = defaultdict(
        lambda: defaultdict(list))
    print(f"{args.frames} frames of {args.size}; spreads are min/median/p99/max in 8-bit levels")
    print(f"rule: {rule}")
    with tempfile.TemporaryDirectory() as tmp:
        for crf in args.crf:
            for name, exact in clips:
                decoded = decode(write_clip(Path(tmp) / f"{name}.mkv", exact, crf))
                for tile in args.tiles:
                    for changed, s in collect(exact, decoded, tile):
                        for key, value in s.items():
                            by_group[(name, changed)][key].append(value)
                    for r in rules:
                        sweep[r].append((crf, name, simulate(decoded, exact, tile, r)))
                    reused, wrong, total, held, worst = sweep[rule][-1][2]
                    print(f"crf {crf:2d} {name:10s} tile {tile:3d}: reuses {reused:4d} of "
                          f"{total:4d} tiles ({held:4d} held), {wrong:3d} of them really "
                          f"changed; worst reused input {worst:5.1f} dB", flush=True)
    for changed in (False, True):
        print("\nCHANGED tiles" if changed else "\nHELD tiles (all CRFs and tile sizes)")
        print(f"{'scene':10s} " + " ".join(f"{s:>21s}" for s in STATS))
        for name, _ in clips:
            group = by_group.get((name, changed))
            if group:
                print(f"{name:10s} " + " ".join(f"{spread(group[s]):>21s}" for s in STATS))
    held_scenes = ("twos", "threes", "mouth", "mouth-tiny", "cuts", "still")
    print("\nper CRF: held tiles reused (% of ideal), tiles reused on pans/fades/grain, "
          "reused tiles that really changed, worst reused input PSNR")
    for r, results in sweep.items():
        line = []
        for crf in args.crf:
            mine = [(name, res) for c, name, res in results if c == crf]
            held = sum(res[3] for name, res in mine if name in held_scenes)
            reused = sum(res[0] for name, res in mine if name in held_scenes)
            moving = sum(res[0] for name, res in mine if name not in held_scenes)
            wrong = sum(res[1] for _, res in mine)
            worst = min(res[4] for _, res in mine)
            line.append(f"{100 * reused / max(held, 1):5.1f}% {moving:3d} {wrong:3d} "
                        f"{worst:4.1f} dB")
        print(f"mean <= {r.mean_limit:4.2f}, {r.window}x{r.window} <= {r.window_limit:4.1f}, "
              f"shift <= {r.shift_limit:5.3f}: " + " | ".join(line))


if __name__ == "__main__":
    main()
