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
together = threading.Barrier(4)
def frame():  # a thread's first allocations, as the model's and the writer's threads make
    kept.append(np.ones((1080, 1920, 3), np.uint8))
    # Every thread keeps its heap until all have allocated: glibc hands a finished thread's
    # heap to the next thread, so threads that ran one after another shared fewer heaps.
    together.wait()
threads = [threading.Thread(target=frame) for _ in range(4)]
for t in threads: t.start()
for t in threads: t.join()
sys.stderr.flush()
ctypes.CDLL("libc.so.6").malloc_stats()
"""


def _heaps(**env: str) -> int:
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    done = subprocess.run([sys.executable, "-c", _RUN], capture_output=True, text=True,
                          cwd=ROOT, env={**clean, **env}, timeout=60)
    assert done.returncode == 0, done.stderr
    return sum(line.startswith("Arena ") for line in done.stderr.splitlines())


def test_the_frames_threads_share_one_heap() -> None:
    assert _heaps() == 1


def test_a_users_own_setting_stays() -> None:
    # A container that allows a few heaps (MALLOC_ARENA_MAX is a common memory setting) keeps
    # them: threads get heaps of their own, up to its number.
    assert _heaps(MALLOC_ARENA_MAX="3") == 3
    assert _heaps(GLIBC_TUNABLES="glibc.malloc.arena_max=2") == 2
