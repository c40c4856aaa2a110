"""What the work around the model costs when the model is fast, and the default jobs against
Tencent's ncnn, in one run.

    python bench/bench_fast_path.py                   # every case, 2 rounds
    python bench/bench_fast_path.py --cases instant-4k --rounds 1

A fast model (a GPU, Apple's Neural Engine) leaves the pipeline to set the pace. To measure the
pipeline alone, the bench writes an "instant" model: an ONNX file holding one nearest-neighbour
Resize (4x, or 2x for 1080p -> 4K), which the job runs as a user's `--model FILE.onnx` on ONNX
Runtime. The clips are drawn animation (samples/draw.py), a new drawing every frame, x264 CRF
18 4:2:0. In rounds that visit every candidate in turn, it times:

- instant-4k: 960x540 -> 3840x2160, 48 frames, --preset ultrafast (instant-4k-fp16: the same
  with the model in float16, ONNX Runtime's precision on TensorRT and CUDA);
- instant-4k-10s: the same for 240 frames, which the job cuts into three segments of 4 s
  (the default --segment-seconds; an episode has 360), each encoded by an ffmpeg of its own:
  what the cuts cost, which the 2-second clips never show;
- instant-4k-10bit: instant-4k written as yuv420p10le (x264 High 10), an 8-bit source's
  deeper output, whose frames are 16-bit from the reader on;
- instant-1440: 640x360 -> 2560x1440, 96 frames, encoder defaults;
  each as (the job - ONNX Runtime alone on the same frames) / ffmpeg alone (decode, a 4x
  nearest scale and the same encode, one command);
- instant-1080: 1920x1080 -> 3840x2160 with the 2x instant model, 24 frames, ultrafast: the
  frames/s this pipeline can hand a fast model on this machine, and the job's peak memory;
- video-default: realesr-animevideov3 (the video default, auto -> ncnn), 640x360, 24 frames,
  defaults, against Tencent's ncnn running the bare model on the same frames (warm, in this
  process, 2 threads) plus ffmpeg alone making the output (decode, 4x scale, encode);
- x4plus-320: realesrgan-x4plus-anime, 320x180, 12 frames, against Tencent's ncnn bare.
  Both ncnn cases are also given against ncnn bare on the frames padded by the model's border
  as the job pads them (upscaler/borders.py): the pipeline's own share, without the padding.

The job runs in a fresh process as bench_job.py's does (Python's start-up and imports not
counted; probing, checks, model loading, the join and mux counted). Medians of the rounds'
ratios are printed with each stage's busy and waiting seconds, which say what bounds a job,
and the CPU-seconds of the job (its ffmpegs included), the model alone and ffmpeg alone: for
the near-free model also the ratio the job would reach with every core busy throughout, the
part of a gap that is CPU the machine does not have. No figure is asserted anywhere.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "samples"), str(ROOT / "bench")]

from bench_job import cpu_seconds, machine, tencent_runner, time_child  # noqa: E402

from upscaler.borders import pad_frame  # noqa: E402
from upscaler.media import ffmpeg  # noqa: E402
from upscaler.models.registry import resolve_model  # noqa: E402


@dataclass(frozen=True)
class Case:
    name: str
    width: int
    height: int
    frames: int
    model: str  # "instant" or a model name
    scale: int = 4
    preset: str | None = None
    half: bool = False  # the instant model in float16, as ONNX Runtime runs on a GPU
    pix_fmt: str = "yuv420p"  # the output's; a deeper one makes the job's frames 16-bit
    baseline: str = "ffmpeg"  # "ffmpeg": (job - model) / ffmpeg; "ncnn+ffmpeg"; "ncnn"


CASES = {case.name: case for case in (
    Case("instant-4k", 960, 540, 48, "instant", preset="ultrafast"),
    Case("instant-4k-fp16", 960, 540, 48, "instant", preset="ultrafast", half=True),
    Case("instant-4k-10s", 960, 540, 240, "instant", preset="ultrafast"),
    Case("instant-4k-10bit", 960, 540, 48, "instant", preset="ultrafast", pix_fmt="yuv420p10le"),
    Case("instant-1440", 640, 360, 96, "instant"),
    Case("instant-1080", 1920, 1080, 24, "instant", scale=2, preset="ultrafast"),
    Case("video-default", 640, 360, 24, "realesr-animevideov3", baseline="ncnn+ffmpeg"),
    Case("x4plus-320", 320, 180, 12, "realesrgan-x4plus-anime", baseline="ncnn"),
)}


def instant_model(path: Path, scale: int, half: bool = False) -> Path:
    """An ONNX model that upscales by repeating pixels: as near to free as a model gets. `half`:
    it takes and gives float16, as the models ONNX Runtime runs on TensorRT and CUDA do."""
    import onnx
    from onnx import TensorProto, helper

    kind = TensorProto.FLOAT16 if half else TensorProto.FLOAT
    scales = helper.make_tensor("scales", TensorProto.FLOAT, [4], [1, 1, scale, scale])
    graph = helper.make_graph(
        [helper.make_node("Resize", ["input", "", "scales"], ["output"], mode="nearest")],
        f"nearest{scale}x",
        [helper.make_tensor_value_info("input", kind, ["N", 3, "H", "W"])],
        [helper.make_tensor_value_info("output", kind, ["N", 3, "H2", "W2"])],
        initializer=[scales])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def make_clip(path: Path, width: int, height: int, frames: int) -> None:
    """Drawn animation, a new drawing every frame, as a typical source: x264 CRF 18, 4:2:0."""
    from draw import draw_cel

    args = [ffmpeg.ffmpeg_exe(), "-hide_banner", "-v", "error", "-y", "-f", "rawvideo",
            "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-framerate", "24000/1001",
            "-i", "pipe:0", "-c:v", "libx264", "-crf", "18", "-pix_fmt", "yuv420p", str(path)]
    with subprocess.Popen(args, stdin=subprocess.PIPE) as proc:
        assert proc.stdin is not None
        for i in range(frames):
            proc.stdin.write(draw_cel(height, width, t=i / frames).tobytes())
        proc.stdin.close()
        if proc.wait() != 0:
            raise SystemExit(f"could not make {path}")


def decoded(path: Path) -> list[np.ndarray]:
    """The clip's frames as float32 (3, H, W) in [0, 1], decoded as the job decodes them."""
    from upscaler.media.video.probe import probe
    from upscaler.media.video.reader import VideoReader

    with VideoReader(probe(path)) as reader:
        return [np.ascontiguousarray(f.transpose(2, 0, 1), np.float32) / 255 for f in reader]


def ffmpeg_alone(clip: Path, out: Path, case: Case) -> float:
    """ffmpeg doing what the job's ffmpeg processes do, with a nearest scale for the model."""
    args = [ffmpeg.ffmpeg_exe(), "-hide_banner", "-v", "error", "-y", "-i", str(clip),
            "-vf", f"scale=iw*{case.scale}:ih*{case.scale}:flags=neighbor", "-c:v", "libx264",
            "-pix_fmt", case.pix_fmt, *(["-preset", case.preset] if case.preset else []),
            str(out)]
    start = time.perf_counter()
    subprocess.run(args, check=True)
    return time.perf_counter() - start


def ort_runner(model: Path) -> Callable[[np.ndarray], None]:
    """ONNX Runtime alone on one frame, on the providers the job's executor takes (TensorRT or
    CUDA where this ONNX Runtime has them, else the CPU on all cores)."""
    import onnxruntime as ort

    from upscaler.executors.onnxruntime import available_providers

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(str(model), options, providers=available_providers())
    name = session.get_inputs()[0].name
    return lambda chw: session.run(None, {name: chw[None]})[0]  # type: ignore[no-any-return]


def time_frames(run: Callable[[np.ndarray], object], frames: list[np.ndarray]) -> float:
    run(frames[0])  # uncounted: thread pools, kernels, first-touch memory
    start = time.perf_counter()
    for chw in frames:
        run(chw)
    return time.perf_counter() - start


def run_case(case: Case, rounds: int, tmp: Path) -> dict[str, object]:
    clip, out, job_out = (tmp / f"{case.name}{suffix}.mkv" for suffix in ("", "-ff", "-job"))
    make_clip(clip, case.width, case.height, case.frames)
    frames = decoded(clip)
    if case.model == "instant":
        model_path = instant_model(tmp / f"{case.name}-nearest{case.scale}x.onnx", case.scale,
                                   case.half)
        model_run = ort_runner(model_path)
        if case.half:
            frames = [f.astype(np.float16) for f in frames]
        options: dict[str, object] = {"model": str(model_path), "executor": "onnxruntime"}
    else:
        ref = resolve_model(case.model)
        model_run = tencent_runner(ref, 2, None)
        options = {"model": case.model}
        # The job mirrors `border` pixels out on every side first (upscaler/borders.py):
        # ncnn bare on frames padded so is the model work the job cannot avoid.
        padded = [np.ascontiguousarray(pad_frame(f.transpose(1, 2, 0), ref.border)
                                       .transpose(2, 0, 1)) for f in frames]
    if case.preset:
        options["preset"] = case.preset
    if case.pix_fmt != "yuv420p":
        options["pix_fmt"] = case.pix_fmt
    times: dict[str, list[float]] = {"job": [], "model": [], "ffmpeg": []}
    cpu: dict[str, list[float]] = {"job": [], "model": [], "ffmpeg": []}  # CPU-seconds
    jobs: list[dict[str, object]] = []
    order = list(times)
    for round_ in range(rounds):
        for name in order[round_ % 3:] + order[:round_ % 3]:
            if name == "job":
                jobs.append(time_child("--child", str(clip), str(job_out), json.dumps(options)))
                times["job"].append(float(jobs[-1]["seconds"]))  # type: ignore[arg-type]
                cpu["job"].append(float(jobs[-1]["cpu_seconds"]))  # type: ignore[arg-type]
            elif name == "model":
                before = cpu_seconds()
                times["model"].append(time_frames(model_run, frames))
                cpu["model"].append(cpu_seconds() - before)
                if case.model != "instant":
                    times.setdefault("padded", []).append(time_frames(model_run, padded))
            elif case.baseline != "ncnn":
                before = cpu_seconds()
                times["ffmpeg"].append(ffmpeg_alone(clip, out, case))
                cpu["ffmpeg"].append(cpu_seconds() - before)
    if case.baseline == "ffmpeg":
        ratios = [(j - m) / f for j, m, f in zip(times["job"], times["model"], times["ffmpeg"],
                                                  strict=True)]
        what = "(job - model alone) / ffmpeg alone"
    elif case.baseline == "ncnn+ffmpeg":
        ratios = [j / (m + f) for j, m, f in zip(times["job"], times["model"], times["ffmpeg"],
                                                  strict=True)]
        what = "job / (Tencent ncnn bare + ffmpeg alone)"
    else:
        ratios = [j / m for j, m in zip(times["job"], times["model"], strict=True)]
        what = "job / Tencent ncnn bare"
    padded_ratios = [j / (p + (f if case.baseline == "ncnn+ffmpeg" else 0.0))
                     for j, p, f in zip(times["job"], times.get("padded", []),
                                        times["ffmpeg"] or [0.0] * rounds, strict=False)]
    return {"case": case, "times": times, "cpu": cpu, "jobs": jobs, "ratios": ratios,
            "what": what, "padded_ratios": padded_ratios}


def report(result: dict[str, object]) -> None:
    case: Case = result["case"]  # type: ignore[assignment]
    times: dict[str, list[float]] = result["times"]  # type: ignore[assignment]
    jobs: list[dict] = result["jobs"]  # type: ignore[assignment,type-arg]
    ratios: list[float] = result["ratios"]  # type: ignore[assignment]
    med = {k: statistics.median(v) for k, v in times.items() if v}
    model_name = case.model + (" fp16" if case.half else "")
    print(f"\n{case.name}: {case.width}x{case.height} -> {case.width * case.scale}x"
          f"{case.height * case.scale}, {case.frames} frames, {model_name}, "
          f"preset {case.preset or 'default'}")
    print("  median seconds: " + ", ".join(f"{k} {v:.2f}" for k, v in med.items())
          + f"; job {case.frames / med['job']:.2f} frames/s")
    print(f"  {result['what']}: per round {', '.join(f'{r:.2f}' for r in ratios)}; "
          f"median {statistics.median(ratios):.2f}")
    if result["padded_ratios"]:
        padded: list[float] = result["padded_ratios"]  # type: ignore[assignment]
        print(f"  the same against ncnn bare on frames padded by the model's border: per round "
              f"{', '.join(f'{r:.2f}' for r in padded)}; median {statistics.median(padded):.2f}")
    stages = {s: [statistics.median(j["stages"][s][i] for j in jobs) for i in (0, 1)]
              for s in ("decode", "model", "encode")}
    bound = max(stages, key=lambda s: stages[s][0])
    print("  job stages (busy/waiting s): " + ", ".join(
        f"{s} {b:.2f}/{w:.2f}" for s, (b, w) in stages.items())
        + f"; busiest: {bound}; executor {statistics.median(j['model_seconds'] for j in jobs):.2f}"
        f" s; before the first frame {statistics.median(j['phases'][0] for j in jobs):.2f} s")
    report_cpu(case, med, result["cpu"])  # type: ignore[arg-type]
    children = [j["children_mib"] for j in jobs if j["children_mib"]]
    print(f"  peak memory: job {statistics.median(j['rss_mib'] for j in jobs):.0f} MiB, largest "
          f"ffmpeg {statistics.median(children):.0f} MiB" if children else
          f"  peak memory: job {statistics.median(j['rss_mib'] for j in jobs):.0f} MiB")


def report_cpu(case: Case, seconds: dict[str, float], cpu: dict[str, list[float]]) -> None:
    """The CPU each side used, and for the near-free model the ratio the job would reach with
    every core busy all the time: how much of the gap to a goal is CPU this machine lacks."""
    med = {k: statistics.median(v) for k, v in cpu.items() if v}
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cores = cores or 1
    busy = med["job"] / (seconds["job"] * cores)
    line = (f"  CPU-seconds: job {med['job']:.2f} ({busy:.0%} of {cores} cores over its time)"
            + "".join(f", {k} alone {v:.2f}" for k, v in med.items() if k != "job"))
    if case.baseline == "ffmpeg":
        floor = (med["job"] / cores - seconds["model"]) / seconds["ffmpeg"]
        line += f"; with every core busy throughout: {floor:.2f}"
    print(line)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="*", default=list(CASES), choices=list(CASES))
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--frames", type=int, help="override every case's frame count")
    args = parser.parse_args()
    print(f"machine: {machine()}")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.cases:
            case = CASES[name]
            if args.frames:
                case = Case(**{**case.__dict__, "frames": args.frames})
            report(run_case(case, args.rounds, Path(tmp)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
