"""The `upscale` command: progress bars, one-line errors and exit codes around the jobs (its
arguments are cli_args.py's).

    upscale video.mp4 -o out.mp4
    upscale dir/ --format png
    upscale --config configs/job.yaml
    upscale models
    upscale compare video.mp4 --models realesr-animevideov3,realesrgan-x4plus-anime --at 1:30
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import logging
import os
import re
import signal
import sys
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from tqdm import tqdm

from upscaler.cli_args import PROG, as_typed, command_parser, compare_parser, models_parser
from upscaler.config import (
    Job,
    Options,
    RaySettings,
    load_jobs,
    load_ray_settings,
    names_folder,
    option_fields,
    validate_options,
)
from upscaler.errors import (
    DiskFilledError,
    DiskFullError,
    Interrupted,
    MediaError,
    PlanError,
    UpscalerError,
    UsageError,
    job_error,
)
from upscaler.heap import keep_frame_buffers
from upscaler.job.plan import Task, plan_jobs
from upscaler.job.resume import work_dir
from upscaler.job.space import is_disk_full
from upscaler.media import ffmpeg
from upscaler.pipeline import Progress, ProgressCallback, Upscalers, run_task

if TYPE_CHECKING:
    from upscaler.models.registry import ModelRef

# How long after Ctrl-C or SIGTERM the process may take to end on its own; see _stop_on_signals.
HARD_EXIT_AFTER = 1.0
# The same with --ray: the driver runs no model, and stopping a local Ray takes seconds.
HARD_EXIT_AFTER_RAY = 15.0


def _out(text: str) -> None:
    """A line on standard output; where it cannot be written (`> /dev/full`, a full disk),
    our one-line error instead of a traceback. A reader that left (`| head`) stays a
    BrokenPipeError, which main() ends quietly."""
    with _stdout_errors():
        print(text)


def _out_flush() -> None:
    with _stdout_errors():
        sys.stdout.flush()


@contextlib.contextmanager
def _stdout_errors() -> Iterator[None]:
    try:
        yield
    except BrokenPipeError:
        raise
    except OSError as e:
        raise MediaError(f"cannot write to standard output: {e.strerror or e}") from e


def _compare(argv: Sequence[str]) -> int:
    from upscaler.compare_page import page_path, write_page
    from upscaler.comparison import compare

    args = compare_parser().parse_args(argv)
    given = {f.name: getattr(args, f.name) for f in option_fields()
             if getattr(args, f.name, None) is not None}
    options = dataclasses.replace(Options(), **given)
    try:
        validate_options(options)
    except ValueError as e:
        raise as_typed(e) from e
    models = [m.strip() for m in args.models.split(",") if m.strip()] if args.models else None
    if args.models is not None and not models:
        raise UsageError("--models names no model")
    output = Path(args.output).expanduser() if args.output else None
    page = page_path(args.input.expanduser(), output, options.overwrite,
                     names_folder(args.output or ""))
    bars = _Bars(args.quiet, 1)
    try:
        result = compare(args.input, models, args.at, options, bars)
    finally:
        bars.close()
    size = write_page(result, page, overwrite=options.overwrite, full=args.full)
    models_, frames = len(result.results), len(result.frames)
    _out(printable(f"{page} ({size / 1e6:.1f} MB): {models_} model{'s' * (models_ != 1)} on "
                  f"{frames} frame{'s' * (frames != 1)}"))
    _out_flush()
    return 0


def _given_options(args: argparse.Namespace) -> dict[str, object]:
    return {f.name: getattr(args, f.name) for f in option_fields()
            if getattr(args, f.name) is not None}


# Seconds between a progress bar's redraws when stderr is not a terminal (a log file).
LOGGED_INTERVAL = 30.0


class _PartsBar(tqdm):
    """A bar whose count may stand part-way through a unit, and shows the whole units done
    (1/1 only once the picture is)."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} "
                                    "[{elapsed}<{remaining}, {rate_fmt}{postfix}]",
                         **kwargs)  # type: ignore[arg-type]

    @property
    def format_dict(self) -> dict[str, object]:
        values = super().format_dict
        values["n_fmt"] = str(int(values["n"]))
        return values


class _Bars:
    """Draws tqdm bars from the pipeline's progress callbacks.

    A video job reports from its transform thread, which may finish one more frame after a
    Ctrl-C has stopped the job: once `close` has run, such a late report draws nothing (it
    had drawn a fresh bar below the message saying what was kept).
    """

    def __init__(self, quiet: bool, jobs: int) -> None:
        self.quiet = quiet
        # Into a log file rather than a terminal, every tenth of a second of an episode's
        # hours of work would be a line of its own: there a bar is redrawn twice a minute.
        self.interval = 0.1 if sys.stderr.isatty() else LOGGED_INTERVAL
        self.outer = None if quiet or jobs < 2 else tqdm(total=jobs, unit="job", position=0,
                                                         mininterval=self.interval)
        self.inner: tqdm | None = None
        self._stage = ""  # the inner bar's (Progress.stage)
        self._lock = threading.Lock()
        self._closed = False

    def __call__(self, state: Progress) -> None:
        if self.quiet:
            return
        with self._lock:
            if not self._closed:
                self._draw(state)

    def _draw(self, state: Progress) -> None:
        if self.inner is not None and state.stage != self._stage:
            self.inner.close()  # a step before the work (a video's check) gives way to it
            self.inner = None
        if self.inner is None:
            # Pictures and frames count in parts (Progress.part), shown as whole ones done.
            bar = _PartsBar if state.total else tqdm
            label = f"{state.label}, {state.stage}" if state.stage else state.label
            self.inner = bar(total=state.total or None, unit=state.unit,
                             desc=printable(label), initial=0,
                             position=1 if self.outer else 0,
                             leave=self.outer is None and not state.stage,
                             dynamic_ncols=True, mininterval=self.interval)
            self._stage = state.stage
        if state.total and self.inner.total != state.total:
            self.inner.total = state.total
        if state.tiles:
            self.inner.set_postfix_str(f"reused {state.frames_reused} frames, "
                                       f"{state.tiles_reused}/{state.tiles} tiles, computed "
                                       f"{state.computed_share:.0%} of the pixels",
                                       refresh=False)
        # Never back: a folder's picture counts as done once written, which may be after
        # the next one's parts have begun.
        ahead = state.finished + state.part if state.part else state.finished  # ints: n/N
        self.inner.update(max(0, ahead - self.inner.n))

    def job_done(self) -> None:
        if self.inner is not None:
            self.inner.close()
            self.inner = None
        if self.outer is not None:
            self.outer.update(1)

    def say(self, line: str) -> None:
        """A line on stderr that does not tear the bars."""
        tqdm.write(printable(line), file=sys.stderr)

    def close(self) -> None:
        """Ends the bars, also one a stopped job left open, so that what is printed after
        them starts on a line of its own."""
        with self._lock:
            self._closed = True
            if self.inner is not None:
                self.inner.close()
                self.inner = None
            if self.outer is not None:
                self.outer.close()


def _unfinished_note(task: Task) -> str:
    """For a skipped video whose output appeared before an earlier run could join its
    segments: where they wait (they are not deleted unasked, and were otherwise never named
    again)."""
    if task.kind != "video":
        return ""
    folder = work_dir(task.output, task.options.work_dir)
    return f"; an earlier run's segments wait in {folder}" if folder.is_dir() else ""


# Control characters, which a file's name may hold (a line break, an escape sequence), and
# the bytes of a name that is not UTF-8, which Python holds as lone surrogates.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\udc80-\udcff]")


def printable(text: str) -> str:
    """`text` as one line of a terminal: control characters written as Python writes them in a
    string (`\\n`), so that a file named with a line break cannot split our one-line messages
    or move the terminal's cursor, and a name's bytes that are not UTF-8 as `\\xff` (a
    surrogate cannot be written to a strict UTF-8 stream at all)."""
    return _CONTROL.sub(_escaped, text)


def _escaped(match: re.Match[str]) -> str:
    char = match.group()
    if "\udc80" <= char <= "\udcff":
        return f"\\x{ord(char) - 0xDC00:02x}"
    return char.encode("unicode_escape").decode("ascii")


class _LogLine(logging.Handler):
    """Shows the library's log (a video resuming, say) as `upscale: ...` lines above the bars."""

    def emit(self, record: logging.LogRecord) -> None:
        tqdm.write(printable(f"{PROG}: {record.getMessage()}"), file=sys.stderr)


def _show_log() -> None:
    logger = logging.getLogger("upscaler")
    logger.setLevel(logging.INFO)
    if not any(isinstance(h, _LogLine) for h in logger.handlers):
        logger.addHandler(_LogLine())


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[list[int]]:
    """Ctrl-C and SIGTERM stop the job alike: exit 130 or 143, ffmpeg children ended, finished
    video segments kept for a rerun.

    The first signal raises Interrupted in the main thread, where the job cleans up and says
    what it kept. A model call already running in native code cannot be cut short, so should
    the process still be alive HARD_EXIT_AFTER seconds later it ends at once: by then the
    finished segments are on disk and nothing else is being written. Later signals are ignored
    while that happens. Yields the signal that came, if one did.
    """
    fired: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield fired
        return

    def stop(signum: int, frame: FrameType | None) -> None:
        if fired:
            return
        fired.append(signum)
        ray = sys.modules.get("ray")
        on_ray = ray is not None and getattr(ray, "is_initialized", lambda: False)()
        timer = threading.Timer(HARD_EXIT_AFTER_RAY if on_ray else HARD_EXIT_AFTER,
                                _hard_exit, args=(128 + signum,))
        timer.daemon = True
        timer.start()
        raise Interrupted("interrupted", 128 + signum)

    signals = [signal.SIGINT, signal.SIGTERM]
    previous = {sig: signal.signal(sig, stop) for sig in signals}
    try:
        yield fired
    finally:
        if not fired:  # after a signal the process is ending; keep ignoring repeats
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def _hard_exit(code: int) -> None:
    ffmpeg.kill_all()
    sys.stderr.flush()
    sys.stdout.flush()
    os._exit(code)


def _ray_input(args: argparse.Namespace) -> None:
    """`upscale --ray clip.mkv`: argparse gives the (first) input to --ray as its address; an
    "address" that is a file or folder here was meant as an input."""
    if args.ray and Path(args.ray).expanduser().exists():
        args.inputs, args.ray = [Path(args.ray), *args.inputs], ""


def _list_models(argv: Sequence[str]) -> int:
    from upscaler.models import cache
    from upscaler.models.registry import DEFAULT_MODELS, MODELS, resolve_model

    args, unknown = models_parser().parse_known_args(argv)
    if unknown:
        raise UsageError(f"upscale models takes only --clear-cache, not {' '.join(unknown)}"
                         + ("; to upscale the folder named models, give it as ./models"
                            if Path("models").is_dir() else ""))
    if args.clear_cache:
        _out(f"removed {cache.clear()} built model(s) from {cache.cache_dir()}")
        _out_flush()
        return 0
    _out(f"built models are cached in {cache.cache_dir()}")
    for name, spec in MODELS.items():
        ref = resolve_model(name)
        kinds = [kind for kind, default in DEFAULT_MODELS.items() if default == name]
        mark = f" (default for {' and '.join(k + 's' for k in kinds)})" if kinds else ""
        # Million multiply-accumulates per input pixel: the model's work, whatever runs it.
        cost = ref.graph().macs_per_pixel() / 1e6
        _out(f"{name}{mark}  x{spec.scale}  {spec.family}  {cost:.2f} MMAC/px  "
             f"{spec.description}")
        _out(f"    source: {ref.path}")
        _out(f"    {_reach_line(ref)}")
        if ref.repeats and spec.scale > 1:
            _out(f"    --scale {spec.scale ** 2}, {spec.scale ** 3}...: runs again on its own "
                 "output for each step, as waifu2x's programs do")
        for built in cache.cached_builds(ref):
            _out(f"    built:  {built}")
    _out_flush()
    return 0


def _reach_line(ref: ModelRef) -> str:
    """How far the model sees, and the margins of the dirty regions reuse recomputes."""
    field = ref.receptive_field()
    seen = "the whole frame" if field is None else f"{field:g} px"
    reach = ref.dirty_reach()
    if reach is None:
        return f"receptive field: {seen}; a changed tile is recomputed whole"
    return (f"receptive field: {seen}; dirty regions grow {reach.change} px around a change "
            f"and run with {reach.context} px of context")


def _jobs(args: argparse.Namespace) -> list[Job]:
    given = _given_options(args)
    if args.config is not None:
        if args.inputs:
            raise UsageError("give either --config or an input, not both")
        if args.output is not None:
            raise UsageError("-o goes with an input; a job file names each job's output")
        # Command-line options act as defaults under the file's own.
        return load_jobs(args.config, dataclasses.replace(Options(), **given))
    if not args.inputs:
        raise UsageError("no input given (an image, a folder or a video; or --config FILE)")
    options = dataclasses.replace(Options(), **given)
    try:
        validate_options(options)
    except ValueError as e:
        raise as_typed(e) from e
    output = Path(args.output) if args.output else None
    folder = names_folder(args.output or "")
    several = len(args.inputs) > 1
    # Several inputs go into a folder: `-o out` is one, `-o out.mkv` looks like a file.
    if several and output is not None and output.suffix and not (
            folder or output.expanduser().is_dir()):
        raise UsageError(f"{len(args.inputs)} inputs go into a folder, and -o names a file: "
                         f"end it with / to make it one ({args.output}/)", output)
    return [Job(src, _batch_output(src, output) if several else output, options,
                output_is_folder=folder or several)
            for src in args.inputs]


def _batch_output(src: Path, output: Path | None) -> Path | None:
    """Where one of several inputs goes in the folder -o names: a folder into a folder of its
    own name there (season1/ and season2/ both hold 001.png), files into the folder itself."""
    if output is None or not src.expanduser().is_dir():
        return output
    return output / Path(os.path.abspath(src.expanduser())).name


# --ray's words for no cluster to join: a Ray started here.
_LOCAL_RAY = ("none", "local")


def _ray_settings(args: argparse.Namespace) -> RaySettings | None:
    """Ray's settings for the run: the job file's `ray:`, then --ray, --ray-workers and
    --ray-cpus over it; None for a run on this machine alone."""
    settings = load_ray_settings(args.config) if args.config is not None else None
    given = {k: v for k, v in (("workers", args.ray_workers), ("cpus", args.ray_cpus))
             if v is not None}
    if args.ray is None and settings is None:
        if given:
            raise UsageError("--ray-workers and --ray-cpus go with --ray")
        return None
    if args.ray and args.ray.lower() not in _LOCAL_RAY:
        given["address"] = args.ray
    try:
        return dataclasses.replace(settings or RaySettings(), **given)
    except ValueError as e:
        raise UsageError(str(e)) from e


class _Tally:
    """Counts outputs over a batch: a folder job counts its images, other jobs count one."""

    def __init__(self) -> None:
        self.done = self.skipped = self.failed = 0
        self.failures: list[UpscalerError] = []

    def add(self, task: Task, state: Progress) -> None:
        self.failures += state.failures
        if task.kind == "folder":
            self.done += state.done
            self.skipped += state.skipped
            self.failed += len(state.failures)
        elif state.skipped:
            self.skipped += 1
        else:
            self.done += 1

    def fail(self, error: UpscalerError, jobs: int = 1) -> None:
        """`error` ended `jobs` jobs (one line for several that a full disk left unstarted)."""
        self.failures.append(error)
        self.failed += jobs

    def summary(self) -> str:
        skipped = f"{self.skipped} skipped"
        if self.skipped:
            skipped += " (outputs exist; --overwrite redoes them)"
        return f"{PROG}: {self.done} done, {skipped}, {self.failed} failed"


def _run(tasks: list[Task], bars: _Bars,
         run: Callable[[Task, ProgressCallback], Progress] = run_task) -> int:
    tally = _Tally()
    # Disks found full: a job writing to one would run its model only to fail alike
    # (`upscale *.png -o out/`, a job each), so those after are not started.
    full: set[int] = set()
    not_started = 0
    for task in tasks:
        disk = _disk_of(task.output)
        if disk in full:
            not_started += 1
            bars.job_done()
            continue
        for note in task.notes:
            bars.say(f"{PROG}: {note}")
        try:
            state = run(task, bars)
        except Exception as e:
            # A failed job is reported and the batch goes on with the next one; memory that
            # ran out where no stage said so is this job's error too.
            error = job_error(e, task.input)
            if error is None:
                raise
            error = _located(error, task)
            bars.job_done()
            bars.say(f"{PROG}: error: {error}")
            tally.fail(error)
            if _filled(error):
                full.add(disk)
            continue
        bars.job_done()
        for failure in state.failures:
            bars.say(f"{PROG}: error: {_located(failure, task)}")
            if _filled(failure):
                full.add(disk)
        if state.skipped and task.kind != "folder":
            bars.say(f"{PROG}: {task.output}: exists, skipped (--overwrite redoes it"
                     f"{_unfinished_note(task)})")
        if state.tiles and not bars.quiet:
            bars.say(f"{PROG}: {state.label}: held drawings reused: {state.frames_reused} "
                     f"frames whole, {state.tiles_reused} of {state.tiles} tiles; the model "
                     f"ran on {state.computed_share:.1%} of the pixels")
        if state.stages is not None and state.stages.model.busy and not bars.quiet:
            bars.say(f"{PROG}: {state.label}: {state.stages.report()}")
        tally.add(task, state)
    if not_started:
        error = DiskFullError(f"{not_started} more job{'s' * (not_started != 1)} not started: "
                              "their outputs go to the disk found full; free some space, and "
                              "the same command does the rest")
        bars.say(f"{PROG}: error: {error}")
        tally.fail(error, jobs=not_started)
    if len(tasks) > 1 or any(task.kind == "folder" for task in tasks):
        bars.say(tally.summary())
    return max((f.exit_code for f in tally.failures), default=0)


def _located(error: UpscalerError, task: Task) -> UpscalerError:
    """`error` with the job file's line in front, for a job that came from one: a batch's
    failure at run time is found in the file as its mistakes before any work are."""
    return error if task.where is None else error.located(*task.where)


def _filled(error: BaseException) -> bool:
    """Whether `error` is a write that found its disk full (a single picture's job says so
    in its OSError's words)."""
    return isinstance(error, DiskFilledError) or is_disk_full(error)


def _disk_of(path: Path) -> int:
    """The file system `path` is (or will be) written on: its nearest existing folder's."""
    for folder in (path, *path.parents):
        with contextlib.suppress(OSError):
            return os.stat(folder).st_dev
    return -1


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    keep_frame_buffers()  # see heap.py
    _quiet_libraries()
    try:
        # Ray, where a run uses it, stops after the run's last line is out.
        with _stop_on_signals() as fired, contextlib.ExitStack() as cluster:
            code = _main(argv, cluster, fired)
    except BrokenPipeError:
        # What reads our output left (`upscale models | head`): the rest goes nowhere, and
        # Python's own flush at exit would fail again on the same pipe.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, as the shell reports a program that signal ended
    # A signal that came while Ray waited reaches the job as a bare KeyboardInterrupt (130).
    return 128 + fired[0] if fired and code == 130 else code


def _quiet_libraries() -> None:
    """OpenCV's own log lines (under a memory limit: "Can't spawn new thread") are not for our
    users: what fails in OpenCV reaches us as an exception, which becomes our one line. Nor
    is Pillow's warning for a picture of 89 to 179 megapixels (its bomb limit warns, then
    refuses at twice that, which becomes our one line), two lines of Python's in the middle of
    a folder job's bar."""
    import cv2
    import PIL.Image

    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    warnings.filterwarnings("ignore", category=PIL.Image.DecompressionBombWarning)


def _parse(argv: list[str]) -> argparse.Namespace:
    """The command's arguments, intermixed (`upscale a.mkv -o out/ b.mkv`, as a shell's glob and
    a user's edit give it), and after `--` inputs only (a file named `-x.png`): argparse's
    intermixed parsing did not honour `--` before Python 3.12."""
    cut = argv.index("--") if "--" in argv else len(argv)
    args = command_parser().parse_intermixed_args(argv[:cut])
    args.inputs = [*args.inputs, *map(Path, argv[cut + 1:])]
    return args


def _main(argv: list[str], cluster: contextlib.ExitStack, fired: Sequence[int] = ()) -> int:
    """The command; `fired`: the signals _stop_on_signals took, which an error that follows
    one is reported as: a library that an interrupt reaches in the middle of its import may
    turn it into an error of its own ("onnxruntime is not installed (initialization
    failed)")."""
    try:
        # Subcommands are names, as the README gives them: a folder named like one is
        # given as a path (./models).
        if argv[:1] == ["models"]:
            return _list_models(argv[1:])
        if argv[:1] == ["compare"]:
            return _compare(argv[1:])
        args = _parse(argv)
        _ray_input(args)
        jobs = _jobs(args)
        ray = _ray_settings(args)
        if ray is not None:
            from upscaler import ray_runner

            ray_runner.require_ray()  # before any work: the install hint, exit 2
        tasks = plan_jobs(jobs)
        _show_log()
        bars = _Bars(args.quiet, len(tasks))
        try:
            if ray is None:
                upscalers = cluster.enter_context(Upscalers())  # the model stays for the next
                return _run(tasks, bars, functools.partial(run_task, upscalers=upscalers))
            return _run(tasks, bars, cluster.enter_context(ray_runner.RayRunner(ray)))
        finally:
            bars.close()
    except UpscalerError as e:
        if fired:
            print(f"{PROG}: interrupted", file=sys.stderr)
            return 128 + fired[0]
        for error in e.errors if isinstance(e, PlanError) else [e]:
            print(printable(f"{PROG}: error: {error}"), file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt as e:
        print(printable(f"{PROG}: {str(e) or 'interrupted'}"), file=sys.stderr)
        return getattr(e, "exit_code", 130)


if __name__ == "__main__":
    sys.exit(main())
