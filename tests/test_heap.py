"""heap.py: one heap for every thread in the `upscale` process, unless the user chose otherwise.

Counted from glibc itself: malloc_stats() lists each heap ("Arena N") it made.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import ROOT

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")

_RUN = """
import ctypes, sys, threading
import numpy as np
from upscaler.heap import keep_frame_buffers
assert keep_frame_buffers()
kept = []
def frame():  # a thread's first allocations, as the model's and the writer's threads make
    kept.append(np.ones((1080, 1920, 3), np.uint8))
threads = [threading.Thread(target=frame) for _ in range(4)]
for t in threads: t.start()
for t in threads: t.join()
sys.stderr.flush()
ctypes.CDLL("libc.so.6").malloc_stats()
"""


def _run(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`code` in a fresh Python, with no malloc settings but `env`'s."""
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, env={**clean, **env}, timeout=60)
    assert done.returncode == 0, done.stderr
    return done


def _heaps(**env: str) -> int:
    return sum(line.startswith("Arena ") for line in _run(_RUN, **env).stderr.splitlines())


def test_the_frames_threads_share_one_heap() -> None:
    assert _heaps() == 1


def test_a_users_own_setting_stays() -> None:
    # A container that allows a few heaps (MALLOC_ARENA_MAX is a common memory setting) keeps
    # them: threads get heaps of their own, up to its number.
    assert _heaps(MALLOC_ARENA_MAX="3") == 3
    assert _heaps(GLIBC_TUNABLES="glibc.malloc.arena_max=2") == 2


_FRAMES = """
import resource
import numpy as np
from upscaler.heap import keep_frame_buffers
assert keep_frame_buffers()
faults = []
for _ in range(6):  # 16-bit 4K frames, 50 MB: over glibc's largest mmap threshold (32 MiB)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    frame = np.ones((2160, 3840, 3), np.uint16)
    del frame
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(sum(faults[1:]))
"""


def _frame_faults(**env: str) -> int:
    return int(_run(_FRAMES, **env).stdout)


def test_frames_over_the_mmap_threshold_reuse_the_heap() -> None:
    """A 16-bit 4K frame (deep sources) is larger than any mmap threshold glibc allows, so it
    came in pages of its own, cleared by the kernel, every frame; with mmap off, the freed
    frame's memory is the next one's. Measured: no fault in the five frames after the first,
    against 1,990 with mmap (the kernel hands out huge pages where it can)."""
    assert _frame_faults() < 20
    assert _frame_faults(MALLOC_MMAP_MAX_="65536") >= 100  # the user's own setting stays
