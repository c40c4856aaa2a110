"""Input megapixels per second of every executor and precision that runs here.

    python bench/bench_executors.py --model realesrgan-x4plus-anime --size 128 --threads 2

Each executor runs the same random tile, once to warm up and then --repeat times, in rounds that
visit every executor in turn; the best time counts, since other processes sharing the CPU only
ever make a run slower. PSNR is against ONNX
Runtime in fp32 on the same tile, to show what each precision costs. ncnn on the original files is
the reference the others are compared with.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from upscaler.errors import UpscalerError
from upscaler.executors.base import Executor, ExecutorOptions, PrecisionName
from upscaler.executors.registry import EXECUTORS, create_executor, unavailable_reason
from upscaler.models.registry import DEFAULT_MODEL, ModelRef, resolve_model

PRECISIONS: dict[str, tuple[PrecisionName | None, ...]] = {
    "onnxruntime": ("fp32", "fp16"),
    "openvino": ("fp32", "fp16", "bf16"),
    "ncnn": ("fp32", "fp16", "bf16"),
    "coreml": (None,),
    "torch": (None,),
}


@dataclass(frozen=True)
class Result:
    executor: str
    precision: str
    mpx_per_s: float
    psnr_db: float


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(1 / mse)


def load_all(model: ModelRef, names: list[str], options: ExecutorOptions,
             ) -> dict[tuple[str, str], Executor]:
    """Every executor and precision that loads, keyed by (name, precision label)."""
    loaded: dict[tuple[str, str], Executor] = {}
    for name in names:
        reason = unavailable_reason(name)
        if reason is not None:
            print(f"{name:<12} unavailable: {reason}")
            continue
        for precision in PRECISIONS[name]:
            label = precision or "default"
            try:
                loaded[name, label] = create_executor(name, model,
                                                      replace(options, precision=precision))
            except UpscalerError as e:
                print(f"{name:<12} {label:<9} failed: {e}")
    return loaded


def time_round_robin(executors: dict[tuple[str, str], Executor], tile: np.ndarray,
                     repeat: int) -> tuple[dict[tuple[str, str], float],
                                           dict[tuple[str, str], np.ndarray]]:
    """Best seconds per executor; rounds interleave them so that load from other processes
    spreads over all of them rather than spoiling one."""
    outputs = {key: ex.run(tile) for key, ex in executors.items()}  # warm-up: kernels, buffers
    best = dict.fromkeys(executors, float("inf"))
    for _ in range(repeat):
        for key, executor in executors.items():
            start = time.perf_counter()
            executor.run(tile)
            best[key] = min(best[key], time.perf_counter() - start)
    return best, outputs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--size", type=int, default=128, help="square input tile side")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--executors", default=",".join(EXECUTORS),
                        help="comma-separated subset to run")
    args = parser.parse_args()

    model = resolve_model(args.model)
    tile = np.random.default_rng(0).random((1, 3, args.size, args.size), dtype=np.float32)
    reference_executor = create_executor(
        "onnxruntime", model, ExecutorOptions(precision="fp32", threads=args.threads,
                                              device="cpu"))
    try:
        reference = reference_executor.run(tile)
    finally:
        reference_executor.close()
    print(f"{model.name}, {args.size}x{args.size} input, threads={args.threads}, "
          f"best of {args.repeat}")
    executors = load_all(model, args.executors.split(","),
                         ExecutorOptions(threads=args.threads, tile=args.size))
    try:
        best, outputs = time_round_robin(executors, tile, args.repeat)
    finally:
        for executor in executors.values():
            executor.close()
    print(f"{'executor':<12} {'precision':<9} {'Mpx/s':>8} {'PSNR dB':>8}")
    for (name, label), seconds in best.items():
        result = Result(name, label, args.size**2 / seconds / 1e6,
                        psnr(outputs[name, label], reference))
        print(f"{result.executor:<12} {result.precision:<9} {result.mpx_per_s:>8.4f} "
              f"{result.psnr_db:>8.1f}")


if __name__ == "__main__":
    main()
