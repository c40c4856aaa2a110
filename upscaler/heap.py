"""Keep freed frame buffers in the process's heap, so the next frame reuses them.

A 4K frame is 25 MB of pixels. glibc's malloc gives every block over its mmap threshold (128
KiB at first, raised as large blocks are freed) pages of its own and returns them to the
kernel on free, so each new frame's buffers were fresh pages that the kernel zeroes on first
touch: on the 2-core development machine, 1,300 page faults and 9 ms of a 26 ms frame of the
instant model (bench/bench_fast_path.py). Raising the threshold to its largest (32 MiB on
64-bit) and the trim threshold above a frame's working set keeps those blocks in the heap.

That alone kept only the main thread's blocks: the frames are made on the model's and the
writer's threads, and glibc gives each thread a heap of its own, at most 64 MB, unmapped whole
as soon as nothing in it is in use. A 4K frame's buffers (OpenCV's three 8 MB planes of the
model's output, the 25 MB frame, the Y'CbCr planes) came in fresh pages every frame: about 500
page faults and 1.6 ms of the 25 ms the instant model and its conversion take, and in a whole
job, a ninth of the CPU time its processes used (0.65 of 5.9 s) went to clearing pages. One
heap for every thread (M_ARENA_MAX 1) keeps them too: bench_fast_path.py's 540p -> 4K job
went from 2.59 to 2.38 s (18.6 to 20.2 frames/s; medians of five runs each, interleaved).
The frames' threads allocate a few large blocks each, so they hardly wait on each other for
the heap's lock; and a process maps less (no 64 MB reservation a thread), which `ulimit -v`
users see as room.

The cost is memory that stays with the process after a job, which a command-line run does
not mind; the library leaves its own process's malloc alone: the `upscale` command calls
this, and Ray's workers and the ffmpegs on pipes start with the same settings in their
environment (`environment`). What the user set themselves (MALLOC_* variables, GLIBC_TUNABLES)
stays as they set it.
"""

from __future__ import annotations

import ctypes
import os
import sys
from dataclasses import dataclass

MMAP_THRESHOLD = 32 << 20  # glibc's largest on 64-bit (HEAP_MAX_SIZE / 2)
TRIM_THRESHOLD = 1 << 30


@dataclass(frozen=True)
class _Setting:
    param: int  # mallopt's
    variable: str  # the environment variable glibc reads at start-up
    tunable: str  # its name in GLIBC_TUNABLES
    value: int


_SETTINGS = (
    _Setting(-3, "MALLOC_MMAP_THRESHOLD_", "glibc.malloc.mmap_threshold", MMAP_THRESHOLD),
    _Setting(-1, "MALLOC_TRIM_THRESHOLD_", "glibc.malloc.trim_threshold", TRIM_THRESHOLD),
    _Setting(-8, "MALLOC_ARENA_MAX", "glibc.malloc.arena_max", 1),
)


def _users(setting: _Setting) -> bool:
    """Whether the user chose this setting in our environment (a container that caps arenas
    to save memory, say): theirs stays."""
    return (setting.variable in os.environ
            or f"{setting.tunable}=" in os.environ.get("GLIBC_TUNABLES", ""))


def keep_frame_buffers() -> bool:
    """Tune glibc's malloc as above, but for what the user set themselves; False where there is
    no glibc (macOS, Windows, musl).

    The one heap applies to threads that allocate for the first time after this call, so it
    is called before any thread of ours starts."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        # By its soname: ctypes.util.find_library runs `ldconfig -p`, a process per job.
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    # Every setting is tried, also after one that glibc refused.
    return all([_users(s) or bool(mallopt(s.param, s.value)) for s in _SETTINGS])


def environment() -> dict[str, str]:
    """The same settings as environment variables, which glibc reads as a process starts,
    before any thread: for Ray's workers, whose threads (Ray's own) run before ours does, so
    that keep_frame_buffers there is too late for a heap shared by every thread; and for the
    ffmpegs on pipes. Where a child inherits our environment, the user's own settings in it
    come on top of these."""
    return {s.variable: str(s.value) for s in _SETTINGS}
