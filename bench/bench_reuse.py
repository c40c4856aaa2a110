"""Held-frame reuse, the acceptance run: a whole job against Tencent ncnn's bare model.

    python bench/bench_reuse.py [--frames 12] [--crf 18] [--repeat 3] [--model NAME] [--tile N]

Draws a 320x180 clip animated on threes (samples/anim.py) and encodes it with x264, so held
drawings carry coding noise. Then, in rounds, times

  - ncnn bare: a plain `ncnn.Net` with the model's .param/.bin, 2 threads, no Vulkan, running
    every decoded frame whole (inference only: loading and decoding are not counted), and
  - the job: `upscale clip.mkv -o out.mkv --model MODEL --crf 0` as a subprocess, from start
    to exit (decode, model, encode, mux; reuse on, the default),

and prints the median of each and the median of the rounds' ratios (target: at most 0.5).
Once, the same job runs with --no-reuse, and every output frame is compared with it: the
lowest frame PSNR (target >= 40 dB) and the whole clip's PSNR, from the mean squared error over
all frames (at most the mean of the frame PSNRs; target >= 45 dB). Last, a fade and a pan go
through both jobs: nothing may be reused and the outputs must match. Timings on a shared machine
vary: read the medians, not a single round.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "samples"))

from anim import scene, write_clip  # noqa: E402

from upscaler.media.video.probe import probe  # noqa: E402
from upscaler.media.video.reader import VideoReader  # noqa: E402
from upscaler.models.registry import resolve_model  # noqa: E402

SUMMARY = re.compile(r"held drawings reused: (\d+) frames whole, (\d+) of (\d+) tiles")


def decode(path: Path) -> list[np.ndarray]:
    with VideoReader(probe(path)) as reader:
        return list(reader)


def ncnn_bare(model: str, frames: list[np.ndarray]) -> float:
    """Seconds Tencent ncnn takes to upscale `frames` whole, 2 threads on the CPU."""
    import ncnn

    ref = resolve_model(model)
    net = ncnn.Net()
    net.opt.use_vulkan_compute = False
    net.opt.num_threads = 2
    net.load_param(str(ref.path))
    net.load_model(str(ref.bin_path))
    inputs = [np.ascontiguousarray(f.transpose(2, 0, 1), np.float32) / 255 for f in frames]
    start = time.perf_counter()
    for chw in inputs:
        mat = ncnn.Mat(chw)  # borrows chw; both stay alive until the extraction is done
        with net.create_extractor() as ex:
            ex.input("data", mat)
            _, out = ex.extract("output")
            np.array(out)
    return time.perf_counter() - start


def run_job(src: Path, dst: Path, model: str, *extra: str) -> tuple[float, str]:
    """Seconds the whole `upscale` job takes (lossless output), and what it wrote to stderr."""
    args = [sys.executable, "-m", "upscaler", str(src), "-o", str(dst), "--model", model,
            "--crf", "0", "--overwrite", *extra]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    start = time.perf_counter()
    done = subprocess.run(args, capture_output=True, text=True, env=env, check=False)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"upscale failed: {done.stderr.strip().splitlines()[-1]}")
    return seconds, done.stderr


def job(src: Path, dst: Path, model: str, *extra: str) -> tuple[float, tuple[int, ...] | None]:
    """Seconds the whole `upscale` job takes, and its reuse counts (None with --no-reuse)."""
    seconds, stderr = run_job(src, dst, model, *extra)
    found = SUMMARY.search(stderr)
    return seconds, tuple(int(v) for v in found.groups()) if found else None


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255**2 / mse)


def compare(a: Path, b: Path) -> tuple[float, float]:
    """(lowest frame PSNR, whole-clip PSNR) of two videos, frame by frame."""
    fa, fb = decode(a), decode(b)
    if len(fa) != len(fb):
        raise SystemExit(f"{a.name} has {len(fa)} frames, {b.name} {len(fb)}")
    return min(psnr(x, y) for x, y in zip(fa, fb, strict=True)), psnr(np.stack(fa), np.stack(fb))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--crf", type=int, default=18, help="x264 CRF of the drawn source")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--model", default="realesrgan-x4plus-anime")
    parser.add_argument("--tile", help="pass --tile to the job (default: the job's own plan)")
    parser.add_argument("--check-frames", type=int, default=6,
                        help="frames of the fade and pan clips (0 skips them)")
    args = parser.parse_args()
    extra = ("--tile", args.tile) if args.tile else ()
    print(f"{platform.node()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f} at start; "
          f"{args.model}, {args.frames} frames of 320x180 on threes, x264 CRF {args.crf}")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        src = write_clip(work / "threes.mkv", scene("threes", args.frames), args.crf)
        frames = decode(src)
        bare, ours = [], []
        counts = None
        for r in range(args.repeat):
            bare.append(ncnn_bare(args.model, frames))
            seconds, counts = job(src, work / "reuse.mkv", args.model, *extra)
            ours.append(seconds)
            print(f"round {r + 1}: ncnn bare {bare[-1]:6.1f} s, job {ours[-1]:6.1f} s, "
                  f"ratio {ours[-1] / bare[-1]:.3f}", flush=True)
        b, o = statistics.median(bare), statistics.median(ours)
        ratio = statistics.median(t / n for t, n in zip(ours, bare, strict=True))
        print(f"median of {args.repeat}: ncnn bare {b:.1f} s, job {o:.1f} s; median ratio of "
              f"a round {ratio:.3f} (target <= 0.5); reused {counts} (frames whole, tiles, "
              "of tiles)")
        seconds, _ = job(src, work / "plain.mkv", args.model, "--no-reuse", *extra)
        low, clip = compare(work / "reuse.mkv", work / "plain.mkv")
        print(f"--no-reuse job {seconds:.1f} s; reuse against it: lowest frame {low:.1f} dB "
              f"(target >= 40), clip {clip:.1f} dB (target >= 45)")
        for kind in ("fade", "pan") if args.check_frames else ():
            clip_src = write_clip(work / f"{kind}.mkv", scene(kind, args.check_frames), args.crf)
            _, kind_counts = job(clip_src, work / f"{kind}-reuse.mkv", args.model, *extra)
            job(clip_src, work / f"{kind}-plain.mkv", args.model, "--no-reuse", *extra)
            low, clip = compare(work / f"{kind}-reuse.mkv", work / f"{kind}-plain.mkv")
            print(f"{kind}: reused {kind_counts}; against --no-reuse lowest frame {low:.1f} dB, "
                  f"clip {clip:.1f} dB")
    print(f"load {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
