"""What an ffmpeg binary lists about itself, remembered on disk per binary.

A video job asks ffmpeg which pixel formats and encoders it has and what its encoder takes:
a run of the binary each (about 20 ms for the 80 MB static build imageio-ffmpeg ships), one
after another before the first frame, in every new process (a command, a Ray worker). The
answers depend only on the binary, so they are kept in the user cache under its path, size and
modification time: an ffmpeg upgraded or replaced is asked again. What a device decides
(whether a hardware encoder opens) is not kept. A cache that cannot be read or written is
passed by, never an error.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from upscaler.user_cache import FFMPEG_FACTS, cache_dir

T = TypeVar("T")
_LOCK = threading.Lock()  # a process's own threads write one at a time


def remembered(exe: str, question: str, ask: Callable[[], T],
               keep: Callable[[T], bool] = lambda _: True) -> T:
    """`ask()`'s answer for this binary, from an earlier run where one kept it; a new answer
    is kept where `keep(answer)`. The answer must survive JSON as it is (lists, not tuples or
    sets)."""
    path = _facts_file(exe)
    if path is None:
        return ask()
    facts = _read(path)
    if question in facts:
        return facts[question]  # type: ignore[no-any-return]
    answer = ask()
    if not keep(answer):
        return answer
    with _LOCK:
        facts = _read(path)  # another process may have added its own since
        facts[question] = answer
        _write(path, facts)
    return answer


def _facts_file(exe: str) -> Path | None:
    try:
        real = os.path.realpath(exe)
        stat = os.stat(real)
    except OSError:
        return None  # ffmpeg itself will say what is wrong
    key = f"{real}\0{stat.st_size}\0{stat.st_mtime_ns}".encode()
    return cache_dir() / FFMPEG_FACTS / f"{hashlib.sha256(key).hexdigest()[:24]}.json"


def _read(path: Path) -> dict[str, Any]:
    try:
        facts = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return facts if isinstance(facts, dict) else {}


def _write(path: Path, facts: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(facts), encoding="utf-8")
        tmp.replace(path)  # whole, so a reader never sees half a file
    except OSError:
        with contextlib.suppress(OSError):  # also where the folder is not one
            tmp.unlink(missing_ok=True)
