"""A folder of stills with a fast model: what the reading and writing around the model cost.

    python bench/bench_folder.py
    python bench/bench_folder.py --count 48 --size 540x960 --format webp --rounds 3
    python bench/bench_folder.py --size 1080x1920 --scale 2 --format jpg

Writes --count drawn cels (samples/draw.py) as PNG, then times, in fresh processes as a user
runs them: `upscale FOLDER -o OUT` with the instant model (bench_fast_path.instant_model, 4x
unless --scale says otherwise), and beside it, on the same outputs, writing them alone one
after another in one process (write_image): what a job that wrote one picture at a time could
not beat. Pictures/s and the job's CPU time are printed.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "samples"), str(ROOT / "bench")]

from bench_fast_path import instant_model  # noqa: E402
from draw import draw_cel  # noqa: E402
from PIL import Image  # noqa: E402

from upscaler.media.images import read_image, write_image  # noqa: E402


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=24)
    parser.add_argument("--size", default="540x960", help="HxW of the stills")
    parser.add_argument("--format", default="png")
    parser.add_argument("--scale", type=int, default=4, help="the instant model's scale")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    height, width = (int(v) for v in args.size.split("x"))
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        src = tmp / "stills"
        src.mkdir()
        for n in range(args.count):
            Image.fromarray(draw_cel(height, width, seed=n)).save(src / f"s{n:03d}.png")
        model = instant_model(tmp / "instant.onnx", args.scale)
        jobs, cpus = [], []
        for r in range(args.rounds):
            out = tmp / f"out{r}"
            before, start = children_cpu(), time.perf_counter()
            subprocess.run([sys.executable, "-m", "upscaler", str(src), "-o", str(out),
                            "--format", args.format, "--model", str(model), "--executor",
                            "onnxruntime", "-q"], check=True)
            jobs.append(time.perf_counter() - start)
            cpus.append(children_cpu() - before)
        outputs = sorted((tmp / "out0").iterdir())
        pictures = [read_image(p) for p in outputs]
        start = time.perf_counter()
        for n, picture in enumerate(pictures):
            write_image(picture, tmp / f"alone{n}.{args.format}")
        alone = time.perf_counter() - start
    job = statistics.median(jobs)
    print(f"{args.count} stills {width}x{height} -> {width * args.scale}x{height * args.scale} "
          f"{args.format}, "
          f"instant model")
    print(f"  job: {job:.2f} s (rounds {', '.join(f'{t:.2f}' for t in jobs)}), "
          f"{args.count / job:.1f} pictures/s, CPU {statistics.median(cpus):.2f} s")
    print(f"  writing the same outputs alone, one after another: {alone:.2f} s "
          f"({args.count / alone:.1f} pictures/s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
