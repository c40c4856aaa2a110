"""Dirty regions, the acceptance run: held drawings whose small changes alone are recomputed.

    python bench/bench_dirty_regions.py [--frames 12] [--crf 18] [--rounds 3]
        [--clips threes lipflaps pan]
    python bench/bench_dirty_regions.py --reach [--model NAME] [--size 160]

Draws each clip (samples/anim.py), encodes it with x264 at --crf so that held drawings carry
coding noise, and runs

  - ncnn bare: Tencent ncnn's plain `ncnn.Net` on every decoded frame whole, 2 threads, warm
    (one frame run first, not counted), inference only (bench_reuse.ncnn_bare);
  - the job: `upscale clip.mkv -o out.mkv --crf 0 ...` as a subprocess, start to exit (decode,
    model, encode, mux), reuse and dirty regions on (the default); its summary gives the share
    of the model's pixels it computed;
  - the same job with --no-reuse; every output frame of the first is compared with it (PSNR).

Clips, as the issue gives them:
  threes    320x180, a character moving over a still background, realesrgan-x4plus-anime;
            goal: job <= 0.25x ncnn bare, every frame >= 45 dB (mean >= 50) against --no-reuse
  lipflaps  640x360, only a mouth and the eyes change, realesr-animevideov3, --preset
            ultrafast; goal: <= 0.2x ncnn bare, the same PSNR goals
  pan       320x180, the camera pans 1 px a frame, realesr-animevideov3: the negative case;
            nothing may be reused into a smear, every frame >= 45 dB

Each round times ncnn bare and then the job, back to back, so that a change in the machine's
load falls on both; the figures are the medians over --rounds (the --no-reuse job runs once).
On a shared 2-core machine absolute times are noisy; read the ratios.

--reach measures what ModelSpec.reach states for a model: how far a changed 16x16 block moves
the output (by more than 1 and 2 levels), and the PSNR of a part computed with n px of context
against the same part of a whole-frame run.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "samples"))
sys.path.insert(0, str(ROOT / "bench"))

from anim import scene, write_clip  # noqa: E402
from bench_reuse import decode, ncnn_bare, psnr, run_job  # noqa: E402

SHARE = re.compile(r"the model ran on ([\d.]+)% of the pixels")
CLIPS = {
    "threes": ((180, 320), "realesrgan-x4plus-anime", (), 0.25),
    "lipflaps": ((360, 640), "realesr-animevideov3", ("--preset", "ultrafast"), 0.2),
    "pan": ((180, 320), "realesr-animevideov3", (), None),
}


def job(src: Path, dst: Path, model: str, *extra: str) -> tuple[float, float | None]:
    """Seconds the whole `upscale` job takes, and the share of pixels it computed."""
    seconds, stderr = run_job(src, dst, model, *extra)
    found = SHARE.search(stderr)
    return seconds, float(found.group(1)) / 100 if found else None


def run_clip(kind: str, frames: int, crf: int, rounds: int, work: Path) -> None:
    (height, width), model, extra, goal = CLIPS[kind]
    src = write_clip(work / f"{kind}.mkv", scene(kind, frames, height, width), crf)
    decoded = decode(src)
    ncnn_bare(model, decoded[:1])  # warm: the first run pays for allocation
    bares, jobs = [], []
    for _ in range(rounds):
        bares.append(ncnn_bare(model, decoded))
        seconds, share = job(src, work / f"{kind}-dirty.mkv", model, *extra)
        jobs.append(seconds)
    bare, seconds = statistics.median(bares), statistics.median(jobs)
    plain_seconds, _ = job(src, work / f"{kind}-plain.mkv", model, "--no-reuse", *extra)
    ours, plain = decode(work / f"{kind}-dirty.mkv"), decode(work / f"{kind}-plain.mkv")
    scores = [psnr(a, b) for a, b in zip(ours, plain, strict=True)]
    finite = [s for s in scores if np.isfinite(s)]
    goal_text = f" (goal <= {goal})" if goal else ""
    print(f"{kind}: {width}x{height}, {frames} frames, {model} {' '.join(extra)}\n"
          f"  share of pixels computed {share:.3f}; ncnn bare {bare:.1f} s, job {seconds:.1f} s"
          f" = {seconds / bare:.3f}x{goal_text} (medians of {rounds}; rounds' ratios "
          f"{' '.join(f'{j / b:.3f}' for b, j in zip(bares, jobs, strict=True))});"
          f" --no-reuse job {plain_seconds:.1f} s = "
          f"{plain_seconds / bare:.3f}x\n"
          f"  PSNR against --no-reuse: lowest frame {min(scores):.1f} dB, mean "
          f"{np.mean(finite) if finite else float('inf'):.1f} dB ({len(scores) - len(finite)} "
          f"frames identical); per frame {' '.join(f'{s:.1f}' for s in scores)}", flush=True)


def measure_reach(model: str, size: int = 160) -> None:
    from draw import draw_cel

    from upscaler.executors.base import ExecutorOptions
    from upscaler.executors.registry import create_executor
    from upscaler.models.registry import resolve_model
    from upscaler.pixels import run_pixels

    ref = resolve_model(model)
    s = ref.scale or 1
    with create_executor("ncnn", ref, ExecutorOptions(threads=2)) as ex:
        cel = draw_cel(size, size)
        changed, c = cel.copy(), size // 2
        changed[c - 8:c + 8, c - 8:c + 8] = (200, 40, 60)
        a, b = (run_pixels(ex, x[None])[0].astype(int) for x in (cel, changed))
        diff = np.abs(a - b).max(axis=2)
        ys, xs = np.indices(diff.shape)
        lo, hi = (c - 8) * s, (c + 8) * s - 1
        away = np.maximum(np.maximum(np.maximum(lo - ys, ys - hi), np.maximum(lo - xs, xs - hi)),
                          0) / s
        print(f"{model}: receptive field {ref.receptive_field()} px, used {ref.dirty_reach()}")
        for levels in (0, 1, 2, 4):
            print(f"  a changed 16x16 block moves the output by > {levels} levels up to "
                  f"{away[diff > levels].max():.1f} input px away")
        for context in (4, 8, 12, 16, 20, 24, 32):
            part = cel[c - 16 - 2 * context:c + 16 + 2 * context,
                       c - 16 - 2 * context:c + 16 + 2 * context]
            out = run_pixels(ex, np.ascontiguousarray(part)[None])[0]
            inner = out[context * s:-context * s, context * s:-context * s]
            whole = a[(c - 16 - context) * s:(c + 16 + context) * s,
                      (c - 16 - context) * s:(c + 16 + context) * s]
            print(f"  {context:2d} px of context: {psnr(inner, whole):.1f} dB, worst "
                  f"{np.abs(inner.astype(int) - whole).max()} levels")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--crf", type=int, default=18, help="x264 CRF of the drawn source")
    parser.add_argument("--rounds", type=int, default=3, help="ncnn bare + job rounds")
    parser.add_argument("--clips", nargs="+", choices=list(CLIPS), default=list(CLIPS))
    parser.add_argument("--reach", action="store_true", help="measure the models' reach")
    parser.add_argument("--size", type=int, default=160, help="the drawn cel's side (--reach)")
    parser.add_argument("--model", nargs="+",
                        default=["realesr-animevideov3", "realesrgan-x4plus-anime"])
    args = parser.parse_args()
    if args.reach:
        for model in args.model:
            measure_reach(model, args.size)
        return
    print(f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f} at start; x264 CRF "
          f"{args.crf}")
    with tempfile.TemporaryDirectory() as tmp:
        for kind in args.clips:
            run_clip(kind, args.frames, args.crf, args.rounds, Path(tmp))
    print(f"load {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
