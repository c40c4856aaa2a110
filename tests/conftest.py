import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
# An ONNX model of one nearest-neighbour 4x Resize (bench/bench_fast_path.py's instant_model,
# 184 bytes): for tests of sources, containers and timing, which need a model, not its
# quality; on ONNX Runtime a frame costs next to nothing.
INSTANT_MODEL = ["--model", str(ROOT / "tests" / "data" / "nearest4x.onnx"),
                 "--executor", "onnxruntime"]
sys.path.insert(0, str(ROOT / "samples"))

from draw import draw_cel  # noqa: E402

# Two workers on two cores each run ncnn (and torch) with a thread per core. OpenMP's threads
# spin at every barrier by default, burning the core the other worker needs: a bundled-sample
# ncnn test beside the tiling and border tests took 30.7-33.0 s, 24.0-24.9 s with threads that
# sleep instead (four runs each). Set before any test imports them (libgomp reads it once, as
# it loads); subprocesses inherit it. Results are the same to the bit.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """`-n auto`: a worker more than the cores where memory allows (6 GiB a worker). The tests
    wait a good part of their time on ffmpeg's and Python's process starts, on Ray's workers
    and on killed jobs: with a worker per core the two cores here were 1.71 busy, and the suite
    took 236-256 s against 228-236 s with three workers (same tree, same machine)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cores = cores or 1
    memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return max(cores, min(cores + 1, memory // (6 << 30)))


# The files that take longest, slowest first (measured with --durations=0), after the one that
# holds the longest single test (test_readme.py: 38 s of its 39). pytest-xdist hands whole files
# to its workers in collection order, so starting with these keeps one worker from running a
# long file alone at the end.
SLOW_FILES = ("test_readme.py", "test_ray.py", "test_memory.py", "test_dirty_regions.py",
              "test_families.py", "test_video_resume.py", "test_reuse.py",
              "test_coreml_build.py", "test_video.py", "test_video_sources.py", "test_cli.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        name = item.path.name
        return SLOW_FILES.index(name) if name in SLOW_FILES else len(SLOW_FILES)

    items.sort(key=rank)  # stable: each file keeps its own order


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Built models go to a cache private to this test session, never the user's."""
    path = tmp_path_factory.mktemp("model-cache")
    mp = pytest.MonkeyPatch()
    mp.setenv("UPSCALER_CACHE_DIR", str(path))
    yield path
    mp.undo()


class _Mounts:
    """File systems mounted under a test's tmp_path, unmounted when it ends; a test that
    cannot mount here (not root, no mount, a container that forbids it) is skipped."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.points: list[Path] = []

    def mount(self, name: str, args: list[str]) -> Path:
        if os.geteuid() != 0 or shutil.which("mount") is None:
            pytest.skip("mounting needs root")
        point = self.tmp_path / f"{name}{len(self.points)}"
        point.mkdir()
        done = subprocess.run(["mount", *args, str(point)], capture_output=True, text=True,
                              check=False)
        if done.returncode != 0:
            pytest.skip(f"cannot mount here: {done.stderr.strip()}")
        self.points.append(point)
        return point

    def unmount_all(self) -> None:
        for point in self.points:
            subprocess.run(["umount", "-l", str(point)], check=False)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    """Mounts tmpfs file systems of a given size."""
    mounts = _Mounts(tmp_path)
    yield lambda size: mounts.mount("disk", ["-t", "tmpfs", "-o", f"size={size}", "tmpfs"])
    mounts.unmount_all()


@pytest.fixture
def bind_mount(tmp_path: Path) -> Iterator[Callable[[Path], Path]]:
    """Mounts a folder again at a second path (as a share of a local folder reaches it)."""
    mounts = _Mounts(tmp_path)
    yield lambda source: mounts.mount("again", ["--bind", str(source)])
    mounts.unmount_all()


@pytest.fixture
def logged_ffmpeg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The real ffmpeg behind a script that logs each run's arguments, a line each, to the
    file returned (tmp_path / "runs"), as the job's ffmpeg (UPSCALER_FFMPEG)."""
    from upscaler.media import ffmpeg

    log = tmp_path / "runs"
    exe = tmp_path / "bin" / "ffmpeg"
    exe.parent.mkdir()
    exe.write_text(f'#!/bin/sh\necho "$*" >> "{log}"\nexec "{ffmpeg.ffmpeg_exe()}" "$@"\n')
    exe.chmod(0o755)
    monkeypatch.setenv(ffmpeg.ENV_FFMPEG, str(exe))
    return log


def run_python(script: str) -> subprocess.CompletedProcess[str]:
    """`script` run by this Python in a process of its own (what signals, imports and exits
    do to a whole process), its output as text."""
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60, check=False)


@pytest.fixture
def cel() -> np.ndarray:
    """A drawn RGB uint8 cel, 96x128."""
    return draw_cel(96, 128)


def cli_upscale(tmp_path: Path, pixels: np.ndarray, *args: str) -> np.ndarray:
    """`pixels` saved as a PNG and upscaled by the CLI with `args`: the output's pixels."""
    from PIL import Image

    from upscaler.cli import main

    src = tmp_path / "in.png"
    Image.fromarray(pixels).save(src)
    out = tmp_path / "out.png"
    assert main([str(src), "-o", str(out), "--quiet", "--overwrite", *args]) == 0
    with Image.open(out) as im:
        return np.asarray(im).copy()


def psnr(a: np.ndarray, b: np.ndarray, peak: float = 1.0) -> float:
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(peak**2 / mse)
