"""How much `upscale compare` adds to the models' own work.

    python bench/bench_compare.py [--clip samples/clip.mkv] [--at 1 --at 2.5] [--rounds 3]

Two measurements per round, in fresh processes:
- the page: `python -m upscaler compare CLIP --models A,B --at T1 --at T2 -o PAGE -q`, timed
  from outside: everything the user waits for (interpreter start, imports, probing, decoding,
  both models, the output-size trial encodes, the PNGs and the page);
- the models alone: in a process that has read the same frames beforehand and tuned malloc as
  the command does (heap.py), each model loaded (as `Upscaler`, the job's own stages) and run
  on the frames, loading and running timed.
The target (issue 20): the page in under twice the models' time. The medians and their ratio
are printed. Rounds alternate which comes first, so neither always finds a warmer machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("realesr-animevideov3", "realesrgan-x4plus-anime")

_MODELS_ALONE = """
import json, sys, time
from upscaler.comparison import pick_frames
from upscaler.config import Options
from upscaler.heap import keep_frame_buffers
from upscaler.pipeline import Upscaler

keep_frame_buffers()  # as the command does
clip, models, at = sys.argv[1], sys.argv[2].split(","), sys.argv[3:]
_, _, frames = pick_frames(__import__("pathlib").Path(clip), at)
seconds = {}
for model in models:
    started = time.perf_counter()
    with Upscaler(Options(model=model), "video") as up:
        for frame in frames:
            up.upscale_frame(frame.pixels)
    seconds[model] = time.perf_counter() - started
print(json.dumps(seconds))
"""


def page_seconds(clip: Path, models: list[str], at: list[str], page: Path) -> float:
    args = [sys.executable, "-m", "upscaler", "compare", str(clip), "--models",
            ",".join(models), "-o", str(page), "-q", "--overwrite"]
    for t in at:
        args += ["--at", t]
    started = time.perf_counter()
    subprocess.run(args, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def models_seconds(clip: Path, models: list[str], at: list[str]) -> dict[str, float]:
    done = subprocess.run([sys.executable, "-c", _MODELS_ALONE, str(clip), ",".join(models),
                           *at], check=True, cwd=ROOT, capture_output=True, text=True)
    return json.loads(done.stdout.splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clip", type=Path, default=ROOT / "samples" / "clip.mkv")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--at", action="append", default=None)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    models = args.models.split(",")
    at = args.at or ["1", "2.5"]
    pages: list[float] = []
    alone: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        page = Path(tmp) / "page.html"
        for n in range(args.rounds):
            steps = [lambda: pages.append(page_seconds(args.clip, models, at, page)),
                     lambda: alone.append(sum(models_seconds(args.clip, models, at).values()))]
            for step in steps if n % 2 == 0 else steps[::-1]:
                step()
            print(f"round {n + 1}: page {pages[-1]:.2f} s, models alone {alone[-1]:.2f} s")
        size = page.stat().st_size
    page_s, alone_s = statistics.median(pages), statistics.median(alone)
    print(f"{args.clip.name}, {', '.join(models)}, at {', '.join(at)}: page {page_s:.2f} s "
          f"({size / 1e6:.1f} MB), models alone {alone_s:.2f} s: {page_s / alone_s:.2f}x "
          f"(target < 2x)")


if __name__ == "__main__":
    main()
