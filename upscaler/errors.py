"""The exceptions upscaler raises on purpose.

Each carries the exit code the CLI returns for it and formats itself as one line, so the CLI
never has to know which part of the pipeline failed to explain it.
"""

from __future__ import annotations

from pathlib import Path


class UpscalerError(Exception):
    """Base class: something the user can act on, shown as one line."""

    exit_code = 1

    def __init__(self, message: str, path: str | Path | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.path = Path(path) if path is not None else None

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path is not None else self.message


class UsageError(UpscalerError):
    """Wrong command-line arguments or option values."""

    exit_code = 2


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


class OutputExistsError(UpscalerError):
    """Refusing to overwrite an existing file without --overwrite."""

    exit_code = 6


class DiskFullError(MediaError):
    """Not enough free space for a job, found before it starts or when a write fails."""


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
