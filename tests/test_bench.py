"""The benchmark harness runs end to end and prints its table (figures are never asserted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


@pytest.mark.slow
def test_bench_job_prints_its_table() -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH / "bench_job.py"), "--size", "32x18", "--frames", "2",
         "--repeat", "1", "--model", "realesr-animevideov3", "--executors", "onnxruntime"],
        capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert out.startswith("machine: ")
    for row in ("onnxruntime bare", "Tencent ncnn bare", "Tencent ncnn padded",
                "Tencent ncnn padded, fresh", "upscale job", "job stages",
                "overlap share 0.0%", "peak memory", "the same model work",
                "loading and first frame counted"):
        assert row in out, out


@pytest.mark.slow
def test_bench_fast_path_prints_its_figures() -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH / "bench_fast_path.py"), "--cases", "instant-1440",
         "--rounds", "1", "--frames", "3"],
        capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    for row in ("instant-1440: 640x360 -> 2560x1440, 3 frames", "(job - model alone) / ffmpeg",
                "job stages (busy/waiting s)", "CPU-seconds: job ", "ffmpeg alone ",
                "with every core busy throughout: ", "peak memory: job "):
        assert row in out, out
