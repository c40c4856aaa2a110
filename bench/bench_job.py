"""A whole video job against the bare model on the same frames, in one run.

    python bench/bench_job.py --size 320x180 --frames 12 --model realesrgan-x4plus-anime
    python bench/bench_job.py --size 32x18 --frames 2 --repeat 1     # the smoke test's run

It draws a clip of --frames animation frames (each different from the last), decodes them once,
and then, in rounds that visit every candidate in turn, each round starting one candidate later
(load from other processes then spreads over all of them rather than spoiling one), times:

- each executor that runs here, bare: `Executor.run` on each whole frame, nothing else;
- Tencent ncnn, bare: a plain `ncnn.Net` with the model's .param/.bin, 2 threads, no Vulkan,
  one extraction per frame; the independent reference for what the model costs; and once more
  on the frames mirror-padded by the model's border, as the job pads them: the same model work
  as the job's, so the job's ratio to it is the cost of everything around the model; and that
  once more in a fresh process, counting the model's loading and first frame as the job does;
- the whole job, `upscale CLIP -o OUT --model M` in a fresh process (decode, the model,
  encode, join and mux; Python's start-up and imports are not counted), with what each stage
  spent busy and waiting, the model's work (overlap and border-padding shares) and the peak
  memory of the process and of its largest ffmpeg child (Linux: VmHWM, see peak_rss_mib).

Every runner first runs the first frame once, uncounted (thread pools, kernels, Core ML's
package for the frame's shape); the job counts everything from reading the clip to the muxed
output, model loading included.

Medians of --repeat rounds are printed with the machine's CPU and memory. The job's ratio to the
best bare executor and to Tencent's ncnn is the overhead of everything around the model. No
figure here is asserted anywhere: speed targets are read off this table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "samples")]

from upscaler.borders import pad_frame  # noqa: E402
from upscaler.models.registry import DEFAULT_MODELS, ModelRef, resolve_model  # noqa: E402

TENCENT = "Tencent ncnn"
# The same model on the frames as the job pads them (borders.py): the job's model work, without
# the job. The padding itself is done before timing.
PADDED = f"{TENCENT} padded"
# The same again in a fresh process that counts what the job counts: loading the model and the
# first frame, whose memory the process pages in for the first time (about 1 s of 3 at 320x180).
FRESH = f"{TENCENT} padded, fresh"
JOB = "upscale job"


def machine() -> str:
    """CPU model, cores and memory, as this process sees them."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f
                       if line.startswith("model name"))
    except (OSError, StopIteration):
        if sys.platform == "darwin":
            cpu = subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"],
                                 capture_output=True, text=True, check=False).stdout.strip()
    ram = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / (1 << 30)
    return f"{cpu}, {os.cpu_count()} cores, {ram:.1f} GiB RAM, {platform.system()}"


def make_clip(path: Path, width: int, height: int, frames: int) -> None:
    """`frames` drawn cels of a moving figure, near-losslessly encoded: none repeats."""
    import cv2
    from draw import draw_cel

    from upscaler.media import ffmpeg

    with tempfile.TemporaryDirectory() as tmp:
        for i in range(frames):
            frame = draw_cel(height, width, t=i / max(frames, 1))
            cv2.imwrite(str(Path(tmp) / f"{i:05d}.png"), frame[..., ::-1])
        ffmpeg.run([ffmpeg.ffmpeg_exe(), "-hide_banner", "-v", "error", "-y",
                    "-framerate", "24000/1001", "-i", str(Path(tmp) / "%05d.png"),
                    "-c:v", "libx264", "-crf", "4", "-pix_fmt", "yuv444p", str(path)], path)


def decoded_frames(path: Path) -> list[np.ndarray]:
    """The clip's frames as float32 (3, H, W) RGB in [0, 1], decoded as the job decodes them."""
    from upscaler.media.video.probe import probe
    from upscaler.media.video.reader import VideoReader

    with VideoReader(probe(path)) as reader:
        return [np.ascontiguousarray(f.transpose(2, 0, 1), np.float32) / 255 for f in reader]


def executor_runner(name: str, model: ModelRef, threads: int,
                    first: np.ndarray) -> Callable[[np.ndarray], None]:
    from upscaler.executors.base import ExecutorOptions
    from upscaler.executors.registry import create_executor

    executor = create_executor(name, model, ExecutorOptions(threads=threads))

    def run(chw: np.ndarray) -> None:
        executor.run(chw[None])

    # Not counted: thread pools, kernels, and Core ML's package for the frame's shape.
    run(first)
    return run


def tencent_runner(model: ModelRef, threads: int,
                   first: np.ndarray | None) -> Callable[[np.ndarray], None]:
    import ncnn

    net = ncnn.Net()
    net.opt.use_vulkan_compute = False
    net.opt.num_threads = threads
    net.load_param(str(model.path))
    net.load_model(str(model.bin_path))
    in_name, out_name = net.input_names()[0], net.output_names()[0]

    def run(chw: np.ndarray) -> None:
        mat = ncnn.Mat(chw)  # borrows chw, which outlives the extraction
        with net.create_extractor() as extractor:
            extractor.input(in_name, mat)
            _, out = extractor.extract(out_name)
            np.array(out)

    if first is not None:
        run(first)
    return run


def cpu_seconds() -> float:
    """CPU time (user + system) this process and its reaped children (the job's ffmpegs)
    have used so far."""
    own, children = (resource.getrusage(who) for who in (resource.RUSAGE_SELF,
                                                          resource.RUSAGE_CHILDREN))
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def peak_rss_mib(pid: int | str = "self") -> float | None:
    """A process's peak resident set: VmHWM of its address space on Linux, None elsewhere.

    Not ru_maxrss: a child started by vfork and exec inherits its parent's peak into that
    figure (the kernel records the old address space's peak at exec), so a small ffmpeg
    started by a large Python process, or this job started by the harness, would report the
    parent's size.
    """
    try:
        status = Path(f"/proc/{pid}/status").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    kib = next((line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:")),
               None)
    return int(kib) / 1024 if kib is not None else None


def _comm(pid: str) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text(encoding="ascii", errors="replace")
    except OSError:
        return ""


class ChildPeaks:
    """Samples the peak RSS of this process's children (the ffmpeg decoders and encoders)
    every 50 ms on a thread; VmHWM keeps each one's peak, so sampling misses only what a child
    adds in its last 50 ms."""

    def __init__(self) -> None:
        self.peak_mib = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        tasks = Path("/proc/self/task")
        while not self._stop.wait(0.05):
            try:
                pids = {pid for task in tasks.iterdir()
                        for pid in (task / "children").read_text().split()}
            except OSError:
                return  # no /proc (macOS): children are not measured
            for pid in pids:
                # Between fork and exec a child still reports the job's own peak.
                if "ffmpeg" in _comm(pid):
                    self.peak_mib = max(self.peak_mib, peak_rss_mib(pid) or 0.0)

    def __enter__(self) -> ChildPeaks:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def run_tencent_child(model_name: str, frames_npy: str, threads: str) -> None:
    """In a fresh process: Tencent's ncnn on the frames of `frames_npy`, timed from loading
    the model to the last frame, as the job is; prints the seconds."""
    frames = np.load(frames_npy)
    start = time.perf_counter()
    run = tencent_runner(resolve_model(model_name), int(threads), None)
    for chw in frames:
        run(chw)
    print(json.dumps({"seconds": time.perf_counter() - start}))


def time_child(*args: str) -> dict[str, object]:
    done = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True,
                          check=False)
    if done.returncode != 0:
        raise SystemExit(f"{args[0]} failed:\n{done.stderr}")
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def run_job_child(src: str, dst: str, options_json: str) -> None:
    """In a fresh process: run the job as the CLI would and print what it cost as JSON."""
    from upscaler.config import Job, Options
    from upscaler.heap import keep_frame_buffers
    from upscaler.pipeline import Progress, run_job

    keep_frame_buffers()  # as the upscale command does
    options = Options(**json.loads(options_json), overwrite=True)
    marks: dict[int, float] = {}  # frames done -> when first reported

    def progress(state: Progress) -> None:
        if not state.stage:  # the decoding pass before the work counts frames of its own
            marks.setdefault(state.done, time.perf_counter())

    with ChildPeaks() as children:
        start, cpu_start = time.perf_counter(), cpu_seconds()
        state: Progress = run_job(Job(Path(src), Path(dst), options), progress)
        seconds, cpu = time.perf_counter() - start, cpu_seconds() - cpu_start
    stages = state.stages
    assert stages is not None
    own = peak_rss_mib()
    if own is None:  # macOS: ru_maxrss, in bytes there
        own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1 << 20)
    print(json.dumps({
        "seconds": seconds, "cpu_seconds": cpu, "frames": state.done,
        "stages": {name: [getattr(stages, name).busy, getattr(stages, name).waiting]
                   for name in ("decode", "model", "encode")},
        "frame_pixels": state.frame_pixels, "planned_pixels": state.planned_pixels,
        "model_pixels": state.model_pixels, "model_seconds": state.model_seconds,
        "rss_mib": own, "children_mib": children.peak_mib or None,
        # Checks and loading before the first frame; the first frame (memory paged in for the
        # first time); the encoder's flush, the join and mux after the last.
        "phases": [marks[0] - start, marks[1] - marks[0], start + seconds - marks[state.done]],
    }))


def time_frames(run: Callable[[np.ndarray], None], frames: list[np.ndarray]) -> float:
    start = time.perf_counter()
    for chw in frames:
        run(chw)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="320x180", help="clip width x height")
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--model", default=DEFAULT_MODELS["image"],
                        help="forced for the job too (default realesrgan-x4plus-anime)")
    parser.add_argument("--executors", nargs="*", default=["ncnn", "openvino", "onnxruntime"],
                        help="bare executors to time (torch also works)")
    parser.add_argument("--threads", type=int, default=2, help="for the bare runs")
    parser.add_argument("--job-args", default="{}",
                        help='JSON options for the job, e.g. \'{"tile": 0}\'')
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--tencent-child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        run_job_child(*args.child)
        return 0
    if args.tencent_child:
        run_tencent_child(*args.tencent_child)
        return 0

    from upscaler.executors.registry import unavailable_reason

    width, height = (int(v) for v in args.size.lower().split("x"))
    model = resolve_model(args.model)
    job_options = {"model": args.model, **json.loads(args.job_args)}
    with tempfile.TemporaryDirectory() as tmp:
        clip, out = Path(tmp) / "clip.mkv", Path(tmp) / "out.mkv"
        make_clip(clip, width, height, args.frames)
        frames = decoded_frames(clip)
        runners: dict[str, Callable[[np.ndarray], None]] = {}
        for name in args.executors:
            reason = unavailable_reason(name)
            if reason is None:
                runners[f"{name} bare"] = executor_runner(name, model, args.threads, frames[0])
            else:
                print(f"{name}: not timed, {reason}")
        inputs = {name: frames for name in runners}
        if unavailable_reason("ncnn") is None and model.kind == "ncnn":
            runners[f"{TENCENT} bare"] = tencent_runner(model, args.threads, frames[0])
            inputs[f"{TENCENT} bare"] = frames
            if model.border:
                padded = [np.ascontiguousarray(pad_frame(f.transpose(1, 2, 0), model.border)
                                               .transpose(2, 0, 1)) for f in frames]
                runners[PADDED] = tencent_runner(model, args.threads, padded[0])
                inputs[PADDED] = padded
                np.save(Path(tmp) / "padded.npy", np.stack(padded))
        seconds: dict[str, list[float]] = {name: [] for name in [*runners, JOB]}
        jobs: list[dict[str, object]] = []
        order = [*runners, *([FRESH] if PADDED in runners else []), JOB]
        seconds.update({name: [] for name in order if name not in seconds})
        for round_ in range(args.repeat):
            # Each round starts one candidate later, so that none always runs right after the
            # same neighbour or at the same point of a periodic load.
            for name in order[round_ % len(order):] + order[:round_ % len(order)]:
                if name == JOB:
                    jobs.append(time_child("--child", str(clip), str(out),
                                           json.dumps(job_options)))
                    seconds[JOB].append(float(jobs[-1]["seconds"]))  # type: ignore[arg-type]
                elif name == FRESH:
                    fresh = time_child("--tencent-child", model.name,
                                       str(Path(tmp) / "padded.npy"), str(args.threads))
                    seconds[FRESH].append(float(fresh["seconds"]))  # type: ignore[arg-type]
                else:
                    seconds[name].append(time_frames(runners[name], inputs[name]))
    report(args, model, len(frames), width, height, seconds, jobs)
    return 0


def report(args: argparse.Namespace, model: ModelRef, count: int, width: int, height: int,
           seconds: dict[str, list[float]], jobs: list[dict[str, object]]) -> None:
    median = {name: statistics.median(values) for name, values in seconds.items()}
    bare = [name for name in median if name not in (JOB, f"{TENCENT} bare", PADDED, FRESH)]
    best = min(bare, key=median.__getitem__) if bare else None
    tencent = median.get(f"{TENCENT} bare")
    print(f"machine: {machine()}")
    print(f"clip: {width}x{height}, {count} frames, {model.name}; job options "
          f"{args.job_args}; bare runs {args.threads} threads; medians of {args.repeat}")
    print(f"{'run':<30}{'seconds':>9}{'frames/s':>10}{'in Mpx/s':>10}{'/ best bare':>13}"
          f"{'/ Tencent':>11}")
    for name, value in sorted(median.items(), key=lambda item: item[1]):
        ratio_best = f"{value / median[best]:.3f}" if best else "-"
        ratio_tencent = f"{value / tencent:.3f}" if tencent else "-"
        print(f"{name:<30}{value:>9.2f}{count / value:>10.3f}"
              f"{count * width * height / value / 1e6:>10.4f}{ratio_best:>13}{ratio_tencent:>11}")

    def job_median(key: str) -> float:
        return statistics.median(float(job[key]) for job in jobs)  # type: ignore[arg-type]

    print("job stages (median seconds):", ", ".join(
        f"{stage} busy {statistics.median(j['stages'][stage][0] for j in jobs):.2f} "  # type: ignore[index]
        f"waiting {statistics.median(j['stages'][stage][1] for j in jobs):.2f}"  # type: ignore[index]
        for stage in ("decode", "model", "encode")))
    frame_px, planned, model_px = (job_median(k) for k in ("frame_pixels", "planned_pixels",
                                                            "model_pixels"))
    print(f"model work: overlap share {model_px / planned - 1:.1%}, border-pad share "
          f"{planned / frame_px - 1:.1%}; inside the executor {job_median('model_seconds'):.2f}"
          f" s of the job's {job_median('seconds'):.2f} s")
    before, first, after = (statistics.median(j["phases"][i] for j in jobs)  # type: ignore[index]
                            for i in range(3))
    print(f"job timeline (median seconds): {before:.2f} checks and loading before the first "
          f"frame, {first:.2f} for the first frame, {after:.2f} after the last (flush, mux)")
    children = [float(j["children_mib"]) for j in jobs if j["children_mib"]]  # type: ignore[arg-type]
    child_text = f"{statistics.median(children):.0f} MiB" if children else "not measured here"
    print(f"peak memory: job process {job_median('rss_mib'):.0f} MiB, largest ffmpeg child "
          f"{child_text}")
    print("seconds per round: " + "; ".join(
        f"{name} {' '.join(f'{v:.1f}' for v in values)}" for name, values in seconds.items())
        + "; the job's executor " + " ".join(f"{float(j['model_seconds']):.1f}"  # type: ignore[arg-type]
                                             for j in jobs))
    if tencent:
        ratios = [j / t for j, t in zip(seconds[JOB], seconds[f"{TENCENT} bare"], strict=True)]
        print(f"job / {TENCENT} bare per round: {', '.join(f'{r:.3f}' for r in ratios)}; "
              f"median {statistics.median(ratios):.3f}")
    for name, what in ((PADDED, "the same model work"),
                       (FRESH, "the same model work, loading and first frame counted")):
        if name in seconds:
            ratios = [j / t for j, t in zip(seconds[JOB], seconds[name], strict=True)]
            print(f"job / {name} ({what}) per round: "
                  f"{', '.join(f'{r:.3f}' for r in ratios)}; "
                  f"median {statistics.median(ratios):.3f}")


if __name__ == "__main__":
    sys.exit(main())
