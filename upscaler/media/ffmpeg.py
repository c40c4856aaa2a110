"""Find the ffmpeg and ffprobe binaries and run them, turning failures into MediaError.

This is the only module that starts subprocesses. Binaries are looked up in this order:
`UPSCALER_FFMPEG` (a path to an ffmpeg binary; an ffprobe beside it is used too), then ffmpeg and
ffprobe on PATH, then the ffmpeg that the imageio-ffmpeg wheel ships (it has no ffprobe, so probing
then goes through PyAV, see probe.py). A system ffmpeg is preferred because it is the one the user
keeps up to date and may have built with hardware encoders.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import functools
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from upscaler.errors import MediaError
from upscaler.heap import environment
from upscaler.media.ffmpeg_facts import remembered

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

ENV_FFMPEG = "UPSCALER_FFMPEG"

# Every Process still running, so that an interrupt can end them all at once.
_LIVE: weakref.WeakSet[Process] = weakref.WeakSet()
_LIVE_LOCK = threading.Lock()
_PR_SET_PDEATHSIG = 1


def _load_prctl() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _load_prctl()


def _die_with(parent: int) -> None:
    """Runs in the child between fork and exec: end it when its parent dies."""
    _PRCTL(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before the line above took effect
        os._exit(1)


def _spawn_options() -> dict[str, Any]:
    """Popen arguments that tie a child's life to ours.

    The child gets a session of its own, so a Ctrl-C at the terminal reaches only us and we end
    it, instead of ffmpeg stopping on its own and its error being reported first. On Linux a
    child started from the main thread is also killed when we die, even by SIGKILL: the
    parent-death signal fires when the *thread* that started the child ends, which for the
    main thread is the end of the process. Children of worker threads (decoders and encoders
    on pipes) are bound by their pipes instead: a decoder dies writing to a closed pipe, an
    encoder sees the end of its input and finishes a file whose name is never used.
    """
    if os.name != "posix":
        return {}
    options: dict[str, Any] = {"start_new_session": True}
    if _PRCTL is not None and threading.current_thread() is threading.main_thread():
        options["preexec_fn"] = functools.partial(_die_with, os.getpid())
    return options


def kill_all() -> None:
    """End every ffmpeg this process started that is still running (on an interrupt)."""
    with _LIVE_LOCK:
        live = list(_LIVE)
    for proc in live:
        proc.kill()


def ffmpeg_exe() -> str:
    """The ffmpeg binary to use; MediaError when there is none at all."""
    override = os.environ.get(ENV_FFMPEG)
    if override:
        if not Path(override).is_file():
            raise MediaError(f"{ENV_FFMPEG} does not name a file", override)
        return override
    found = shutil.which("ffmpeg")
    if found:
        return found
    try:
        import imageio_ffmpeg

        return str(imageio_ffmpeg.get_ffmpeg_exe())
    except (ImportError, RuntimeError) as e:
        raise MediaError("no ffmpeg found: install ffmpeg or the imageio-ffmpeg package") from e


def file_url(path: str | os.PathLike[str]) -> str:
    """`path` as ffmpeg (and PyAV) open it as a file whatever its name: a colon before any
    slash made it a protocol ("S1:E1/ep.mkv": Protocol not found; "pipe:x.mp4" read stdin)."""
    return "file:" + os.fspath(path)


def ffprobe_exe() -> str | None:
    """An ffprobe that matches ffmpeg_exe(), or None when there is none (the pip-only case)."""
    override = os.environ.get(ENV_FFMPEG)
    if override:
        sibling = Path(override).with_name(Path(override).name.replace("ffmpeg", "ffprobe"))
        return str(sibling) if sibling != Path(override) and sibling.is_file() else None
    return shutil.which("ffprobe")


# Lines ffmpeg adds after the real cause as a failure spreads through its threads.
AFTERMATH = ("Error sending frames to consumers", "Task finished with error code",
              "Terminating thread with return code", "Could not open encoder before EOF",
              "Nothing was written into output file", "Error opening output file",
              "Error while opening encoder", "Could not write header", "Conversion failed")
_CONTEXT = re.compile(r"^(\[[^\]]* @ 0x[0-9a-f]+\] ?)+")


def telling_line(lines: Sequence[str]) -> str:
    """The line of ffmpeg's stderr that states the cause: the last one that is not part of the
    aftermath, without the `[component @ 0x...]` prefixes."""
    lines = [line.strip() for line in lines if line.strip()]
    causes = [line for line in lines if not any(a in line for a in AFTERMATH)]
    line = (causes or lines or ["no error message"])[-1]
    return _CONTEXT.sub("", line)


def run(args: Sequence[str], path: str | Path | None = None, cwd: Path | None = None) -> str:
    """Run a binary to completion (in the folder `cwd`, where given) and return its stdout as
    text.

    A non-zero exit raises MediaError naming `path` with the last line ffmpeg wrote to stderr,
    which is where it states the cause.
    """
    done = _complete(args, path, cwd)
    if done.returncode != 0:
        reason = telling_line(done.stderr.splitlines())
        raise MediaError(f"{Path(args[0]).name} failed: {reason}", path)
    return done.stdout


def run_watched(args: Sequence[str], path: str | Path, on_line: Callable[[str], None]) -> str:
    """`run`, with each line of stdout handed to `on_line` as it is written (how far a trial
    encode of some seconds has come)."""
    lines = []
    with Process(args, path, stdout=True) as proc:
        for raw in proc.stdout:
            line = raw.decode("utf-8", "replace")
            lines.append(line)
            on_line(line)
        proc.finish(f"{Path(args[0]).name} failed")
    return "".join(lines)


def run_log(args: Sequence[str], path: str | Path | None = None,
            on_line: Callable[[str], None] | None = None) -> tuple[int, str]:
    """Run a binary to completion for what it logs: (exit code, stderr as text).

    For passes whose report is the log itself (a decode check), where a damaged input may make
    ffmpeg exit non-zero and the log still says what is wrong. `on_line`, where given, is
    handed each line of the log as it is written (how far a pass of minutes has come).
    """
    if on_line is None:
        done = _complete(args, path)
        return done.returncode, done.stderr
    lines = []
    with Process(args, path, read_log=True) as proc:
        for line in proc.log_lines():
            lines.append(line)
            on_line(line)
        return proc.wait(), "".join(lines)


def _complete(args: Sequence[str], path: str | Path | None, cwd: Path | None = None
              ) -> subprocess.CompletedProcess[str]:
    """`args` run to completion, stdout and stderr as text; MediaError when it cannot start."""
    try:
        return subprocess.run(list(args), capture_output=True, text=True, errors="replace",
                              stdin=subprocess.DEVNULL, check=False, cwd=cwd,
                              **_spawn_options())
    except OSError as e:
        raise MediaError(f"cannot start {Path(args[0]).name}: {e}", path) from e


@functools.lru_cache(maxsize=8)
def encoders(exe: str) -> frozenset[str]:
    """The encoder names this ffmpeg build lists (listed is not the same as usable)."""
    return frozenset(remembered(exe, "encoders", lambda: _codec_names(exe, "-encoders")))


@functools.lru_cache(maxsize=8)
def decoders(exe: str) -> frozenset[str]:
    """The decoder names this ffmpeg build lists."""
    return frozenset(remembered(exe, "decoders", lambda: _codec_names(exe, "-decoders")))


@functools.lru_cache(maxsize=8)
def has_filter(exe: str, name: str) -> bool:
    """Whether this ffmpeg build has the filter `name`."""
    def ask() -> bool:
        done = _complete([exe, "-hide_banner", "-h", f"filter={name}"], None)
        return done.returncode == 0 and f"Filter {name}" in done.stdout

    return remembered(exe, f"filter {name}", ask)


def _codec_names(exe: str, listing: str) -> list[str]:
    text = run([exe, "-hide_banner", listing])
    names = set()
    for line in text.splitlines():
        parts = line.split()
        # Rows look like " V....D libx264   description"; the legend above them has no flags.
        if len(parts) >= 2 and len(parts[0]) == 6 and parts[0][0] in "VAS" and parts[1] != "=":
            names.add(parts[1])
    return sorted(names)


@functools.lru_cache(maxsize=32)
def encoder_pix_fmts(exe: str, encoder: str) -> tuple[str, ...]:
    """The pixel formats an encoder accepts, in ffmpeg's order; empty when it does not say."""
    def ask() -> list[str]:
        text = run([exe, "-hide_banner", "-h", f"encoder={encoder}"])
        for line in text.splitlines():
            if "Supported pixel formats:" in line:
                return line.split(":", 1)[1].split()
        return []

    return tuple(remembered(exe, f"encoder {encoder}", ask))


@functools.lru_cache(maxsize=16)
def encoder_works(exe: str, encoder: str) -> bool:
    """Whether a listed encoder can actually encode here (hardware encoders need the device)."""
    try:
        run([exe, "-hide_banner", "-v", "error", "-f", "lavfi", "-i",
             "color=c=gray:s=256x256:r=25:d=0.2", "-frames:v", "2", "-c:v", encoder,
             "-f", "null", "-"])
    except MediaError:
        return False
    return True


PIPE_BYTES = 1 << 20  # Linux's default pipe-max-size, which an unprivileged process may ask for


def widen_pipe(fd: int) -> None:
    """Give a pipe 1 MiB of buffer instead of Linux's 64 KiB, where the OS allows.

    A 4K RGB frame is 25 MB: through 64 KiB the writer and ffmpeg woke each other 400 times a
    frame. Writing 48 such frames into an ffmpeg that discarded them took 2.4-2.7 s and 2.0-2.3 s
    of CPU (both processes); with 1 MiB, 0.9-1.4 s and 0.9-1.1 s (2-core development machine).
    Elsewhere the pipe keeps its size.
    """
    set_size = getattr(fcntl, "F_SETPIPE_SZ", None)  # Linux only (fcntl is None on Windows)
    if set_size is not None:
        with contextlib.suppress(OSError):  # a smaller pipe-max-size: the default stays
            fcntl.fcntl(fd, set_size, PIPE_BYTES)


def _streaming_environment() -> dict[str, str]:
    """Ours, with glibc's heap settings for frame-sized blocks (heap.py) where the user set
    none: an encoder that reads 4K frames from a pipe otherwise takes each one into fresh
    pages (48 such frames read and discarded: 54,000 page faults and 0.35 s of CPU; with them
    26,000 and 0.22 s; a whole 540p -> 4K job 2.69 -> 2.62 s, medians of five)."""
    if not sys.platform.startswith("linux"):  # glibc's variables; other libcs ignore them
        return dict(os.environ)
    return {**environment(), **os.environ}


class Process:
    """A running ffmpeg with pipes, used as a context manager.

    stderr is drained by a thread into a short ring buffer, so a chatty ffmpeg can never block on
    a full stderr pipe while we block on its stdout, and the cause is at hand when it fails.
    Leaving the block because of an exception kills the process; `finish()` waits for a clean end.
    """

    def __init__(self, args: Sequence[str], path: str | Path | None, *, stdin: bool = False,
                 stdout: bool = False, nice: int = 0, read_log: bool = False) -> None:
        """nice: how much lower the child's CPU priority is than ours (POSIX; 0 for equal).
        read_log: the caller reads stderr itself, through `log_lines()` (a pass whose report
        is its log); otherwise a thread drains it."""
        self.path = Path(path) if path is not None else None
        self._name = Path(args[0]).name
        self._tail: collections.deque[str] = collections.deque(maxlen=20)
        try:
            self._proc = subprocess.Popen(
                list(args),
                stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                stdout=subprocess.PIPE if stdout else subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                bufsize=0,
                env=_streaming_environment(),
                **_spawn_options(),
            )
        except OSError as e:
            raise MediaError(f"cannot start {self._name}: {e}", path) from e
        for pipe in (self._proc.stdin, self._proc.stdout):
            if pipe is not None:
                widen_pipe(pipe.fileno())
        if nice and hasattr(os, "setpriority"):
            with contextlib.suppress(OSError):  # a lower priority is a wish, not a need
                os.setpriority(os.PRIO_PROCESS, self._proc.pid,
                               min(19, os.getpriority(os.PRIO_PROCESS, 0) + nice))
        with _LIVE_LOCK:
            _LIVE.add(self)
        self._drain: threading.Thread | None = None
        if not read_log:
            self._drain = threading.Thread(target=self._read_stderr, daemon=True)
            self._drain.start()

    @property
    def stdin(self) -> IO[bytes]:
        if self._proc.stdin is None:
            raise ValueError("process was started without stdin")
        return self._proc.stdin

    @property
    def stdout(self) -> IO[bytes]:
        if self._proc.stdout is None:
            raise ValueError("process was started without stdout")
        return self._proc.stdout

    def _read_stderr(self) -> None:
        for _ in self.log_lines():
            pass

    def log_lines(self) -> Iterator[str]:
        """Each line of stderr as ffmpeg writes it; the last ones are kept for `error`."""
        assert self._proc.stderr is not None
        # Buffered: the raw pipe's readline reads a byte a call, and a scan logs a line a frame.
        with open(self._proc.stderr.fileno(), "rb", closefd=False) as stderr:
            for raw in stderr:
                line = raw.decode("utf-8", "replace")
                if line.strip():
                    self._tail.append(line.strip())
                yield line

    def error(self, what: str) -> MediaError:
        """A MediaError for this process with ffmpeg's last stderr line, if it wrote one."""
        if self._drain is not None:
            self._drain.join(timeout=5)
        return MediaError(f"{what}: {telling_line(self._tail)}", self.path)

    def wait(self) -> int:
        """Its exit code, once it has ended."""
        return self._proc.wait()

    def finish(self, what: str) -> None:
        """Close stdin, wait for the exit and raise MediaError(`what`) when it failed."""
        if self._proc.stdin is not None and not self._proc.stdin.closed:
            with contextlib.suppress(BrokenPipeError):
                self._proc.stdin.close()
        code = self._proc.wait()
        if code != 0:
            raise self.error(what)

    def kill(self) -> None:
        if self._proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self._proc.kill()
        self._proc.wait()

    def __enter__(self) -> Process:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is not None:
            self.kill()
        for pipe in (self._proc.stdin, self._proc.stdout):
            if pipe is not None and not pipe.closed:
                with contextlib.suppress(BrokenPipeError):
                    pipe.close()
        if self._proc.poll() is None:
            self._proc.wait()
        if self._drain is not None:
            self._drain.join(timeout=5)
        if self._proc.stderr is not None:
            self._proc.stderr.close()


@dataclass(frozen=True)
class PixFmt:
    """A pixel format as this ffmpeg describes it: components (3 for colour, 4 with alpha; 1
    and 2 for grey without and with) and the most bits any of them has."""

    components: int
    depth: int

    @property
    def alpha(self) -> bool:
        return self.components in (2, 4)


@functools.lru_cache(maxsize=8)
def pix_fmts(exe: str) -> dict[str, PixFmt]:
    """Every pixel format this ffmpeg knows (yuva420p10le -> 4 components of 10 bits)."""
    def ask() -> dict[str, list[int]]:
        formats = {}
        for line in run([exe, "-hide_banner", "-pix_fmts"]).splitlines():
            parts = line.split()
            if len(parts) == 5 and len(parts[0]) == 5 and parts[4][0].isdigit():
                formats[parts[1]] = [int(parts[2]), max(int(d) for d in parts[4].split("-"))]
        return formats

    return {name: PixFmt(*described) for name, described in
            remembered(exe, "pix_fmts", ask).items()}
