"""The work folder of a video job: finished segments, and a manifest of how they were made.

A job stopped at any moment (Ctrl-C, SIGKILL, a full disk, a power cut) and run again with the
same command reuses the segments it finished. A segment is reused only when the manifest lists
it with the frame range the new plan gives it, its file still has the recorded size, and the
manifest's fingerprint (the source file, the transform, the encoder settings, the segment plan)
equals the new job's. Everything else in the folder is deleted and redone, never mixed in.

Why a listed segment can be trusted: it got its final name by an atomic rename only after its
encoder exited cleanly and its data was flushed to the disk, and the manifest lists it only
after that, itself written to a temporary name, flushed and renamed. A kill at any moment
leaves each segment either listed and complete or unlisted.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from upscaler.errors import MediaError
from upscaler.media.video.segments import Segment, sync_to_disk
from upscaler.names import hidden_name
from upscaler.user_cache import cache_dir

try:
    import fcntl
except ImportError:  # Windows: no lock, so two runs to one output there are the user's care
    fcntl = None  # type: ignore[assignment]

MANIFEST = "resume.json"
_LOCK = ".lock"
_VERSION = 1


def work_dir(dst: str | Path, under: str | Path | None = None) -> Path:
    """Where the segments of `dst` wait for the final mux.

    Beside the output as the hidden folder `.NAME.segments`, or with `under` (--work-dir)
    as `under/NAME-HASH.segments`, where a hash of the output's full path keeps outputs of
    the same name in different folders apart.
    """
    dst = Path(dst)
    if under is None:
        return dst.parent / hidden_name(dst.name, ".segments")
    tag = _path_tag(dst)[:8]
    return Path(under).expanduser() / hidden_name(dst.name, f"-{tag}.segments", lead="")


def _path_tag(dst: Path) -> str:
    """A hash of `dst`'s full path, which tells outputs of one name in two folders apart."""
    return hashlib.sha256(os.fsencode(dst.resolve())).hexdigest()


@dataclass(frozen=True)
class Resumed:
    """What a job found of an earlier run.

    reused: finished segments it keeps. discarded: finished segments it could not use.
    changed: what differs from the earlier run, when that was the reason.
    """

    reused: tuple[Segment, ...] = ()
    discarded: int = 0
    changed: tuple[str, ...] = ()


def _held(fd: int, taken: str, path: Path) -> int:
    """`fd` with an exclusive lock on its file; closed, and MediaError(`taken`) naming `path`,
    where another process holds it."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        os.close(fd)
        raise MediaError(taken, path) from e
    return fd


class OutputLock:
    """A lock on an output while a job makes it, whichever work folder the job uses: two runs
    with different --work-dir each hold their own folder's lock, so the second upscaled the
    whole video only to find the first's output at its join. Held on a file in the user
    cache keyed by the output's full path (this machine's runs; a cache that cannot be
    written leaves the folder's lock alone to do it)."""

    def __init__(self, dst: Path) -> None:
        self.dst = dst
        self._fd: int | None = None

    def __enter__(self) -> OutputLock:
        if fcntl is None:
            return self
        try:
            folder = cache_dir() / "locks"
            folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(folder / f"{_path_tag(self.dst)[:24]}.lock", os.O_RDWR | os.O_CREAT,
                         0o644)
        except OSError:
            return self
        self._fd = _held(fd, "another upscale is writing this output", self.dst)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing releases the lock, as a crash would
            self._fd = None


class WorkFolder:
    """A job's work folder, as a context manager that holds a lock on it.

    `fingerprint` holds what makes the segments what they are, as JSON-compatible values;
    `start` compares it with the manifest an earlier run left.
    """

    def __init__(self, path: Path, fingerprint: Mapping[str, Any]) -> None:
        self.path = path
        # Through JSON and back, so that it compares equal to what a manifest holds.
        self.fingerprint = json.loads(json.dumps(fingerprint))
        self._done: dict[str, dict[str, int]] = {}
        self._mutex = threading.Lock()
        self._lock_fd: int | None = None

    def __enter__(self) -> WorkFolder:
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path / _LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise MediaError(f"cannot make the work folder: {e.strerror}", self.path) from e
        if fcntl is None:
            os.close(fd)
        else:
            self._lock_fd = _held(fd, "another upscale is working in this folder", self.path)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing releases the lock, as a crash would
            self._lock_fd = None

    @property
    def finished_count(self) -> int:
        return len(self._done)

    def path_of(self, segment: Segment) -> Path:
        return self.path / segment.name

    def start(self, plan: Sequence[Segment], resume: bool) -> Resumed:
        """Keep the usable segments of an earlier run (none unless `resume`), delete the rest."""
        manifest = self._read()
        listed: Mapping[str, Any] = manifest.get("segments", {}) if manifest else {}
        kept: list[Segment] = []
        changed: tuple[str, ...] = ()
        if manifest and resume:
            if manifest.get("fingerprint") == self.fingerprint:
                kept = [s for s in plan if self._usable(s, listed.get(s.name))]
            else:
                changed = tuple(_differences(manifest.get("fingerprint") or {},
                                             self.fingerprint))
        # Counted as finished first, so that a job stopped during the sweep keeps them.
        self._done = {s.name: dict(listed[s.name]) for s in kept}
        keep = {s.name for s in kept} | {_LOCK, MANIFEST}
        for entry in self.path.iterdir():
            if entry.name not in keep:
                _delete(entry)
        self._write()
        return Resumed(reused=tuple(kept), discarded=len(listed) - len(kept), changed=changed)

    def finished(self, segment: Segment, path: Path) -> None:
        """Record a segment whose file is complete under its final name."""
        size = path.stat().st_size
        with self._mutex:
            self._done[segment.name] = {"start": segment.start, "count": segment.count,
                                        "size": size}
            self._write()

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)

    def _usable(self, segment: Segment, entry: Mapping[str, Any] | None) -> bool:
        if not entry or (entry.get("start"), entry.get("count")) != (segment.start,
                                                                     segment.count):
            return False
        try:
            return self.path_of(segment).stat().st_size == entry.get("size")
        except OSError:
            return False

    def _read(self) -> dict[str, Any] | None:
        try:
            data = json.loads((self.path / MANIFEST).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None  # none yet, or unreadable: nothing in the folder can be trusted
        if not isinstance(data, dict) or data.get("version") != _VERSION:
            return None
        return data

    def _write(self) -> None:
        data = {"version": _VERSION, "fingerprint": self.fingerprint,
                "segments": dict(sorted(self._done.items()))}
        tmp = self.path / f"{MANIFEST}.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
        sync_to_disk(tmp)
        os.replace(tmp, self.path / MANIFEST)
        sync_to_disk(self.path)  # the rename, and those of the segments before it


def _differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> Iterable[str]:
    """Names of the fingerprint entries that differ (tile, crf...); the source file counts
    as one."""
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if a == b:
            continue
        if isinstance(a, dict) and isinstance(b, dict) and key != "source":
            yield from _differences(a, b)
        else:
            yield key


def _delete(entry: Path) -> None:
    with contextlib.suppress(OSError):
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()

