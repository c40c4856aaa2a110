"""--ray on one machine: a local run against Ray with 1 and with 2 workers, same clip, same run.

    python bench/bench_ray.py [--frames 48] [--segment-seconds 0.5] [--repeat 3] [--model NAME]

Draws a 320x180 clip animated on twos (samples/anim.py), encodes it with x264, starts a local
Ray with every CPU of the machine (timed on its own), and then, in rounds, times the whole job
from plan to mux through the CLI (in this process, --overwrite, the default CRF):

  - local:        upscale clip.mkv -o out.mkv
  - ray, 1 worker:  ... --ray --ray-workers 1 --ray-cpus N   (N = all CPUs: one worker, N threads)
  - ray, 2 workers: ... --ray --ray-workers 2 --ray-cpus N/2 (two workers, N/2 threads each)

and prints each one's median, and its median ratio to the local run of the same round. Every
output is checked to have the source's frame count. Timings on a shared machine vary: read the
medians, not a single round.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "samples"))

from anim import scene, write_clip  # noqa: E402

from upscaler.cli import main as upscale  # noqa: E402
from upscaler.media.video.probe import probe  # noqa: E402


def timed(args: list[str], frames: int) -> float:
    start = time.perf_counter()
    code = upscale(args)
    seconds = time.perf_counter() - start
    if code != 0:
        raise SystemExit(f"upscale {' '.join(args)} exited {code}")
    out = Path(args[args.index("-o") + 1])
    if probe(out).frame_count != frames:
        raise SystemExit(f"{out}: {probe(out).frame_count} frames, not {frames}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--segment-seconds", type=float, default=0.5)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--model", default="realesr-animevideov3")
    args = parser.parse_args()

    import ray

    cpus = os.cpu_count() or 2
    with tempfile.TemporaryDirectory() as tmp:
        clip = write_clip(Path(tmp) / "clip.mkv", scene("twos", args.frames))
        job = [str(clip), "-o", str(Path(tmp) / "out.mkv"), "--model", args.model,
               "--segment-seconds", str(args.segment_seconds), "--overwrite", "--quiet"]
        runs = {
            "local": job,
            "ray, 1 worker": [*job, "--ray", "--ray-workers", "1", "--ray-cpus", str(cpus)],
            "ray, 2 workers": [*job, "--ray", "--ray-workers", "2",
                               "--ray-cpus", str(max(1, cpus // 2))],
        }
        start = time.perf_counter()
        ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
        started = time.perf_counter() - start
        try:
            upscale([*runs["ray, 2 workers"]])  # warm: worker processes, the built model
            times: dict[str, list[float]] = {name: [] for name in runs}
            for _ in range(args.repeat):
                for name, run in runs.items():
                    times[name].append(timed(run, args.frames))
        finally:
            ray.shutdown()

    segments = len(range(0, args.frames, round(args.segment_seconds * 24000 / 1001)))
    print(f"{platform.processor() or platform.machine()}, {cpus} CPUs; {args.frames} frames "
          f"of 320x180 on twos, {args.model}, about {segments} segments of "
          f"{args.segment_seconds} s; local Ray started in {started:.1f} s")
    print("| run | median s | frames/s | vs local (median of rounds) |")
    print("| --- | --- | --- | --- |")
    for name, values in times.items():
        ratio = statistics.median(v / lo for v, lo in zip(values, times["local"], strict=True))
        median = statistics.median(values)
        print(f"| {name} | {median:.1f} | {args.frames / median:.2f} | {ratio:.2f} |")
    print("all runs:", {name: [round(v, 1) for v in values] for name, values in times.items()})


if __name__ == "__main__":
    main()
