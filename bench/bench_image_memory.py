"""Peak memory of `upscale` on one large image, the way a user runs it.

Each size runs in a fresh process (`python -m upscaler`), and its peak resident set comes from
resource.getrusage(RUSAGE_CHILDREN) after it ends, so the figure is that run's alone. The
default model for images (realesrgan-x4plus-anime) is the one the issue's 3 GB target is about;
at about 0.02 input Mpixel/s on two cores a 3000x2000 image takes several minutes.

    python bench/bench_image_memory.py [--sizes 1500x1000,3000x2000] [--executor ncnn]
        [--model realesrgan-x4plus-anime] [--limit-mb N]

--limit-mb runs under an address-space limit (RLIMIT_AS, as `ulimit -v`), which the memory
budget then fits (executors/registry.py, _address_space_left).
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import PIL.Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "samples"))

from draw import draw_cel  # noqa: E402


def run(src: Path, dst: Path, model: str, executor: str, limit_mb: int) -> tuple[int, float]:
    """(exit code, seconds) of one run; its peak RSS is read by the caller."""
    def cap() -> None:
        if limit_mb:
            resource.setrlimit(resource.RLIMIT_AS, (limit_mb << 20, limit_mb << 20))

    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "upscaler", str(src), "-o", str(dst),
                           "--model", model, "--executor", executor, "--overwrite", "-q"],
                          cwd=ROOT, preexec_fn=cap, check=False)
    return done.returncode, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1500x1000,3000x2000")
    parser.add_argument("--model", default="realesrgan-x4plus-anime")
    parser.add_argument("--executor", default="ncnn")
    parser.add_argument("--limit-mb", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes.split(","):
            width, height = map(int, size.split("x"))
            src = Path(tmp) / f"in{size}.png"
            PIL.Image.fromarray(np.asarray(draw_cel(height, width))).save(src)
            before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
            code, seconds = run(src, Path(tmp) / f"out{size}.png", args.model, args.executor,
                                args.limit_mb)
            peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
            # ru_maxrss of children is the largest of any child so far: a smaller run after a
            # larger one shows the larger's figure, hence sizes in increasing order.
            note = "" if peak > before else " (no larger than an earlier run)"
            print(f"{size} {args.model} on {args.executor}: exit {code}, {seconds:.0f} s, "
                  f"peak {peak / (1 << 20):.2f} GiB{note}", flush=True)


if __name__ == "__main__":
    main()
