"""Peak memory per input pixel of each CPU executor, the figures behind registry.CPU_WORKSPACE.

    python bench/executor_memory.py [--size 128] [--models realesrgan-x4plus-anime ...]

Each executor runs one whole square tile in a fresh Python process; the process's peak resident
set after the run, less its peak after loading the model, divided by the tile's pixels, is what
the tile cost. It is printed beside the graph's estimate (registry.activation_bytes_per_pixel)
and their ratio. ncnn's pools keep freed blobs of every resolution, so its peak is the sum of
them; Linux counts it in ru_maxrss (KiB). Tiles too small for a model understate its figure
(the first blobs come from memory the process already has): 128 px suits x4plus-anime, 256-384
animevideov3.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MODELS = ("realesrgan-x4plus-anime", "realesr-animevideov3")
EXECUTORS = ("ncnn", "openvino", "onnxruntime")


def child(executor: str, model: str, size: int) -> None:
    import numpy as np

    from upscaler.executors.base import ExecutorOptions
    from upscaler.executors.registry import create_executor
    from upscaler.models.registry import resolve_model

    with create_executor(executor, resolve_model(model), ExecutorOptions(threads=2)) as ex:
        loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        ex.run(np.random.default_rng(0).random((1, 3, size, size), dtype=np.float32))
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"bytes_per_pixel": (peak - loaded) * 1024 / size**2}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128, help="square tile side (default 128)")
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--executors", nargs="+", default=list(EXECUTORS))
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], args.child[1], int(args.child[2]))
        return
    from upscaler.executors.registry import activation_bytes_per_pixel, unavailable_reason
    from upscaler.models.registry import resolve_model

    print(f"{'model':<26}{'executor':<13}{'bytes/px':>10}{'estimate':>10}{'ratio':>7}")
    for model in args.models:
        estimate = activation_bytes_per_pixel(resolve_model(model))
        for executor in args.executors:
            if unavailable_reason(executor) is not None:
                continue
            done = subprocess.run([sys.executable, __file__, "--child", executor, model,
                                   str(args.size)], capture_output=True, text=True, check=True)
            measured = json.loads(done.stdout.strip().splitlines()[-1])["bytes_per_pixel"]
            print(f"{model:<26}{executor:<13}{measured:>10.0f}{estimate:>10}"
                  f"{measured / estimate:>7.2f}", flush=True)


if __name__ == "__main__":
    main()
