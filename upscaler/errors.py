"""The exceptions upscaler raises on purpose.

Each carries the exit code the CLI returns for it and formats itself as one line, so the CLI
never has to know which part of the pipeline failed to explain it.
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Sequence
from pathlib import Path


class UpscalerError(Exception):
    """Base class: something the user can act on, shown as one line."""

    exit_code = 1
    # The job file and line of the job the error belongs to ("jobs.yaml:5"), shown in front.
    where: str | None = None

    def __init__(self, message: str, path: str | Path | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.path = Path(path) if path is not None else None

    def __str__(self) -> str:
        text = f"{self.path}: {self.message}" if self.path is not None else self.message
        return f"{self.where}: {text}" if self.where else text

    def located(self, path: str | Path, line: int) -> UpscalerError:
        """A copy that names the job file's line in front; type and exit code stay, so a
        missing input exits 5 from a job file as from the command line."""
        located = copy.copy(self)
        located.where = f"{path}:{line}"
        return located

    def __reduce__(self) -> tuple[type, tuple[str, Path | None]]:
        # Pickled whole (a Ray worker's error reaches the driver so): message and path.
        return type(self), (self.message, self.path)


class UsageError(UpscalerError, ValueError):
    """Wrong command-line arguments or option values.

    A ValueError too: an API caller who passed a wrong value catches it as one.
    """

    exit_code = 2


class ArgumentTypeError(UsageError, TypeError):
    """An API argument of the wrong type: a TypeError to Python, exit 2 to the CLI."""


class ConfigError(UpscalerError):
    """A YAML job file that does not validate; `line` points at the culprit."""

    exit_code = 2

    def __init__(self, message: str, path: str | Path | None = None, line: int | None = None):
        super().__init__(message, path)
        self.line = line

    def __str__(self) -> str:
        if self.path is not None and self.line is not None:
            return f"{self.path}:{self.line}: {self.message}"
        return super().__str__()


class PlanError(UpscalerError):
    """Every mistake found in a batch or a job file; the CLI shows each on its own line."""

    def __init__(self, errors: Sequence[UpscalerError]) -> None:
        super().__init__("; ".join(str(e) for e in errors))
        self.errors = list(errors)
        self.exit_code = max(e.exit_code for e in errors)


def raise_all(errors: Sequence[UpscalerError]) -> None:
    """Raise the one error, or a PlanError of several; nothing for none."""
    if len(errors) == 1:
        raise errors[0]
    if errors:
        raise PlanError(errors)


class ModelError(UpscalerError):
    """A model file that cannot be read or built (corrupt, truncated, unsupported layer)."""

    exit_code = 3


class ExecutorError(UpscalerError):
    """A runtime that is missing or cannot run the model on this machine."""

    exit_code = 4


class OutOfMemoryError(ExecutorError):
    """The executor ran out of memory for this batch or tile size; the caller may retry smaller."""


class MediaError(UpscalerError):
    """An image or video that cannot be read or written."""

    exit_code = 5


class FormatError(MediaError):
    """A picture the image format asked for cannot hold (transparency or an animation in JPEG,
    a TIFF's pages, a side over the format's limit). The picture is fine and the choice is the
    user's: exit 2, as for a bad option, where the input's problems are 5. Still a MediaError,
    so a folder job reports that picture and goes on with the rest."""

    exit_code = 2


class SourceChangedError(MediaError):
    """A video's source replaced or written over while the job ran: its segments hold the old
    file's pictures, which the new file's sound must not be joined to."""


class OutputExistsError(UpscalerError):
    """Refusing to overwrite an existing file without --overwrite."""

    exit_code = 6


class DiskFullError(MediaError):
    """Not enough free space for a job, found before it starts or when a write fails."""


class DiskFilledError(DiskFullError):
    """A job's write that failed because its disk filled: a batch starts no more jobs that
    write there (a refusal before a job starts, which costs nothing, does not stop them)."""


class ClusterError(UpscalerError):
    """A Ray cluster that cannot be reached, or work on it that failed for a reason of the
    cluster's own (a worker that died on every try, workers whose executors differ)."""


# Every exit code of `upscale`, the same from the command line, a job file and the API's
# `exit_code`; `upscale --help` and README show this table.
EXIT_CODES: tuple[tuple[int, str], ...] = (
    (0, "success, also when outputs that exist were skipped"),
    (1, "any other error (a Ray cluster that failed, say)"),
    (2, "bad arguments, options or job file; an output that is a folder, an input or another "
        "job's; video settings the encoder refuses; an image format that cannot hold the "
        "picture (transparency or an animation in JPEG, pages outside TIFF); --ray without Ray "
        "installed"),
    (3, "a model that cannot be read or built"),
    (4, "an executor that cannot run here, or is not installed (a .pth without the torch "
        "extra)"),
    (5, "an input that is missing, unreadable or damaged; an output folder that cannot be "
        "written; not enough disk space"),
    (6, "an output that appeared while its job ran, or a compare page that exists"),
    (130, "stopped by Ctrl-C (143: by SIGTERM)"),
    (141, "the program reading the output stopped reading (`upscale models | head`)"),
)


class Interrupted(KeyboardInterrupt):
    """Ctrl-C (exit 130) or SIGTERM (exit 143), with a message saying what was kept.

    A KeyboardInterrupt, so that every clean-up that runs for Ctrl-C runs for SIGTERM too, and
    so that a batch never takes it for a failed job and goes on.
    """

    def __init__(self, message: str = "interrupted", exit_code: int = 130) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code

    def __str__(self) -> str:
        return self.message


def is_out_of_memory(error: BaseException) -> bool:
    """An allocation that failed: a MemoryError, or OpenCV's failure to allocate, which
    reaches Python as a cv2.error (code StsNoMem) rather than a MemoryError. Smaller tiles
    need less of it (FrameUpscaler)."""
    if isinstance(error, MemoryError):
        return True
    cv2 = sys.modules.get("cv2")  # not loaded: none of its errors can exist
    return (cv2 is not None and isinstance(error, cv2.error)
            and getattr(error, "code", None) == cv2.Error.StsNoMem)


def one_line(error: object) -> str:
    """An error's message (a runtime's is often several lines of C++ context) as one line."""
    return " ".join(str(error).split())


def memory_message(error: BaseException, what: str = "out of memory") -> str:
    """`what`, then what an out-of-memory error says, in one line: OpenCV's reason without the
    source file and line it comes with ("Failed to allocate 4166400 bytes"), nothing for a bare
    MemoryError."""
    detail = one_line(error.err if not isinstance(error, MemoryError) and hasattr(error, "err")
                      else error)
    return f"{what}: {detail}" if detail else what


def ran_out(error: BaseException, path: str | Path | None) -> OutOfMemoryError | None:
    """`error` as our OutOfMemoryError naming `path`, where it is running out of memory rather
    than one of ours already: an allocation that failed (is_out_of_memory), or a thread that
    could not start, its stack finding no room (under `ulimit -v` every thread's stack is
    address space); else None."""
    no_thread = isinstance(error, RuntimeError) and str(error).startswith(
        "can't start new thread")
    if isinstance(error, UpscalerError) or not (no_thread or is_out_of_memory(error)):
        return None
    return OutOfMemoryError(memory_message(error), path)


def job_error(error: BaseException, path: str | Path | None) -> UpscalerError | None:
    """What ends one job of a batch, which then goes on: our own errors as they are, running
    out of memory as an OutOfMemoryError naming `path` (ran_out), an error of the operating
    system's no step foresaw (a name too long for it, a disk that fails to read) as a
    MediaError naming its file; None for anything else, which is a bug to raise."""
    if isinstance(error, UpscalerError):
        return error
    found = ran_out(error, path)
    if found is None and isinstance(error, OSError) and error.errno is not None:
        found = MediaError(error.strerror or str(error), error.filename or path)
    return found

