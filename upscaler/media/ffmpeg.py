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
import functools
import os
import shutil
import subprocess
import threading
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import IO

from upscaler.errors import MediaError

ENV_FFMPEG = "UPSCALER_FFMPEG"


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


def ffprobe_exe() -> str | None:
    """An ffprobe that matches ffmpeg_exe(), or None when there is none (the pip-only case)."""
    override = os.environ.get(ENV_FFMPEG)
    if override:
        sibling = Path(override).with_name(Path(override).name.replace("ffmpeg", "ffprobe"))
        return str(sibling) if sibling != Path(override) and sibling.is_file() else None
    return shutil.which("ffprobe")


def _last_line(stderr: str) -> str:
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    return lines[-1] if lines else "no error message"


def run(args: Sequence[str], path: str | Path | None = None) -> str:
    """Run a binary to completion and return its stdout as text.

    A non-zero exit raises MediaError naming `path` with the last line ffmpeg wrote to stderr,
    which is where it states the cause.
    """
    try:
        done = subprocess.run(list(args), capture_output=True, text=True, errors="replace",
                              stdin=subprocess.DEVNULL, check=False)
    except OSError as e:
        raise MediaError(f"cannot start {Path(args[0]).name}: {e}", path) from e
    if done.returncode != 0:
        raise MediaError(f"{Path(args[0]).name} failed: {_last_line(done.stderr)}", path)
    return done.stdout


@functools.lru_cache(maxsize=8)
def encoders(exe: str) -> frozenset[str]:
    """The encoder names this ffmpeg build lists (listed is not the same as usable)."""
    text = run([exe, "-hide_banner", "-encoders"])
    names = set()
    for line in text.splitlines():
        parts = line.split()
        # Rows look like " V....D libx264   description"; the legend above them has no flags.
        if len(parts) >= 2 and len(parts[0]) == 6 and parts[0][0] in "VAS" and parts[1] != "=":
            names.add(parts[1])
    return frozenset(names)


@functools.lru_cache(maxsize=32)
def encoder_pix_fmts(exe: str, encoder: str) -> tuple[str, ...]:
    """The pixel formats an encoder accepts, in ffmpeg's order; empty when it does not say."""
    text = run([exe, "-hide_banner", "-h", f"encoder={encoder}"])
    for line in text.splitlines():
        if "Supported pixel formats:" in line:
            return tuple(line.split(":", 1)[1].split())
    return ()


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


class Process:
    """A running ffmpeg with pipes, used as a context manager.

    stderr is drained by a thread into a short ring buffer, so a chatty ffmpeg can never block on
    a full stderr pipe while we block on its stdout, and the cause is at hand when it fails.
    Leaving the block because of an exception kills the process; `finish()` waits for a clean end.
    """

    def __init__(self, args: Sequence[str], path: str | Path, *, stdin: bool = False,
                 stdout: bool = False) -> None:
        self.path = Path(path)
        self._name = Path(args[0]).name
        self._tail: collections.deque[str] = collections.deque(maxlen=20)
        try:
            self._proc = subprocess.Popen(
                list(args),
                stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                stdout=subprocess.PIPE if stdout else subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                bufsize=0,
            )
        except OSError as e:
            raise MediaError(f"cannot start {self._name}: {e}", path) from e
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
        if self._proc.stderr is None:
            return
        for raw in self._proc.stderr:
            line = raw.decode("utf-8", "replace").strip()
            if line:
                self._tail.append(line)

    def error(self, what: str) -> MediaError:
        """A MediaError for this process with ffmpeg's last stderr line, if it wrote one."""
        self._drain.join(timeout=5)
        tail = self._tail[-1] if self._tail else "no error message"
        return MediaError(f"{what}: {tail}", self.path)

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
        self._drain.join(timeout=5)
        if self._proc.stderr is not None:
            self._proc.stderr.close()


@functools.lru_cache(maxsize=8)
def pix_fmt_depths(exe: str) -> dict[str, int]:
    """Bits per component of every pixel format this ffmpeg knows (yuv420p10le -> 10)."""
    depths = {}
    for line in run([exe, "-hide_banner", "-pix_fmts"]).splitlines():
        parts = line.split()
        if len(parts) == 5 and len(parts[0]) == 5 and parts[4][0].isdigit():
            depths[parts[1]] = max(int(d) for d in parts[4].split("-"))
    return depths
